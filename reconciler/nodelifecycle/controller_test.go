package nodelifecycle

import (
	"context"
	"errors"
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

// recQueue records the keys added.
type recQueue struct {
	mu   sync.Mutex
	keys []string
}

func (q *recQueue) Add(key string)                       { q.mu.Lock(); defer q.mu.Unlock(); q.keys = append(q.keys, key) }
func (q *recQueue) AddAfter(key string, _ time.Duration) { q.Add(key) }
func (q *recQueue) has(key string) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, k := range q.keys {
		if k == key {
			return true
		}
	}
	return false
}

// start builds the controller over st with the fake clock and queue q,
// and starts its cache (the test drives Reconcile by hand).
func start(t *testing.T, ctx context.Context, st store.Interface, m Membership, clk *clocktesting.FakeClock, q controller.Queue, cfg Config) (*Controller, *cache.Cache) {
	t.Helper()
	h := controllertest.New(t, "nodelifecycle", st, controllertest.Options{Clock: clk})
	d := h.Deps()
	d.Queue = q
	ctrl := New(d, m, cfg)
	h.Cache.Start(ctx)
	t.Cleanup(h.Cache.Wait)
	if !h.Cache.WaitForSync(ctx) {
		t.Fatal("cache did not sync")
	}
	return ctrl, h.Cache
}

// TestControllerEvictsOnTheInjectedClock drives the controller by hand:
// a gossip failure enqueues the node at once, one Reconcile marks it, and
// the eviction happens exactly when the fake clock reaches the timeout.
func TestControllerEvictsOnTheInjectedClock(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st := memstore.New()
	t.Cleanup(st.Close)
	clk := testkit.NewFakeClock(t0)
	for _, name := range []string{"a", "b"} {
		// The last heartbeat 20s ago: stale (50s) once the eviction timeout
		// (30s) has passed, as for a node that really died.
		hb := metav1.NewTime(t0.Add(-20 * time.Second))
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{{
			Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "AgentReady", LastHeartbeatTime: hb, LastTransitionTime: hb,
		}}}}
		n.APIVersion, n.Kind = "v1", "Node"
		mustCreate(t, st, n)
	}
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p1", Namespace: "default"},
		Spec: corev1.PodSpec{NodeName: "b", Containers: []corev1.Container{{Name: "c", Image: "x"}}}}
	p.APIVersion, p.Kind = "v1", "Pod"
	mustCreate(t, st, p)

	members := NewFakeMembership(Member{Name: "a", Alive: true}, Member{Name: "b", Alive: true})
	q := &recQueue{}
	ctrl, _ := start(t, ctx, st, members, clk, q, Config{PodEvictionTimeout: 30 * time.Second})
	defer cancel()
	go ctrl.Start(ctx)

	members.Fail("b", t0)
	testkit.EventuallyTrue(t, "node b enqueued by the membership event", 0, func() bool { return q.has("b") })
	res, err := ctrl.Reconcile(ctx, "b")
	if err != nil {
		t.Fatal(err)
	}
	if res.After != 30*time.Second {
		t.Errorf("requeue after %s, want 30s", res.After)
	}
	n := getNode(t, st, "b")
	if c := readyCondition(n); c.Status != corev1.ConditionUnknown || len(n.Spec.Taints) != 1 || n.Spec.Taints[0].Key != TaintUnreachable {
		t.Fatalf("node b: %+v taints %v", c, n.Spec.Taints)
	}
	testkit.EventuallyTrue(t, "cache sees node b marked", 0, func() bool {
		o, _ := ctrl.nodes.Get("", "b")
		return o.GetResourceVersion() == n.ResourceVersion
	})

	clk.Step(29 * time.Second)
	if res, err = ctrl.Reconcile(ctx, "b"); err != nil || res.After != time.Second {
		t.Fatalf("at +29s: %+v %v, want a requeue after 1s", res, err)
	}
	if _, err := st.Get(ctx, "pods", "default", "p1"); err != nil {
		t.Fatalf("pod evicted early: %v", err)
	}
	rev := st.Revision()
	if _, err = ctrl.Reconcile(ctx, "b"); err != nil || st.Revision() != rev {
		t.Fatalf("an unchanged plan wrote: %v, revision %d → %d", err, rev, st.Revision())
	}

	clk.Step(time.Second)
	if _, err = ctrl.Reconcile(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Get(ctx, "pods", "default", "p1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("pod p1 not evicted at +30s: %v", err)
	}
	if n := getNode(t, st, "a"); len(n.Spec.Taints) != 0 || readyCondition(n).Status != corev1.ConditionTrue {
		t.Errorf("node a touched: %+v", n)
	}
}

// TestControllerMarksPodsNotReady: a node going Unknown gets its pods'
// Ready=False (NodeNotReady) in the same reconcile, pods elsewhere are not
// touched, an unchanged plan writes nothing, a pod its agent marks Ready
// again is left alone for the rest of the spell, and a new spell marks it
// again.
func TestControllerMarksPodsNotReady(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st := memstore.New()
	t.Cleanup(st.Close)
	clk := testkit.NewFakeClock(t0)
	for _, name := range []string{"a", "b"} {
		// The last heartbeat 20s ago: stale (50s) once the eviction timeout
		// (30s) has passed, as for a node that really died.
		hb := metav1.NewTime(t0.Add(-20 * time.Second))
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{{
			Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "AgentReady", LastHeartbeatTime: hb, LastTransitionTime: hb,
		}}}}
		n.APIVersion, n.Kind = "v1", "Node"
		mustCreate(t, st, n)
	}
	for _, p := range []*corev1.Pod{podWith("on-a", "a", corev1.ConditionTrue, corev1.ConditionTrue), podWith("on-b", "b", corev1.ConditionTrue, corev1.ConditionTrue)} {
		p.UID = ""
		p.Spec.Containers = []corev1.Container{{Name: "c", Image: "x"}}
		p.APIVersion, p.Kind = "v1", "Pod"
		mustCreate(t, st, p)
	}
	onA := getPod(t, st, "on-a")

	members := NewFakeMembership(Member{Name: "a", Alive: true}, Member{Name: "b", Alive: true})
	ctrl, _ := start(t, ctx, st, members, clk, &recQueue{}, Config{PodEvictionTimeout: time.Hour})
	defer cancel()
	cached := func(inf *cache.Informer, o schema.Object) {
		t.Helper()
		testkit.EventuallyTrue(t, "cache sees "+o.GetName(), 0, func() bool {
			c, ok := inf.Get(o.GetNamespace(), o.GetName())
			return ok && c.GetResourceVersion() == o.GetResourceVersion()
		})
	}
	reconcile := func(name string) {
		t.Helper()
		if _, err := ctrl.Reconcile(ctx, name); err != nil {
			t.Fatal(err)
		}
	}
	condition := func(p *corev1.Pod, typ corev1.PodConditionType) corev1.PodCondition {
		if c := podCondition(&p.Status, typ); c != nil {
			return *c
		}
		return corev1.PodCondition{}
	}

	reconcile("a")
	reconcile("b")
	if c := condition(getPod(t, st, "on-b"), corev1.PodReady); c.Status != corev1.ConditionTrue {
		t.Fatal("pod on a Ready node marked")
	}

	members.Fail("b", t0)
	reconcile("b")
	p := getPod(t, st, "on-b")
	for _, typ := range []corev1.PodConditionType{corev1.PodReady, corev1.ContainersReady} {
		if c := condition(p, typ); c.Status != corev1.ConditionFalse || c.Reason != ReasonNodeNotReady || !strings.Contains(c.Message, "node b") {
			t.Errorf("pod on-b %s = %+v, want False/%s naming node b", typ, c, ReasonNodeNotReady)
		}
	}
	if got := getPod(t, st, "on-a"); got.ResourceVersion != onA.ResourceVersion {
		t.Errorf("pod on the healthy node a rewritten: %+v", got.Status.Conditions)
	}
	cached(ctrl.nodes, getNode(t, st, "b"))
	cached(ctrl.pods, p)
	rev := st.Revision()
	reconcile("b")
	reconcile("a")
	if st.Revision() != rev {
		t.Fatalf("an unchanged plan wrote: revision %d → %d", rev, st.Revision())
	}

	// Its agent (alive, only gossip is cut) marks the pod Ready again:
	// the agent is the judge, no duel.
	p = schema.Copy(p)
	for i := range p.Status.Conditions {
		p.Status.Conditions[i].Status, p.Status.Conditions[i].Reason = corev1.ConditionTrue, ""
	}
	out, err := st.UpdateStatus(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	cached(ctrl.pods, out)
	rev = st.Revision()
	reconcile("b")
	if st.Revision() != rev {
		t.Fatalf("pod marked again in the same spell: revision %d → %d, %+v", rev, st.Revision(), getPod(t, st, "on-b").Status.Conditions)
	}

	// Back, then failed again: a new spell marks it again.
	members.Join("b", t0)
	reconcile("b")
	if c := readyCondition(getNode(t, st, "b")); c.Status != corev1.ConditionTrue {
		t.Fatalf("node b not Ready again: %+v", c)
	}
	if c := condition(getPod(t, st, "on-b"), corev1.PodReady); c.Status != corev1.ConditionTrue {
		t.Fatalf("pod on-b changed by a Ready node: %+v", c)
	}
	cached(ctrl.nodes, getNode(t, st, "b"))
	clk.Step(10 * time.Second)
	members.Fail("b", clk.Now())
	reconcile("b")
	if c := condition(getPod(t, st, "on-b"), corev1.PodReady); c.Status != corev1.ConditionFalse || c.Reason != ReasonNodeNotReady {
		t.Errorf("pod on-b not marked in the new spell: %+v", c)
	}
}

func getPod(t *testing.T, st store.Interface, name string) *corev1.Pod {
	t.Helper()
	o, err := st.Get(context.Background(), "pods", "default", name)
	if err != nil {
		t.Fatal(err)
	}
	return o.(*corev1.Pod)
}

func mustCreate(t *testing.T, st store.Interface, obj schema.Object) {
	t.Helper()
	if _, err := st.Create(context.Background(), obj); err != nil {
		t.Fatal(err)
	}
}

func getNode(t *testing.T, st store.Interface, name string) *corev1.Node {
	t.Helper()
	o, err := st.Get(context.Background(), "nodes", "", name)
	if err != nil {
		t.Fatal(err)
	}
	return o.(*corev1.Node)
}

func TestFakeMembership(t *testing.T) {
	f := NewFakeMembership(Member{Name: "b", Alive: true}, Member{Name: "a", Alive: true})
	f.Leave("b", t0)
	ev := <-f.Events()
	if ev.Member.Name != "b" || ev.Member.Alive || !ev.Member.Left || !ev.Member.Since.Equal(t0) {
		t.Errorf("event %+v", ev)
	}
	ms := f.Members()
	if len(ms) != 2 || ms[0].Name != "a" || !ms[1].Left {
		t.Errorf("members %+v", ms)
	}
	f.Forget("b")
	f.Close()
	f.Join("c", t0) // after Close: recorded, no event, no panic
	if _, ok := <-f.Events(); ok {
		t.Error("event after Close")
	}
	if len(f.Members()) != 2 {
		t.Errorf("members %+v", f.Members())
	}
}

// TestControllerStatefulSetPodOnLostNode: a StatefulSet pod on a node that
// gossip says failed is kept past the eviction timeout, marked NodeLost;
// when the operator deletes the Node, the pod is collected (its set then
// recreates the ordinal elsewhere), while a bare pod bound to that name
// that no agent reported on is left.
func TestControllerStatefulSetPodOnLostNode(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st := memstore.New()
	t.Cleanup(st.Close)
	clk := testkit.NewFakeClock(t0)
	for _, name := range []string{"a", "b"} {
		// The last heartbeat 20s ago: stale (50s) once the eviction timeout
		// (30s) has passed, as for a node that really died.
		hb := metav1.NewTime(t0.Add(-20 * time.Second))
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{{
			Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "AgentReady", LastHeartbeatTime: hb, LastTransitionTime: hb,
		}}}}
		n.APIVersion, n.Kind = "v1", "Node"
		mustCreate(t, st, n)
	}
	newPod := func(p *corev1.Pod) {
		t.Helper()
		p.UID = ""
		p.Spec.Containers = []corev1.Container{{Name: "c", Image: "x"}}
		p.APIVersion, p.Kind = "v1", "Pod"
		mustCreate(t, st, p)
	}
	newPod(stsPod("web-1", "b"))
	newPod(podWith("bare", "b", corev1.ConditionTrue, corev1.ConditionTrue))

	members := NewFakeMembership(Member{Name: "a", Alive: true}, Member{Name: "b", Alive: true})
	q := &recQueue{}
	ctrl, _ := start(t, ctx, st, members, clk, q, Config{PodEvictionTimeout: 30 * time.Second})
	defer cancel()
	reconcile := func(name string) {
		t.Helper()
		if _, err := ctrl.Reconcile(ctx, name); err != nil {
			t.Fatal(err)
		}
	}
	synced := func() {
		t.Helper()
		testkit.EventuallyTrue(t, "cache caught up", 0, func() bool {
			for _, o := range []string{"web-1", "bare", "waiting"} {
				if p, err := st.Get(ctx, "pods", "default", o); err == nil {
					if c, ok := ctrl.pods.Get("default", o); !ok || c.GetResourceVersion() != p.GetResourceVersion() {
						return false
					}
				}
			}
			n, err := st.Get(ctx, "nodes", "", "b")
			c, ok := ctrl.nodes.Get("", "b")
			return (err != nil && !ok) || (err == nil && ok && c.GetResourceVersion() == n.GetResourceVersion())
		})
	}

	members.Fail("b", t0)
	reconcile("b")
	synced()
	clk.Step(31 * time.Second)
	reconcile("b")
	if _, err := st.Get(ctx, "pods", "default", "bare"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("bare pod not evicted when due: %v", err)
	}
	web1 := getPod(t, st, "web-1")
	if web1.Status.Reason != ReasonNodeLost || !strings.Contains(web1.Status.Message, "flotilla delete node b") {
		t.Fatalf("web-1 kept? reason %q message %q", web1.Status.Reason, web1.Status.Message)
	}
	synced()
	rev := st.Revision()
	clk.Step(time.Hour)
	reconcile("b")
	if st.Revision() != rev {
		t.Errorf("held pod rewritten: revision %d → %d", rev, st.Revision())
	}

	// The operator confirms the node gone.
	if _, err := st.Delete(ctx, "nodes", "", "b", store.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	newPod(testPod("waiting", "b", "")) // bound by hand to b, which may join again
	synced()
	reconcile("b")
	if _, err := st.Get(ctx, "pods", "default", "web-1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("web-1 not collected after its node was deleted: %v", err)
	}
	if _, err := st.Get(ctx, "pods", "default", "waiting"); err != nil {
		t.Errorf("a bare pod no agent reported on was collected: %v", err)
	}
	// A pod bound to a node that does not exist brings that node's key
	// (how orphans are found again after a restart, on resync).
	if !q.has("b") {
		t.Error("node b never enqueued")
	}
}
