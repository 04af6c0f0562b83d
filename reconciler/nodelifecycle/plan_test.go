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
		{name: "alive and fresh: requeue when the heartbeat would go stale", node: healthy(), member: alive, now: t0, requeue: 40 * time.Second},
		{name: "alive in gossip, heartbeat stale: Unknown (a member kept alive does not keep a silent node Ready)",
			node: testNode("b", corev1.ConditionTrue, "AgentReady", t0.Add(-5*time.Minute), t0.Add(-time.Hour)), member: alive, now: t0,
			ready: corev1.ConditionUnknown, msg: "stopped posting node status", taints: []string{TaintUnreachable}, requeue: 30 * time.Second},
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
		{name: "due, heartbeat stale: evict bound pods that have not finished",
			node: marked(60*time.Second, unreachable), member: &Member{Name: "b", Since: t0.Add(-31 * time.Second)}, now: t0,
			ready: corev1.ConditionUnknown, msg: "failed", evict: []string{"p1"}},
		{name: "gossip says failed long enough but the heartbeat is fresh: Unknown, nothing evicted until it is stale",
			node: marked(40*time.Second, unreachable), member: &Member{Name: "b", Since: t0.Add(-31 * time.Second)}, now: t0,
			ready: corev1.ConditionUnknown, msg: "failed", requeue: 5 * time.Second},
		{name: "agent overwrote Unknown with True while gossip says failed: Unknown again, no eviction while it heartbeats",
			node: healthy(unreachable), member: &Member{Name: "b", Since: t0.Add(-31 * time.Second)}, now: t0,
			ready: corev1.ConditionUnknown, msg: "failed", requeue: 40 * time.Second},
		{name: "member alive again, heartbeat fresh: stale Unknown cleared, untainted",
			node: marked(20*time.Second, unreachable), member: alive, now: t0,
			ready: corev1.ConditionTrue, msg: "reachable again", taints: []string{}, requeue: 25 * time.Second},
		{name: "member alive again, heartbeat stale: Unknown stays until the agent posts, pods evicted",
			node: marked(2*time.Minute, unreachable), member: alive, now: t0,
			ready: corev1.ConditionUnknown, msg: "stopped posting node status", evict: []string{"p1"}},
		{name: "agent wrote True itself: taint removed",
			node: healthy(unreachable, other), member: alive, now: t0, taints: []string{"dedicated"}, requeue: 40 * time.Second},
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
			node: healthy(notReadyT, unreachable, unreachable), member: alive, now: t0, taints: []string{}, requeue: 40 * time.Second},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := c.node.DeepCopy()
			acts := Plan(c.node, c.member, time.Time{}, pods, nil, c.now, cfg)
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
// Unknown at once (gossip), and eviction once both Since+timeout has passed
// and the heartbeat through the API is stale, not a second before.
func TestPlanTimeline(t *testing.T) {
	cfg := Config{PodEvictionTimeout: 30 * time.Second}
	node := testNode("b", corev1.ConditionTrue, "AgentReady", t0.Add(-30*time.Second), t0.Add(-time.Hour))
	lease := t0.Add(50 * time.Second) // renewed at t0, for 50 s: the node died then
	pods := []*corev1.Pod{testPod("p1", "b", corev1.PodRunning)}
	m := &Member{Name: "b", Since: t0.Add(time.Second)}

	now := t0.Add(3 * time.Second) // gossip noticed 2s after the last contact
	acts := Plan(node, m, lease, pods, nil, now, cfg)
	if acts.Ready == nil || acts.Ready.Status != corev1.ConditionUnknown || len(acts.Evict) != 0 {
		t.Fatalf("at +3s: %+v", acts)
	}
	node.Status.Conditions[0] = *acts.Ready // as the controller writes it
	node.Spec.Taints = acts.Taints
	if acts.RequeueAfter != 28*time.Second {
		t.Fatalf("requeue %s, want 28s", acts.RequeueAfter)
	}
	now = now.Add(acts.RequeueAfter) // Since+30s: the lease is still fresh
	acts = Plan(node, m, lease, pods, nil, now, cfg)
	if acts.Ready != nil || acts.SetTaints || acts.EvictionDue || len(acts.Evict) != 0 || acts.RequeueAfter != 19*time.Second {
		t.Fatalf("due by gossip, lease fresh: %+v", acts)
	}
	now = now.Add(acts.RequeueAfter - time.Second)
	if acts := Plan(node, m, lease, pods, nil, now, cfg); len(acts.Evict) != 0 || acts.RequeueAfter != time.Second {
		t.Fatalf("a second before the lease is stale: %+v", acts)
	}
	now = now.Add(time.Second)
	if acts := Plan(node, m, lease, pods, nil, now, cfg); !acts.EvictionDue || len(acts.Evict) != 1 {
		t.Fatalf("lease stale: %+v", acts)
	}
}

// TestPlanGossipCannotEvict: a member that gossip says left, while the
// node renews its Lease, is Unknown (fast detection, reversible) but none
// of its pods is evicted however long it lasts; a Lease renewed again with
// gossip alive clears it.
func TestPlanGossipCannotEvict(t *testing.T) {
	node := testNode("b", corev1.ConditionTrue, "AgentReady", t0.Add(-time.Hour), t0.Add(-2*time.Hour))
	pods := []*corev1.Pod{testPod("p1", "b", corev1.PodRunning)}
	liar := &Member{Name: "b", Left: true, Since: t0.Add(-time.Hour)}
	acts := Plan(node, liar, t0.Add(15*time.Second), pods, nil, t0, Config{})
	if acts.Ready == nil || acts.Ready.Status != corev1.ConditionUnknown || acts.EvictionDue || len(acts.Evict) != 0 || len(acts.Held) != 0 {
		t.Fatalf("a lie in gossip: %+v", acts)
	}
	node.Status.Conditions[0] = *acts.Ready
	acts = Plan(node, &Member{Name: "b", Alive: true, Since: t0}, t0.Add(15*time.Second), pods, nil, t0, Config{})
	if acts.Ready == nil || acts.Ready.Status != corev1.ConditionTrue {
		t.Fatalf("gossip alive again, lease fresh: %+v", acts)
	}
}

func TestConfigDefaults(t *testing.T) {
	c := Config{}.WithDefaults()
	if c.PodEvictionTimeout != 30*time.Second || c.NodeMonitorGracePeriod != 50*time.Second {
		t.Errorf("defaults %+v", c)
	}
}

// podWith returns a Running pod on node with the given Ready and
// ContainersReady statuses ("" leaves the condition out), both changed an
// hour before t0 with the agent's reason.
func podWith(name, node string, ready, containers corev1.ConditionStatus) *corev1.Pod {
	p := testPod(name, node, corev1.PodRunning)
	old := metav1.NewTime(t0.Add(-time.Hour))
	p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: old}}
	for _, c := range []struct {
		typ corev1.PodConditionType
		st  corev1.ConditionStatus
	}{{corev1.ContainersReady, containers}, {corev1.PodReady, ready}} {
		if c.st == "" {
			continue
		}
		reason := ""
		if c.st == corev1.ConditionFalse {
			reason = "ContainersNotReady"
		}
		p.Status.Conditions = append(p.Status.Conditions, corev1.PodCondition{Type: c.typ, Status: c.st, Reason: reason, LastTransitionTime: old})
	}
	return p
}

// TestPlanMarksPodsNotReady: while a node is not Ready, the pods bound to
// it that still claim readiness get Ready=False and ContainersReady=False
// (NodeNotReady), once per spell; pods of Ready nodes, other nodes,
// finished pods and pods already not ready are left alone.
func TestPlanMarksPodsNotReady(t *testing.T) {
	T, F, U := corev1.ConditionTrue, corev1.ConditionFalse, corev1.ConditionUnknown
	healthy := testNode("b", T, "AgentReady", t0.Add(-10*time.Second), t0.Add(-time.Hour))
	stale := testNode("b", T, "AgentReady", t0.Add(-51*time.Second), t0.Add(-time.Hour))
	notReady := testNode("b", F, "AgentNotReady", t0, t0.Add(-5*time.Second))
	alive := &Member{Name: "b", Alive: true, Since: t0.Add(-time.Minute)}
	failed := &Member{Name: "b", Since: t0.Add(-2 * time.Second)}
	failedLong := &Member{Name: "b", Since: t0.Add(-31 * time.Second)}

	ready := podWith("ready", "b", T, T)
	pods := []*corev1.Pod{
		ready,
		podWith("unknown", "b", U, U),
		podWith("half", "b", F, T), // containers ready, pod not: only ContainersReady changes
		podWith("no-containers-cond", "b", T, ""), // ContainersReady added
		podWith("not-ready", "b", F, F),           // already so
		podWith("pending", "b", "", ""),           // no readiness claimed
		podWith("elsewhere", "a", T, T),           // another node
		func() *corev1.Pod { p := podWith("done", "b", T, T); p.Status.Phase = corev1.PodSucceeded; return p }(),
		func() *corev1.Pod { p := podWith("failed", "b", T, T); p.Status.Phase = corev1.PodFailed; return p }(),
	}
	claiming := []string{"ready", "unknown", "half", "no-containers-cond"}

	cases := []struct {
		name   string
		node   *corev1.Node
		member *Member
		marked map[types.UID]bool
		// want: pods marked (in order), the message fragment, the spell start.
		mark  []string
		msg   string
		since time.Time
		evict bool
	}{
		{name: "node Ready: nothing", node: healthy, member: alive},
		{name: "alive in gossip, heartbeat stale: marked", node: stale, member: alive,
			mark: claiming, msg: "stopped posting node status", since: t0},
		{name: "no member, fresh heartbeat: nothing", node: healthy},
		{name: "member failed: every pod claiming readiness", node: healthy, member: failed,
			mark: claiming, msg: "node b is not ready (Ready=Unknown): gossip: node b failed", since: failed.Since},
		{name: "heartbeat lost: marked, spell from the new transition", node: stale,
			mark: claiming, msg: "stopped posting node status", since: t0},
		{name: "agent reports False: marked", node: notReady, member: alive,
			mark: claiming, msg: "node b is not ready (Ready=False)", since: t0.Add(-5 * time.Second)},
		{name: "already marked in this spell and Ready again (its agent is alive): not marked again",
			node: healthy, member: failed, marked: map[types.UID]bool{ready.UID: true},
			mark: claiming[1:], msg: "failed", since: failed.Since},
		{name: "eviction due: marked as well (evictions may be held)", node: stale, member: failedLong,
			mark: claiming, msg: "failed", since: failedLong.Since, evict: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := make([]string, len(pods))
			for i, p := range pods {
				before[i] = p.String()
			}
			acts := Plan(c.node, c.member, time.Time{}, pods, c.marked, t0, Config{})
			for i, p := range pods {
				if p.String() != before[i] {
					t.Fatalf("Plan modified pod %s", p.Name)
				}
			}
			if acts.NotReady != (c.mark != nil) || !acts.NotReadySince.Equal(c.since) {
				t.Errorf("NotReady %v since %v, want %v since %v", acts.NotReady, acts.NotReadySince, c.mark != nil, c.since)
			}
			if acts.EvictionDue != c.evict {
				t.Errorf("eviction due %v, want %v", acts.EvictionDue, c.evict)
			}
			var got []string
			for _, p := range acts.MarkNotReady {
				got = append(got, p.Name)
			}
			if strings.Join(got, ",") != strings.Join(c.mark, ",") {
				t.Fatalf("marked %v, want %v", got, c.mark)
			}
			for _, p := range acts.MarkNotReady {
				var orig *corev1.Pod
				for _, o := range pods {
					if o.UID == p.UID {
						orig = o
					}
				}
				if p.ResourceVersion != orig.ResourceVersion || len(p.Status.ContainerStatuses) != len(orig.Status.ContainerStatuses) {
					t.Errorf("%s: not a copy of the cached pod", p.Name)
				}
				for _, typ := range []corev1.PodConditionType{corev1.ContainersReady, corev1.PodReady} {
					nc, oc := podCondition(&p.Status, typ), podCondition(&orig.Status, typ)
					switch {
					case nc == nil || nc.Status != F:
						t.Errorf("%s: %s = %+v, want False", p.Name, typ, nc)
					case oc != nil && oc.Status == F:
						if *nc != *oc {
							t.Errorf("%s: %s was False already and changed: %+v → %+v", p.Name, typ, *oc, *nc)
						}
					case nc.Reason != ReasonNodeNotReady || !strings.Contains(nc.Message, c.msg) || !nc.LastTransitionTime.Time.Equal(t0):
						t.Errorf("%s: %s = %+v, want reason %s, message with %q, transition at t0", p.Name, typ, *nc, ReasonNodeNotReady, c.msg)
					}
				}
				if sc := podCondition(&p.Status, corev1.PodScheduled); sc == nil || sc.Status != T {
					t.Errorf("%s: other conditions changed: %+v", p.Name, p.Status.Conditions)
				}
			}
			// Applying the marks makes the plan idle (an unchanged cluster
			// writes nothing).
			after := make([]*corev1.Pod, len(pods))
			copy(after, pods)
			for _, m := range acts.MarkNotReady {
				for i := range after {
					if after[i].UID == m.UID {
						after[i] = m
					}
				}
			}
			if again := Plan(c.node, c.member, time.Time{}, after, c.marked, t0.Add(time.Second), Config{}); len(again.MarkNotReady) != 0 {
				t.Errorf("marked again after the marks were written: %d pods", len(again.MarkNotReady))
			}
		})
	}
}

// stsPod is a Running, Ready pod on node controlled by a StatefulSet.
func stsPod(name, node string) *corev1.Pod {
	p := podWith(name, node, corev1.ConditionTrue, corev1.ConditionTrue)
	yes := true
	p.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "StatefulSet", Name: "web", UID: "set-uid", Controller: &yes}}
	return p
}

// TestPlanHoldsStatefulSetPods: when eviction is due on an unreachable
// node, the pods a StatefulSet controls are kept and marked NodeLost (their
// replacement would be a second pod of the same ordinal while the first may
// still run); other pods are evicted. On a node whose agent reports
// Ready=False (reachable: it stops a deleted pod) they are evicted too.
func TestPlanHoldsStatefulSetPods(t *testing.T) {
	failedLong := &Member{Name: "b", Since: t0.Add(-31 * time.Second)}
	healthy := testNode("b", corev1.ConditionTrue, "AgentReady", t0.Add(-51*time.Second), t0.Add(-time.Hour)) // and silent
	web1 := stsPod("web-1", "b")
	rsPod := podWith("rs-pod", "b", corev1.ConditionTrue, corev1.ConditionTrue)
	yes := true
	rsPod.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "x", UID: "rs-uid", Controller: &yes}}
	pods := []*corev1.Pod{web1, rsPod}

	acts := Plan(healthy, failedLong, time.Time{}, pods, nil, t0, Config{})
	if !acts.EvictionDue || len(acts.Evict) != 1 || acts.Evict[0].Name != "rs-pod" {
		t.Fatalf("evict %v, want rs-pod only", acts.Evict)
	}
	if len(acts.Held) != 1 || acts.Held[0].Name != "web-1" {
		t.Fatalf("held %v, want web-1", acts.Held)
	}
	var lost *corev1.Pod
	n := 0
	for _, p := range acts.MarkNotReady {
		if p.Name == "web-1" {
			lost = p
			n++
		}
	}
	if n != 1 {
		t.Fatalf("web-1 written %d times, want once (one status update per pod)", n)
	}
	if lost.Status.Reason != ReasonNodeLost || !strings.Contains(lost.Status.Message, "flotilla delete node b") {
		t.Errorf("web-1 reason %q message %q", lost.Status.Reason, lost.Status.Message)
	}
	if c := podCondition(&lost.Status, corev1.PodReady); c == nil || c.Status != corev1.ConditionFalse {
		t.Errorf("web-1 Ready %+v, want False", c)
	}
	if web1.Status.Reason != "" {
		t.Error("Plan modified its input")
	}

	// Written once: the next pass (marks recorded) writes nothing.
	again := Plan(healthy, failedLong, time.Time{}, []*corev1.Pod{lost, rsPod}, map[types.UID]bool{web1.UID: true, rsPod.UID: true}, t0.Add(time.Second), Config{})
	if len(again.MarkNotReady) != 0 || len(again.Held) != 1 {
		t.Errorf("second pass: marks %d held %d", len(again.MarkNotReady), len(again.Held))
	}
	// The marks of an earlier spell are not remembered (a restart): only
	// the readiness is marked again, NodeLost is already there.
	fresh := Plan(healthy, failedLong, time.Time{}, []*corev1.Pod{lost}, nil, t0.Add(time.Second), Config{})
	if len(fresh.MarkNotReady) != 0 {
		t.Errorf("NodeLost pod rewritten: %+v", fresh.MarkNotReady)
	}

	// Ready=False, reported by a reachable agent, for longer than the timeout.
	notReady := testNode("b", corev1.ConditionFalse, "AgentNotReady", t0, t0.Add(-time.Minute))
	acts = Plan(notReady, &Member{Name: "b", Alive: true, Since: t0.Add(-time.Hour)}, time.Time{}, pods, nil, t0, Config{})
	if len(acts.Evict) != 2 || len(acts.Held) != 0 {
		t.Errorf("Ready=False: evict %v held %v, want both evicted", acts.Evict, acts.Held)
	}
	// Not due yet: nothing held, nothing lost.
	acts = Plan(healthy, &Member{Name: "b", Since: t0.Add(-2 * time.Second)}, time.Time{}, pods, nil, t0, Config{})
	for _, p := range acts.MarkNotReady {
		if p.Status.Reason == ReasonNodeLost {
			t.Errorf("%s marked NodeLost before eviction is due", p.Name)
		}
	}
}

func TestOrphaned(t *testing.T) {
	owned := stsPod("web-1", "gone")
	ran := testPod("bare-ran", "gone", corev1.PodRunning)
	waiting := testPod("bare-waiting", "gone", "") // bound to a node that may be about to join
	elsewhere := stsPod("web-0", "a")
	got := Orphaned("gone", []*corev1.Pod{owned, ran, waiting, elsewhere})
	var names []string
	for _, p := range got {
		names = append(names, p.Name)
	}
	if strings.Join(names, ",") != "web-1,bare-ran" {
		t.Errorf("orphans %v, want web-1,bare-ran", names)
	}
}
