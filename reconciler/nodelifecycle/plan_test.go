package nodelifecycle

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

func testNode(name string, status corev1.ConditionStatus, reason string, heartbeat, transition time.Time, taints ...corev1.Taint) *corev1.Node {
	n := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, CreationTimestamp: metav1.NewTime(t0.Add(-time.Hour))},
		Spec:       corev1.NodeSpec{Taints: taints},
		Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{{
			Type: corev1.NodeReady, Status: status, Reason: reason,
			LastHeartbeatTime: metav1.NewTime(heartbeat), LastTransitionTime: metav1.NewTime(transition),
		}}},
	}
	return n
}

func testPod(name, node string, phase corev1.PodPhase) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", UID: types.UID("uid-" + name)},
		Spec:       corev1.PodSpec{NodeName: node},
		Status:     corev1.PodStatus{Phase: phase},
	}
}

var (
	unreachable = corev1.Taint{Key: TaintUnreachable, Effect: corev1.TaintEffectNoSchedule}
	notReadyT   = corev1.Taint{Key: TaintNotReady, Effect: corev1.TaintEffectNoSchedule}
	other       = corev1.Taint{Key: "dedicated", Value: "db", Effect: corev1.TaintEffectNoSchedule}
)

func TestPlan(t *testing.T) {
	cfg := Config{} // defaults: eviction 30s, grace 50s
	healthy := func(taints ...corev1.Taint) *corev1.Node {
		return testNode("b", corev1.ConditionTrue, "AgentReady", t0.Add(-10*time.Second), t0.Add(-time.Hour), taints...)
	}
	// marked: Unknown written by us at t0-d, agent heartbeat at t0-d-5s.
	marked := func(d time.Duration, taints ...corev1.Taint) *corev1.Node {
		return testNode("b", corev1.ConditionUnknown, ReasonNodeStatusUnknown, t0.Add(-d-5*time.Second), t0.Add(-d), taints...)
	}
	failed := &Member{Name: "b", Since: t0.Add(-2 * time.Second)}
	left := &Member{Name: "b", Left: true, Since: t0.Add(-2 * time.Second)}
	alive := &Member{Name: "b", Alive: true, Since: t0.Add(-time.Minute)}
	pods := []*corev1.Pod{
		testPod("p1", "b", corev1.PodRunning), testPod("done", "b", corev1.PodSucceeded),
		testPod("elsewhere", "a", corev1.PodRunning),
	}

	cases := []struct {
		name   string
		node   *corev1.Node
		member *Member
		now    time.Time
		// want: Ready status written ("" none), message fragment, taint keys
		// after (nil: unchanged), evicted pod names, requeue.
		ready   corev1.ConditionStatus
		msg     string
		taints  []string
		evict   []string
		requeue time.Duration
	}{
		{name: "alive and fresh: nothing", node: healthy(), member: alive, now: t0},
		{name: "alive with a stale heartbeat: left to the agent", node: testNode("b", corev1.ConditionTrue, "AgentReady", t0.Add(-5*time.Minute), t0.Add(-time.Hour)), member: alive, now: t0},
		{name: "member failed: Unknown at once, tainted, eviction clock from Since",
			node: healthy(), member: failed, now: t0,
			ready: corev1.ConditionUnknown, msg: "gossip: node b failed; last heard at 2025-03-01T11:59:58Z",
			taints: []string{TaintUnreachable}, requeue: 28 * time.Second},
		{name: "member left", node: healthy(other), member: left, now: t0,
			ready: corev1.ConditionUnknown, msg: "gossip: node b left the cluster",
			taints: []string{"dedicated", TaintUnreachable}, requeue: 28 * time.Second},
		{name: "already marked, not yet due: no write, requeue for the rest",
			node: func() *corev1.Node {
				n := marked(10*time.Second, unreachable)
				n.Status.Conditions[0].Message = "gossip: node b failed; last heard at 2025-03-01T11:59:50Z"
				return n
			}(), member: &Member{Name: "b", Since: t0.Add(-10 * time.Second)}, now: t0,
			requeue: 20 * time.Second},
		{name: "due: evict bound pods that have not finished",
			node: marked(40*time.Second, unreachable), member: &Member{Name: "b", Since: t0.Add(-31 * time.Second)}, now: t0,
			ready: corev1.ConditionUnknown, msg: "failed", evict: []string{"p1"}},
		{name: "agent overwrote Unknown with True while gossip says failed: Unknown again, clock not reset",
			node: healthy(unreachable), member: &Member{Name: "b", Since: t0.Add(-31 * time.Second)}, now: t0,
			ready: corev1.ConditionUnknown, msg: "failed", evict: []string{"p1"}},
		{name: "member alive again, heartbeat fresh: stale Unknown cleared, untainted",
			node: marked(20*time.Second, unreachable), member: alive, now: t0,
			ready: corev1.ConditionTrue, msg: "reachable again", taints: []string{}},
		{name: "member alive again, heartbeat stale: Unknown stays until the agent posts",
			node: marked(2*time.Minute, unreachable), member: alive, now: t0,
			evict: []string{"p1"}},
		{name: "agent wrote True itself: taint removed",
			node: healthy(unreachable, other), member: alive, now: t0, taints: []string{"dedicated"}},
		{name: "agent reports False: not-ready taint",
			node: testNode("b", corev1.ConditionFalse, "KubeletNotReady", t0, t0.Add(-time.Second)), member: alive, now: t0,
			taints: []string{TaintNotReady}, requeue: 29 * time.Second},
		{name: "no member, fresh heartbeat: requeue when it would go stale",
			node: healthy(), now: t0, requeue: 40 * time.Second},
		{name: "no member, heartbeat older than the grace period: Unknown",
			node: testNode("b", corev1.ConditionTrue, "AgentReady", t0.Add(-51*time.Second), t0.Add(-time.Hour)), now: t0,
			ready: corev1.ConditionUnknown, msg: "stopped posting node status; last heartbeat at 2025-03-01T11:59:09Z",
			taints: []string{TaintUnreachable}, requeue: 30 * time.Second},
		{name: "no member, agent posts again: cleared",
			node: func() *corev1.Node {
				n := marked(time.Minute, unreachable)
				n.Status.Conditions[0].LastHeartbeatTime = metav1.NewTime(t0.Add(-time.Second))
				return n
			}(), now: t0, ready: corev1.ConditionTrue, taints: []string{}, requeue: 49 * time.Second},
		{name: "no member, never posted within the grace period",
			node: &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "b", CreationTimestamp: metav1.NewTime(t0.Add(-time.Minute))}}, now: t0,
			ready: corev1.ConditionUnknown, msg: "never posted", taints: []string{TaintUnreachable}, requeue: 30 * time.Second},
		{name: "stray duplicate managed taints are cleaned",
			node: healthy(notReadyT, unreachable, unreachable), member: alive, now: t0, taints: []string{}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := c.node.DeepCopy()
			acts := Plan(c.node, c.member, pods, c.now, cfg)
			if c.node.String() != before.String() {
				t.Error("Plan modified its input")
			}
			switch {
			case c.ready == "" && acts.Ready != nil:
				t.Errorf("wrote Ready %+v, want no write", *acts.Ready)
			case c.ready != "" && acts.Ready == nil:
				t.Errorf("no Ready write, want %s", c.ready)
			case c.ready != "":
				if acts.Ready.Status != c.ready || !strings.Contains(acts.Ready.Message, c.msg) {
					t.Errorf("Ready %s %q, want %s containing %q", acts.Ready.Status, acts.Ready.Message, c.ready, c.msg)
				}
				if c.ready == corev1.ConditionUnknown && acts.Ready.Reason != ReasonNodeStatusUnknown {
					t.Errorf("reason %q", acts.Ready.Reason)
				}
				if old := readyCondition(c.node); old != nil && !acts.Ready.LastHeartbeatTime.Equal(&old.LastHeartbeatTime) {
					t.Errorf("heartbeat changed from %v to %v: it is the agent's", old.LastHeartbeatTime, acts.Ready.LastHeartbeatTime)
				}
			}
			if c.taints == nil && acts.SetTaints {
				t.Errorf("taints set to %v, want unchanged", taintKeys(acts.Taints))
			}
			if c.taints != nil {
				var got []string
				for _, tt := range acts.Taints {
					got = append(got, tt.Key)
				}
				if !acts.SetTaints || strings.Join(got, ",") != strings.Join(c.taints, ",") {
					t.Errorf("taints set=%v %v, want %v", acts.SetTaints, got, c.taints)
				}
			}
			var ev []string
			for _, p := range acts.Evict {
				ev = append(ev, p.Name)
			}
			if strings.Join(ev, ",") != strings.Join(c.evict, ",") {
				t.Errorf("evict %v, want %v", ev, c.evict)
			}
			if acts.RequeueAfter != c.requeue {
				t.Errorf("requeue after %s, want %s", acts.RequeueAfter, c.requeue)
			}
		})
	}
}

// TestPlanTimeline walks one failure through time with an injected clock:
// Unknown at once, eviction exactly at Since+timeout, not a second before.
func TestPlanTimeline(t *testing.T) {
	cfg := Config{PodEvictionTimeout: 30 * time.Second}
	node := testNode("b", corev1.ConditionTrue, "AgentReady", t0, t0.Add(-time.Hour))
	pods := []*corev1.Pod{testPod("p1", "b", corev1.PodRunning)}
	m := &Member{Name: "b", Since: t0.Add(time.Second)}

	now := t0.Add(3 * time.Second) // gossip noticed 2s after the last contact
	acts := Plan(node, m, pods, now, cfg)
	if acts.Ready == nil || acts.Ready.Status != corev1.ConditionUnknown || len(acts.Evict) != 0 {
		t.Fatalf("at +3s: %+v", acts)
	}
	node.Status.Conditions[0] = *acts.Ready // as the controller writes it
	node.Spec.Taints = acts.Taints
	if acts.RequeueAfter != 28*time.Second {
		t.Fatalf("requeue %s, want 28s", acts.RequeueAfter)
	}
	now = now.Add(acts.RequeueAfter - time.Second)
	if acts := Plan(node, m, pods, now, cfg); acts.Ready != nil || acts.SetTaints || len(acts.Evict) != 0 || acts.RequeueAfter != time.Second {
		t.Fatalf("a second early: %+v", acts)
	}
	now = now.Add(time.Second)
	if acts := Plan(node, m, pods, now, cfg); !acts.EvictionDue || len(acts.Evict) != 1 || acts.Ready != nil {
		t.Fatalf("when due: %+v", acts)
	}
}

func TestConfigDefaults(t *testing.T) {
	c := Config{}.WithDefaults()
	if c.PodEvictionTimeout != 30*time.Second || c.NodeMonitorGracePeriod != 50*time.Second {
		t.Errorf("defaults %+v", c)
	}
}
