package host

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/node"
)

// TestRegister: the Node is created with the node's labels and, when
// given, its pod CIDR; registering again (a restart) keeps what the
// Node has.
func TestRegister(t *testing.T) {
	ctx := context.Background()
	st := store.MemoryFor(t)
	if err := Register(ctx, st, "n1", "10.244.1.0/24"); err != nil {
		t.Fatal(err)
	}
	if err := Register(ctx, st, "n1", "10.244.9.0/24"); err != nil {
		t.Fatalf("registering again: %v", err)
	}
	if err := Register(ctx, st, "n2", ""); err != nil {
		t.Fatal(err)
	}
	get := func(name string) *corev1.Node {
		obj, err := st.Get(ctx, "nodes", "", name)
		if err != nil {
			t.Fatal(err)
		}
		return obj.(*corev1.Node)
	}
	n1 := get("n1")
	if n1.Spec.PodCIDR != "10.244.1.0/24" || len(n1.Spec.PodCIDRs) != 1 || n1.Spec.PodCIDRs[0] != "10.244.1.0/24" {
		t.Errorf("n1's pod CIDRs %q %q, want the first registration's", n1.Spec.PodCIDR, n1.Spec.PodCIDRs)
	}
	for k, v := range node.NodeLabels("n1") {
		if n1.Labels[k] != v {
			t.Errorf("n1's label %s is %q, want %q", k, n1.Labels[k], v)
		}
	}
	if cidr := get("n2").Spec.PodCIDR; cidr != "" {
		t.Errorf("n2 registered without a pod CIDR has %q", cidr)
	}
}

// TestWaitPodCIDR: an agent waits, saying so once, until the server has
// given its Node a pod CIDR; it gives up when its context ends.
func TestWaitPodCIDR(t *testing.T) {
	ctx := context.Background()
	st := store.MemoryFor(t)
	if err := Register(ctx, st, "n1", ""); err != nil {
		t.Fatal(err)
	}
	var said atomic.Int32
	say := func(string, ...any) { said.Add(1) }

	short, cancel := context.WithTimeout(ctx, 3*podCIDRPoll)
	defer cancel()
	if cidr, err := WaitPodCIDR(short, st, "n1", say); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("without a pod CIDR: %q, %v; want the context's error", cidr, err)
	}
	if n := said.Load(); n != 1 {
		t.Errorf("said %d times while waiting, want once", n)
	}

	said.Store(0)
	go func() {
		time.Sleep(podCIDRPoll / 2)
		obj, err := st.Get(ctx, "nodes", "", "n1")
		if err != nil {
			t.Error(err)
			return
		}
		n := obj.(*corev1.Node).DeepCopy()
		n.Spec.PodCIDR, n.Spec.PodCIDRs = "10.244.7.0/24", []string{"10.244.7.0/24"}
		if _, err := st.Update(ctx, n); err != nil {
			t.Error(err)
		}
	}()
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	cidr, err := WaitPodCIDR(wctx, st, "n1", say)
	if err != nil || cidr != "10.244.7.0/24" {
		t.Errorf("WaitPodCIDR = %q, %v; want the CIDR the server gave", cidr, err)
	}
	if n := said.Load(); n != 1 {
		t.Errorf("said %d times, want once", n)
	}
	said.Store(0)
	if cidr, err := WaitPodCIDR(ctx, st, "n1", say); err != nil || cidr != "10.244.7.0/24" || said.Load() != 0 {
		t.Errorf("with the CIDR given: %q, %v, said %d times; want it at once, silently", cidr, err, said.Load())
	}
}
