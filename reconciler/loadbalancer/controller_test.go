package loadbalancer

import (
	"context"
	"net/netip"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flotilla-dev/flotilla/cluster/ipalloc"
	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/internal/testkit"
	"github.com/flotilla-dev/flotilla/reconciler/controller"
	"github.com/flotilla-dev/flotilla/reconciler/controller/controllertest"
)

// run starts the controller on st as the manager does (a cache, a loop
// with two workers) and returns its harness and stop function.
func run(t *testing.T, st store.Interface, pool ipalloc.Pool) (*controllertest.Harness, func()) {
	t.Helper()
	h := controllertest.New(t, "loadbalancer", st, controllertest.Options{})
	stop := h.Run(t, New(h.Deps(), Config{Pool: pool}), controller.KeysOf("services"))
	return h, stop
}

func createLB(t *testing.T, st store.Interface, name string) {
	t.Helper()
	s := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, Ports: []corev1.ServicePort{{Port: 80}}}}
	if _, err := st.Create(context.Background(), s); err != nil {
		t.Fatal(err)
	}
}

// addrs returns each Service's published address ("" for none).
func addrs(t *testing.T, st store.Interface) map[string]string {
	t.Helper()
	objs, _, err := st.List(context.Background(), "services", store.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, o := range objs {
		s := o.(*corev1.Service)
		out[s.Name] = ""
		if in := s.Status.LoadBalancer.Ingress; len(in) > 0 {
			out[s.Name] = in[0].IP
		}
	}
	return out
}

// TestControllerOnTheStore runs the controller over the real (in-memory
// Badger) store: distinct addresses, a pending Service served by the
// address another releases, nothing written while idle or after a restart.
func TestControllerOnTheStore(t *testing.T) {
	st := store.MemoryFor(t)
	ctx := context.Background()
	pool, err := ipalloc.ParsePool("10.0.0.200-10.0.0.201")
	if err != nil {
		t.Fatal(err)
	}
	h, stop := run(t, st, pool)
	for _, n := range []string{"a", "b", "c"} {
		createLB(t, st, n)
	}
	if _, err := st.Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "plain"},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}}}); err != nil {
		t.Fatal(err)
	}
	var got map[string]string
	testkit.EventuallyTrue(t, "two addresses", 0, func() bool {
		got = addrs(t, st)
		n := 0
		for _, ip := range got {
			if ip != "" {
				n++
			}
		}
		return n == 2
	})
	var with []string
	pending := ""
	for _, n := range []string{"a", "b", "c"} {
		if got[n] == "" {
			pending = n
		} else {
			with = append(with, n)
		}
	}
	if got["plain"] != "" || len(with) != 2 || got[with[0]] == got[with[1]] || !pool.Contains(netip.MustParseAddr(got[with[0]])) {
		t.Fatalf("addresses %v: want two distinct ones from the pool, one service pending", got)
	}

	// A Service stops being a LoadBalancer: its address is released and
	// the pending one gets it.
	obj, _ := st.Get(ctx, "services", "default", with[0])
	s := obj.(*corev1.Service)
	freed := got[with[0]]
	s.Spec.Type = corev1.ServiceTypeClusterIP
	if _, err := st.Update(ctx, s); err != nil {
		t.Fatal(err)
	}
	testkit.EventuallyTrue(t, pending+" to get "+with[0]+"'s address", 0, func() bool { got = addrs(t, st); return got[with[0]] == "" && got[pending] == freed })

	// A Service is deleted: a new one gets its address.
	freed = got[with[1]]
	createLB(t, st, "d")
	if _, err := st.Delete(ctx, "services", "default", with[1], store.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	testkit.EventuallyTrue(t, "d to get "+with[1]+"'s address", 0, func() bool { return addrs(t, st)["d"] == freed })

	// Idle, then restarted: nothing is written, the addresses stay.
	h.Quiesce(t)
	rev := st.Revision()
	want := addrs(t, st)
	stop()
	h2, _ := run(t, st, pool)
	testkit.EventuallyTrue(t, "the services reconciled after the restart", 0, func() bool { return h2.Reconciles() >= 2 }) // the two LoadBalancers left
	h2.Quiesce(t)
	if st.Revision() != rev {
		t.Errorf("store revision %d → %d while idle and after a restart", rev, st.Revision())
	}
	if got := addrs(t, st); len(got) != len(want) || got[pending] != want[pending] || got["d"] != want["d"] {
		t.Errorf("after a restart %v, want %v", got, want)
	}
}

// TestNoPool: without a pool nothing is published, and an address
// published before is withdrawn.
func TestNoPool(t *testing.T) {
	st := store.MemoryFor(t)
	ctx := context.Background()
	createLB(t, st, "a")
	obj, _ := st.Get(ctx, "services", "default", "a")
	a := obj.(*corev1.Service)
	a.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "10.0.0.200"}}
	if _, err := st.UpdateStatus(ctx, a); err != nil {
		t.Fatal(err)
	}
	createLB(t, st, "b")
	c := New(controllertest.New(t, "loadbalancer", st, controllertest.Options{}).Deps(), Config{})
	for _, key := range []string{"default/a", "default/b", "default/a", "default/gone"} {
		if _, err := c.Reconcile(ctx, key); err != nil {
			t.Fatal(err)
		}
	}
	if got := addrs(t, st); got["a"] != "" || got["b"] != "" {
		t.Errorf("addresses without a pool: %v", got)
	}
	if !strings.Contains(c.pending["default/b"], "--lb-pool") {
		t.Errorf("pending reasons %v", c.pending)
	}
	rev := st.Revision()
	if _, err := c.Reconcile(ctx, "default/b"); err != nil || st.Revision() != rev {
		t.Errorf("a pending service was written again: %v", err)
	}
}

// TestLoadBalancerIPNotInPoolStalls: a Service asking for an address
// outside the pool shows why in a Stalled condition, which goes once the
// request is dropped and it gets an address.
func TestLoadBalancerIPNotInPoolStalls(t *testing.T) {
	st := store.MemoryFor(t)
	ctx := context.Background()
	pool, err := ipalloc.ParsePool("10.0.0.200-10.0.0.201")
	if err != nil {
		t.Fatal(err)
	}
	run(t, st, pool)
	s := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "odd"},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, LoadBalancerIP: "not-an-ip", Ports: []corev1.ServicePort{{Port: 80}}}}
	if _, err := st.Create(ctx, s); err != nil {
		t.Fatal(err)
	}
	stalled := func() (controller.Stall, bool) {
		o, err := st.Get(ctx, "services", "default", "odd")
		if err != nil {
			t.Fatal(err)
		}
		return controller.StalledCondition(o)
	}
	testkit.EventuallyTrue(t, "odd stalled", 0, func() bool {
		c, ok := stalled()
		return ok && c.Reason == ReasonLoadBalancerIP && strings.Contains(c.Message, "not-an-ip")
	})
	o, _ := st.Get(ctx, "services", "default", "odd")
	s = o.(*corev1.Service)
	s.Spec.LoadBalancerIP = ""
	if _, err := st.Update(ctx, s); err != nil {
		t.Fatal(err)
	}
	testkit.EventuallyTrue(t, "odd served and no longer stalled", 0, func() bool {
		_, ok := stalled()
		return !ok && addrs(t, st)["odd"] != ""
	})
}
