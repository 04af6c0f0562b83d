package scheduler

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/internal/testkit"
	"github.com/flotilla-dev/flotilla/reconciler/cache"
	"github.com/flotilla-dev/flotilla/reconciler/controller"
	"github.com/flotilla-dev/flotilla/reconciler/controller/controllertest"
	"github.com/flotilla-dev/flotilla/reconciler/internal/memstore"
	"github.com/flotilla-dev/flotilla/schema"
)

var t0 = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)

// byHand builds the scheduler over st with a fake clock and starts its
// cache; the test calls Reconcile itself.
func byHand(t *testing.T, st store.Interface, cfg Config) (*Controller, *clocktesting.FakeClock, *cache.Cache) {
	t.Helper()
	clk := testkit.NewFakeClock(t0)
	h := controllertest.New(t, "scheduler", st, controllertest.Options{Clock: clk})
	c := New(h.Deps(), cfg)
	ctx, cancel := context.WithCancel(context.Background())
	h.Cache.Start(ctx)
	t.Cleanup(func() { cancel(); h.Cache.Wait() })
	if !h.Cache.WaitForSync(ctx) {
		t.Fatal("cache did not sync")
	}
	c.Start(ctx)
	return c, clk, h.Cache
}

func mustCreate(t *testing.T, st store.Interface, obj schema.Object) schema.Object {
	t.Helper()
	out, err := st.Create(context.Background(), obj)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// seen waits until the cache holds n pods and the nodes in their current
// revision.
func seen(t *testing.T, st store.Interface, ca *cache.Cache) {
	t.Helper()
	testkit.Eventually(t, "the cache to catch up", 0, func() error {
		for _, res := range []string{"pods", "nodes"} {
			objs, _, err := st.List(context.Background(), res, store.ListOptions{})
			if err != nil {
				return err
			}
			inf, _ := ca.Lookup(res)
			for _, o := range objs {
				c, ok := inf.Get(o.GetNamespace(), o.GetName())
				if !ok || c.GetResourceVersion() != o.GetResourceVersion() {
					return fmt.Errorf("%s %s not seen yet", res, o.GetName())
				}
			}
		}
		return nil
	})
}

func placement(t *testing.T, st store.Interface) map[string]int {
	t.Helper()
	objs, _, err := st.List(context.Background(), "pods", store.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, o := range objs {
		out[o.(*corev1.Pod).Spec.NodeName]++
	}
	return out
}

func setReady(t *testing.T, st store.Interface, name string, ready bool) {
	t.Helper()
	o, err := st.Get(context.Background(), "nodes", "", name)
	if err != nil {
		t.Fatal(err)
	}
	n := o.(*corev1.Node)
	n.Status.Conditions[0].Status = corev1.ConditionFalse
	if ready {
		n.Status.Conditions[0].Status = corev1.ConditionTrue
	}
	if _, err := st.UpdateStatus(context.Background(), n); err != nil {
		t.Fatal(err)
	}
}

// replicas creates n pending pods of one owner.
func replicas(t *testing.T, st store.Interface, n int) {
	t.Helper()
	for i := range n {
		mustCreate(t, st, pod(fmt.Sprintf("web-%d", i), "100m", "", "rs-web"))
	}
}

// TestSettleWaitsForKnownNodes: replicas pending when the scheduler starts
// are not bound while a known node is not Ready; once it is, they spread
// over both nodes.
func TestSettleWaitsForKnownNodes(t *testing.T) {
	st := store.MemoryFor(t)
	mustCreate(t, st, node("n1", "4", "8Gi", 110))
	mustCreate(t, st, node("n2", "4", "8Gi", 110, notReady))
	replicas(t, st, 6)
	c, clk, ca := byHand(t, st, Config{})
	ctx := context.Background()

	res, err := c.Reconcile(ctx, passKey)
	if err != nil || res.Outcome != controller.OutcomeWaiting || res.After != DefaultSettle || !strings.Contains(res.Reason, "1 of 2") {
		t.Fatalf("at start: %+v %v, want waiting %s for 1 of 2 nodes", res, err, DefaultSettle)
	}
	clk.Step(4 * time.Second)
	if res, _ = c.Reconcile(ctx, passKey); res.Outcome != controller.OutcomeWaiting || res.After != 6*time.Second {
		t.Fatalf("at +4s: %+v, want waiting 6s more", res)
	}
	if got := placement(t, st); got[""] != 6 {
		t.Fatalf("bound while settling: %v", got)
	}
	setReady(t, st, "n2", true)
	seen(t, st, ca)
	if res, err = c.Reconcile(ctx, passKey); err != nil || res.Outcome != controller.OutcomeDone {
		t.Fatalf("all nodes Ready: %+v %v", res, err)
	}
	if got := placement(t, st); got["n1"] != 3 || got["n2"] != 3 {
		t.Errorf("placement %v, want 3 on each node", got)
	}
	// Settled for good: a node going NotReady later does not stop binding.
	setReady(t, st, "n2", false)
	mustCreate(t, st, pod("late", "100m", "", ""))
	seen(t, st, ca)
	if _, err = c.Reconcile(ctx, passKey); err != nil {
		t.Fatal(err)
	}
	if got := placement(t, st); got[""] != 0 {
		t.Errorf("after settling, a pod was held: %v", got)
	}
}

// TestNoSettleOnARunningCluster: a scheduler that starts on a cluster
// whose pods are bound (a new leader after its predecessor died with a
// node) binds a pod the dead node lost at once, not after the node returns
// or the settle time passes.
func TestNoSettleOnARunningCluster(t *testing.T) {
	st := store.MemoryFor(t)
	mustCreate(t, st, node("n1", "4", "8Gi", 110))
	mustCreate(t, st, node("dead", "4", "8Gi", 110, notReady))
	running := pod("running", "100m", "", "")
	running.Spec.NodeName = "n1"
	mustCreate(t, st, running)
	mustCreate(t, st, pod("lost", "100m", "", ""))
	c, _, _ := byHand(t, st, Config{Settle: 5 * time.Minute, ExpectedNodes: 2})
	if res, err := c.Reconcile(context.Background(), passKey); err != nil || res.Outcome != controller.OutcomeDone {
		t.Fatalf("at start: %+v %v, want the pod bound at once", res, err)
	}
	if got := placement(t, st); got["n1"] != 2 || got[""] != 0 {
		t.Errorf("placement %v, want both pods on n1", got)
	}
}

// TestSettleTimeOut: a known node that never becomes Ready holds binding
// only for the settle time.
func TestSettleTimeOut(t *testing.T) {
	st := memstore.New()
	t.Cleanup(st.Close)
	mustCreate(t, st, node("n1", "4", "8Gi", 110))
	mustCreate(t, st, node("dead", "4", "8Gi", 110, notReady))
	replicas(t, st, 4)
	c, clk, _ := byHand(t, st, Config{Settle: 3 * time.Second})
	ctx := context.Background()
	if res, _ := c.Reconcile(ctx, passKey); res.Outcome != controller.OutcomeWaiting || res.After != 3*time.Second {
		t.Fatalf("at start: %+v", res)
	}
	clk.Step(3 * time.Second)
	if res, err := c.Reconcile(ctx, passKey); err != nil || res.Outcome != controller.OutcomeDone {
		t.Fatalf("after the settle time: %+v %v", res, err)
	}
	if got := placement(t, st); got["n1"] != 4 {
		t.Errorf("placement %v, want all 4 on n1", got)
	}
}

// TestSettleExpectedNodes: with ExpectedNodes (lab up --nodes N), binding
// waits for that many Ready nodes even when every node known so far is
// Ready — the nodes that have not registered yet; negative Settle binds at
// once.
func TestSettleExpectedNodes(t *testing.T) {
	st := store.MemoryFor(t)
	mustCreate(t, st, node("node1", "4", "8Gi", 110))
	replicas(t, st, 6)
	c, clk, ca := byHand(t, st, Config{Settle: time.Minute, ExpectedNodes: 3})
	ctx := context.Background()
	if res, _ := c.Reconcile(ctx, passKey); res.Outcome != controller.OutcomeWaiting {
		t.Fatalf("1 of 3 expected nodes: %+v", res)
	}
	mustCreate(t, st, node("node2", "4", "8Gi", 110))
	mustCreate(t, st, node("node3", "4", "8Gi", 110))
	seen(t, st, ca)
	clk.Step(time.Second)
	if res, err := c.Reconcile(ctx, passKey); err != nil || res.Outcome != controller.OutcomeDone {
		t.Fatalf("3 of 3: %+v %v", res, err)
	}
	if got := placement(t, st); got["node1"] != 2 || got["node2"] != 2 || got["node3"] != 2 {
		t.Errorf("placement %v, want 2 on each of 3 nodes", got)
	}

	st2 := store.MemoryFor(t)
	mustCreate(t, st2, node("n1", "4", "8Gi", 110, notReady))
	mustCreate(t, st2, node("n2", "4", "8Gi", 110))
	replicas(t, st2, 2)
	c2, _, _ := byHand(t, st2, Config{Settle: -1})
	if res, err := c2.Reconcile(ctx, passKey); err != nil || res.Outcome != controller.OutcomeDone || placement(t, st2)["n2"] != 2 {
		t.Errorf("Settle < 0: %+v %v, placement %v", res, err, placement(t, st2))
	}
}

// TestBatchedBindings: bindings go to the store in transactions of
// BatchSize; a pod changed since the snapshot is skipped, not the batch;
// unschedulable pods get their condition in batches too.
func TestBatchedBindings(t *testing.T) {
	for name, open := range map[string]func(t *testing.T) store.Interface{
		"badger":   func(t *testing.T) store.Interface { return store.MemoryFor(t) },
		"memstore": func(t *testing.T) store.Interface { s := memstore.New(); t.Cleanup(s.Close); return s },
	} {
		t.Run(name, func(t *testing.T) {
			st := open(t)
			for i := range 3 {
				mustCreate(t, st, node(fmt.Sprintf("n%d", i), "4", "8Gi", 110))
			}
			replicas(t, st, 25)
			mustCreate(t, st, withSelector(pod("nowhere", "", "", ""), "disk", "ssd"))
			// An earlier pass panicked on web-3: its Stalled condition goes
			// once it is bound.
			o3, _ := st.Get(context.Background(), "pods", "default", "web-3")
			controller.SetStalled(o3, &controller.Stall{Reason: controller.ReasonReconcilePanic, Message: "boom"}, t0)
			if _, err := st.UpdateStatus(context.Background(), o3); err != nil {
				t.Fatal(err)
			}
			// A pod changes after the snapshot the pass uses, just before
			// its first batch of bindings is written: its binding
			// conflicts and is skipped. (Changed before the pass, the
			// cache could see the change in time, and nothing conflicts.)
			touch := &touchBeforeTxn{Interface: st, touch: func() {
				o, err := st.Get(context.Background(), "pods", "default", "web-7")
				if err != nil {
					t.Error(err)
					return
				}
				p := schema.Copy(o.(*corev1.Pod))
				p.Labels = map[string]string{"touched": "yes"}
				if _, err := st.Update(context.Background(), p); err != nil {
					t.Error(err)
				}
			}}
			c, _, ca := byHand(t, touch, Config{Settle: -1, BatchSize: 4})
			seen(t, st, ca)
			before := st.Revision() + 1 // the touch
			res, err := c.Reconcile(context.Background(), passKey)
			if err != nil {
				t.Fatal(err)
			}
			if res.Outcome != controller.OutcomeRequeue {
				t.Errorf("outcome %+v, want a requeue for the unschedulable pod", res)
			}
			got := placement(t, st)
			if got[""] != 2 || got["n0"]+got["n1"]+got["n2"] != 24 {
				t.Errorf("placement %v, want 24 bound and web-7 and nowhere not", got)
			}
			// 24 bindings, 1 condition, 1 Stalled cleared: 26 writes;
			// memstore and Badger both give a write its own revision.
			if writes := st.Revision() - before; writes != 26 {
				t.Errorf("%d writes, want 26", writes)
			}
			if o, _ := st.Get(context.Background(), "pods", "default", "web-3"); o.(*corev1.Pod).Spec.NodeName == "" {
				t.Error("web-3 not bound")
			} else if _, ok := controller.StalledCondition(o); ok {
				t.Error("web-3 bound but still stalled")
			}
			n, _ := st.Get(context.Background(), "pods", "default", "nowhere")
			if c := podCondition(n.(*corev1.Pod), corev1.PodScheduled); c == nil || c.Reason != ReasonUnschedulable {
				t.Errorf("nowhere: %+v", n.(*corev1.Pod).Status.Conditions)
			}
			// The next pass binds web-7 (the cache has its change by then).
			seen(t, st, ca)
			if _, err := c.Reconcile(context.Background(), passKey); err != nil {
				t.Fatal(err)
			}
			if got := placement(t, st); got[""] != 1 {
				t.Errorf("after a second pass %v, want only nowhere unbound", got)
			}
		})
	}
}

// TestHostileSchedulingInput: pods and nodes as they may be stored past
// admission never make Schedule panic; pods that cannot go anywhere are
// failures with a reason.
func TestHostileSchedulingInput(t *testing.T) {
	huge := pod("huge", "1000000000", "1000000Ti", "")
	negative := pod("negative", "-5", "-1Gi", "rs")
	noContainers := pod("empty", "", "", "")
	noContainers.Spec.Containers = nil
	badClaim := withClaims(pod("claim", "", "", ""), "")
	tolerant := pod("tolerant", "", "", "")
	tolerant.Spec.Tolerations = []corev1.Toleration{{Operator: "Sometimes", Key: ""}}
	overhead := pod("overhead", "", "", "")
	overhead.Spec.Overhead = corev1.ResourceList{}
	cycle := pod("cycle", "", "", "")
	yes := true
	cycle.OwnerReferences = []metav1.OwnerReference{{Kind: "Pod", Name: "cycle", UID: cycle.UID, Controller: &yes}, {Kind: "Pod", UID: "", Controller: &yes}}
	long := pod(strings.Repeat("p", 5000), "", "", strings.Repeat("o", 5000))
	long.Spec.NodeSelector = map[string]string{strings.Repeat("k", 5000): strings.Repeat("v", 100000)}
	pending := []*corev1.Pod{huge, negative, noContainers, badClaim, tolerant, overhead, cycle, long, pod("plain", "", "", "")}

	zero := node("zero", "0", "0", 0)
	noAlloc := node("noalloc", "1", "1Gi", 1)
	noAlloc.Status.Allocatable = nil
	noConds := node("noconds", "4", "8Gi", 110)
	noConds.Status.Conditions = nil
	tainted := node("tainted", "4", "8Gi", 110)
	tainted.Spec.Taints = []corev1.Taint{{Key: "", Effect: "Whatever"}, {Key: "x", Effect: corev1.TaintEffectNoExecute}}
	dup := node("zero", "4", "8Gi", 110)
	nodes := []*corev1.Node{zero, noAlloc, noConds, tainted, dup, node("ok", "4", "8Gi", 110)}
	bound := []*corev1.Pod{onNode(pod("ghost", "1", "1Gi", "rs"), "missing-node"), onNode(pod("neg", "-100", "", ""), "ok")}

	for _, ns := range [][]*corev1.Node{nil, nodes} {
		plan := ScheduleWithStorage(pending, ns, bound, &Storage{})
		if len(plan.Broken) != 0 {
			t.Fatalf("the planner panicked on %s: %s", plan.Broken[0].Pod.Name, plan.Broken[0].Panic)
		}
		if got := len(plan.Bindings) + len(plan.Failures) + len(plan.Selections); got != len(pending) {
			t.Errorf("%d of %d pods accounted for", got, len(pending))
		}
		for _, f := range plan.Failures {
			if f.Message == "" {
				t.Errorf("%s failed without a reason", f.Pod.Name)
			}
		}
	}
}

// touchBeforeTxn is a store whose first Txn runs touch first: a change made
// by someone else between a pass's snapshot and its first write.
type touchBeforeTxn struct {
	store.Interface
	touch func()
	once  sync.Once
}

func (s *touchBeforeTxn) Txn(ctx context.Context, fn func(store.Tx) error) (int64, error) {
	s.once.Do(s.touch)
	return s.Interface.Txn(ctx, fn)
}
