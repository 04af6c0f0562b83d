package nodeipam

import (
	"context"
	"errors"
	"net"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/internal/testkit"
	"github.com/flotilla-dev/flotilla/reconciler/controller"
	"github.com/flotilla-dev/flotilla/reconciler/controller/controllertest"
)

func node(name, cidr string) *corev1.Node {
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.NodeSpec{PodCIDR: cidr}}
}

func TestNext(t *testing.T) {
	_, cluster, _ := net.ParseCIDR("10.244.0.0/16")
	for _, tc := range []struct {
		name  string
		nodes []*corev1.Node
		want  string
	}{
		{"first", nil, "10.244.0.0/24"},
		{"skips taken", []*corev1.Node{node("a", "10.244.0.0/24"), node("b", "10.244.1.0/24")}, "10.244.2.0/24"},
		{"fills a hole", []*corev1.Node{node("a", "10.244.0.0/24"), node("c", "10.244.2.0/24")}, "10.244.1.0/24"},
		{"ignores garbage and outsiders", []*corev1.Node{node("a", "nonsense"), node("b", "10.9.0.0/24")}, "10.244.0.0/24"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Next(cluster, 24, tc.nodes)
			if err != nil || got.String() != tc.want {
				t.Fatalf("Next = %v, %v; want %s", got, err, tc.want)
			}
		})
	}
	_, small, _ := net.ParseCIDR("10.1.0.0/23")
	if _, err := Next(small, 24, []*corev1.Node{node("a", "10.1.0.0/24"), node("b", "10.1.1.0/24")}); !errors.Is(err, ErrExhausted) {
		t.Errorf("full cluster CIDR: err = %v, want ErrExhausted", err)
	}
	if _, err := Next(cluster, 8, nil); err == nil {
		t.Error("a /8 pod CIDR in a /16 cluster CIDR was accepted")
	}
}

// TestReconcileAssignsOnceAndKeeps runs the controller edge on the real
// (in-memory Badger) store: nodes get distinct CIDRs, and a node keeps its
// CIDR when reconciled again.
func TestReconcileAssignsOnceAndKeeps(t *testing.T) {
	st := store.MemoryFor(t)
	ctx := context.Background()
	c := New(controllertest.New(t, "nodeipam", st, controllertest.Options{}).Deps(), Config{})
	for _, name := range []string{"n1", "n2", "n3"} {
		if _, err := st.Create(ctx, node(name, "")); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Reconcile(ctx, name); err != nil {
			t.Fatal(err)
		}
	}
	seen := map[string]string{}
	for _, name := range []string{"n1", "n2", "n3"} {
		obj, err := st.Get(ctx, "nodes", "", name)
		if err != nil {
			t.Fatal(err)
		}
		cidr := obj.(*corev1.Node).Spec.PodCIDR
		if cidr == "" || seen[cidr] != "" {
			t.Fatalf("node %s got pod CIDR %q (already %q's)", name, cidr, seen[cidr])
		}
		seen[cidr] = name
	}
	before := st.Revision()
	if _, err := c.Reconcile(ctx, "n2"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Reconcile(ctx, "gone"); err != nil {
		t.Fatalf("reconcile of a deleted node: %v", err)
	}
	if st.Revision() != before {
		t.Error("reconciling nodes that have a CIDR wrote to the store")
	}
	var _ controller.Controller = c
}

// TestGarbagePodCIDRStalls: a node whose spec.podCIDR is no IPv4 CIDR is
// stalled with the reason (its agent cannot use it, and a pod CIDR is
// never changed once set); a good one is left alone.
func TestGarbagePodCIDRStalls(t *testing.T) {
	st := store.MemoryFor(t)
	ctx := context.Background()
	h := controllertest.New(t, "nodeipam", st, controllertest.Options{})
	h.Run(t, New(h.Deps(), Config{}), controller.KeysOf("nodes"))
	for name, cidr := range map[string]string{"junk": "10.0.0.300/99", "six": "fd00::/64", "fine": "10.244.7.0/24"} {
		if _, err := st.Create(ctx, node(name, cidr)); err != nil {
			t.Fatal(err)
		}
	}
	stall := func(name string) (controller.Stall, bool) {
		o, err := st.Get(ctx, "nodes", "", name)
		if err != nil {
			t.Fatal(err)
		}
		return controller.StalledCondition(o)
	}
	for _, name := range []string{"junk", "six"} {
		testkit.EventuallyTrue(t, name+" stalled", 0, func() bool {
			c, ok := stall(name)
			return ok && c.Reason == ReasonInvalidPodCIDR
		})
	}
	h.Quiesce(t)
	if _, ok := stall("fine"); ok {
		t.Error("a node with a good pod CIDR is stalled")
	}
	if o, _ := st.Get(ctx, "nodes", "", "junk"); o.(*corev1.Node).Spec.PodCIDR != "10.0.0.300/99" {
		t.Error("a pod CIDR was changed once set")
	}
}
