// Package nodelifecycle owns Node health on the server side: it marks a
// node's Ready condition Unknown when gossip says the node failed or left
// (or, without gossip, when its agent stops heartbeating), taints it so
// that nothing new is scheduled there, marks the pods bound to it not
// Ready (so that the EndpointSlice controller takes them out of their
// services at once), and after PodEvictionTimeout deletes them so that
// their owners recreate them on healthy nodes.
// Plan is the pure planner; Controller is the edge that feeds it from the
// watch cache and the Membership and writes to the store.
//
// Evicted pods are deleted from the store whoever owns them: pods of a
// ReplicaSet are recreated and scheduled elsewhere, bare pods are gone (as
// with Kubernetes' node lifecycle controller). A node that comes back finds
// its pods' UIDs missing from the store and removes them as orphans (the
// agent's job, not this package's); the pods it still has, it finds marked
// Ready=False (reason NodeNotReady) and rewrites their status from what it
// observes, as it does whenever the store's status differs from its own.
//
// Pods of a StatefulSet on an unreachable node (Ready=Unknown) are the
// exception: the store has no graceful deletion, so deleting them would let
// their StatefulSet start a second pod of the same ordinal while the first
// may still run behind a network partition. They are kept, marked with
// status.reason NodeLost, until the node is confirmed gone — the operator
// deletes the Node object (flotilla delete node NAME), whereupon its pods
// are collected as orphans (Orphaned) and recreated elsewhere — or the node
// comes back and its agent reports on them again. Kubernetes reaches the
// same end through graceful deletion that only the kubelet or a deleted
// Node can complete. On a node whose agent reports Ready=False (reachable,
// so it stops a pod that leaves the store) they are evicted as any other.
package nodelifecycle

import (
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// Condition reasons written by this controller.
const (
	// ReasonNodeStatusUnknown marks Ready=Unknown set by the server, as in
	// Kubernetes.
	ReasonNodeStatusUnknown = "NodeStatusUnknown"
	// ReasonNodeStatusRecovered marks Ready=True restored by the server
	// when a node it had marked Unknown is alive again with a fresh
	// heartbeat (the agent then rewrites it with its own reason).
	ReasonNodeStatusRecovered = "NodeStatusRecovered"
	// ReasonNodeNotReady marks the Ready and ContainersReady conditions of
	// a pod set False by the server because its node is not Ready, as in
	// Kubernetes.
	ReasonNodeNotReady = "NodeNotReady"
	// ReasonNodeLost is the status.reason of a StatefulSet pod kept on an
	// unreachable node when its eviction is due (Kubernetes' reason for
	// pods of an unreachable node).
	ReasonNodeLost = "NodeLost"
)

// Taints this controller manages, with Kubernetes' keys. Both have the
// NoSchedule effect; the scheduler refuses them unless tolerated.
const (
	TaintUnreachable  = "node.kubernetes.io/unreachable"   // Ready=Unknown
	TaintNotReady     = "node.kubernetes.io/not-ready"     // Ready=False
	TaintDiskPressure = "node.kubernetes.io/disk-pressure" // DiskPressure=True (and Ready not Unknown)
)

// Defaults of Config.
const (
	DefaultPodEvictionTimeout     = 30 * time.Second
	DefaultNodeMonitorGracePeriod = 50 * time.Second
)

// Config tunes the planner. Zero values mean the defaults.
type Config struct {
	// PodEvictionTimeout is how long a node stays not Ready before its pods
	// are deleted (server flag --pod-eviction-timeout). Default 30s.
	// Shorter moves workloads sooner; longer rides out short outages (a
	// reboot) without restarting every pod elsewhere.
	PodEvictionTimeout time.Duration
	// NodeMonitorGracePeriod is how old an agent's Ready heartbeat may be
	// before a node that gossip does not vouch for is marked Unknown. The
	// agent renews it every 40s when nothing changes, so it must be
	// larger than that. Default 50s. Heartbeat times come from the agent's
	// clock: server and agents are assumed to be roughly in sync (NTP).
	NodeMonitorGracePeriod time.Duration
}

// WithDefaults returns cfg with zero fields set to their defaults.
func (cfg Config) WithDefaults() Config {
	if cfg.PodEvictionTimeout <= 0 {
		cfg.PodEvictionTimeout = DefaultPodEvictionTimeout
	}
	if cfg.NodeMonitorGracePeriod <= 0 {
		cfg.NodeMonitorGracePeriod = DefaultNodeMonitorGracePeriod
	}
	return cfg
}

// Actions is what Plan asks the controller to do for one node.
type Actions struct {
	// Ready is the Ready condition to write; nil leaves it as it is.
	Ready *corev1.NodeCondition
	// SetTaints asks to replace the node's taints with Taints (which may
	// then be empty).
	SetTaints bool
	Taints    []corev1.Taint
	// EvictionDue is true when the node has been not Ready for longer than
	// PodEvictionTimeout: every pod bound to it is to be evicted (the
	// controller lists them only then, and plans again with them).
	EvictionDue bool
	// Evict lists the pods to delete now.
	Evict []*corev1.Pod
	// Held lists the pods whose eviction is due but which are kept: pods of
	// a StatefulSet on an unreachable node (Ready=Unknown), until the node
	// is deleted or reports again.
	Held []*corev1.Pod
	// NotReady is true when the node is not Ready (Unknown or False, as
	// planned): the controller lists the pods bound to it and plans again
	// with them, to mark them not Ready (and evict them when due).
	NotReady bool
	// NotReadySince identifies the node's current not-Ready spell: when it
	// began (gossip's Since, else the Ready condition's transition time;
	// zero if neither is known). The controller keys its record of the
	// pods it marked by it. Zero while the node is Ready.
	NotReadySince time.Time
	// MarkNotReady are copies of the pods bound to the node with their
	// Ready and ContainersReady conditions set False (reason NodeNotReady),
	// and for Held pods not marked so yet status.reason NodeLost with a
	// message saying how to release them, carrying the cached
	// resourceVersion, to write with the store's status update (one copy
	// per pod).
	MarkNotReady []*corev1.Pod
	// Why says why the node is not Ready ("" when it is), for logs.
	Why string
	// RequeueAfter asks for another look at the node after this delay: when
	// its heartbeat goes stale or its eviction becomes due. Zero: only on
	// the next event.
	RequeueAfter time.Duration
}

// Plan decides the health of node from its gossip member (nil when there is
// no membership or the member is unknown to it), when its Lease expires
// (renewal + lease duration; zero without one), the pods bound to it (others are ignored), the
// UIDs of those already marked not Ready during the node's current
// not-Ready spell (marked; nil for none), the time and the configuration.
// It performs no I/O and does not modify its arguments.
//
// The node's heartbeat is its Lease while it has one: stale once expired.
// Without a Lease it is its Ready condition's heartbeat (its creation when
// it has none), stale once older than NodeMonitorGracePeriod.
//
//   - member failed or left → Ready=Unknown (reason NodeStatusUnknown) at
//     once, whatever the agent last wrote: gossip detects failures fast.
//     The not-Ready clock starts at member.Since.
//   - a stale heartbeat → Ready=Unknown too, whatever gossip says: a member
//     kept "alive" in gossip does not keep a silent node Ready.
//   - an Unknown this controller wrote is cleared (Ready=True) once the
//     heartbeat is fresh and gossip does not say the node is down.
//
// Gossip alone never evicts: anyone holding the gossip key can speak it.
// Eviction of an Unknown node needs the heartbeat through the API to be
// stale as well (a Ready=False the agent wrote itself needs nothing more).
//
// While the resulting Ready is Unknown the node carries the unreachable
// taint, while False the not-ready taint (both NoSchedule), and neither
// while True; it carries the disk-pressure taint (NoSchedule) while its
// agent reports DiskPressure=True, unless Ready is Unknown. While it is
// not Ready, every pod bound to it that has not finished and still claims
// readiness (a Ready or ContainersReady condition that is not False) is
// marked: both conditions False, reason NodeNotReady, a message naming the
// node. A pod in marked is not marked
// again in the same spell even if it shows Ready again: only its agent
// writes that, so the agent is alive and the judge of its pods (marking it
// again would start a write duel with it). Once the node has been not Ready
// for PodEvictionTimeout and its heartbeat is stale, every pod bound to it
// that has not finished is evicted — except, while the node is Unknown, the
// pods a StatefulSet controls: those are Held and marked NodeLost (see the
// package doc).
func Plan(node *corev1.Node, member *Member, leaseUntil time.Time, pods []*corev1.Pod, marked map[types.UID]bool, now time.Time, cfg Config) Actions {
	cfg = cfg.WithDefaults()
	var acts Actions
	cur := readyCondition(node)
	grace := cfg.NodeMonitorGracePeriod

	heartbeat := node.CreationTimestamp.Time
	if cur != nil && !cur.LastHeartbeatTime.IsZero() {
		heartbeat = cur.LastHeartbeatTime.Time
	}
	staleAt := heartbeat.Add(grace) // zero heartbeat: never stale
	if !leaseUntil.IsZero() {
		heartbeat, staleAt = leaseUntil, leaseUntil
	}
	fresh := heartbeat.IsZero() || now.Before(staleAt)
	ours := cur != nil && cur.Status == corev1.ConditionUnknown && cur.Reason == ReasonNodeStatusUnknown
	down := member != nil && !member.Alive

	var want *corev1.NodeCondition // nil: keep cur
	var since time.Time            // not-Ready clock start override
	switch {
	case down:
		msg := fmt.Sprintf("gossip: node %s failed; last heard at %s", node.Name, stamp(member.Since))
		if member.Left {
			msg = fmt.Sprintf("gossip: node %s left the cluster at %s", node.Name, stamp(member.Since))
		}
		want = unknown(cur, msg, now)
		since = member.Since
	case !fresh:
		msg := fmt.Sprintf("flotilla agent stopped posting node status; last heartbeat at %s", stamp(heartbeat))
		switch {
		case !leaseUntil.IsZero():
			msg = fmt.Sprintf("flotilla agent stopped renewing its lease; it expired at %s", stamp(leaseUntil))
		case cur == nil || cur.LastHeartbeatTime.IsZero():
			msg = "flotilla agent never posted node status"
		}
		want = unknown(cur, msg, now)
	case ours:
		c := *cur
		c.Status = corev1.ConditionTrue
		c.Reason = ReasonNodeStatusRecovered
		c.Message = "node is reachable again and its agent heartbeat is fresh"
		c.LastTransitionTime = metav1.NewTime(now).Rfc3339Copy()
		want = &c
	}
	if fresh && !heartbeat.IsZero() {
		acts.RequeueAfter = staleAt.Sub(now)
	}

	eff := cur
	if want != nil {
		if cur == nil || *want != *cur {
			acts.Ready = want
		}
		eff = want
	}

	taints, changed := wantTaints(node.Spec.Taints, eff, diskPressure(node))
	if changed {
		acts.SetTaints, acts.Taints = true, taints
	}

	if eff == nil || eff.Status == corev1.ConditionTrue {
		return acts
	}
	acts.NotReady, acts.Why = true, eff.Message
	if since.IsZero() {
		since = eff.LastTransitionTime.Time
	}
	acts.NotReadySince = since
	msg := fmt.Sprintf("node %s is not ready (Ready=%s)", node.Name, eff.Status)
	if eff.Message != "" {
		msg += ": " + eff.Message
	}
	for _, p := range pods {
		if p.Spec.NodeName != node.Name || finished(p) || marked[p.UID] {
			continue
		}
		if m := markNotReady(p, msg, now); m != nil {
			acts.MarkNotReady = append(acts.MarkNotReady, m)
		}
	}
	if since.IsZero() || since.After(now) {
		since = now
	}
	due := since.Add(cfg.PodEvictionTimeout)
	if now.Before(due) {
		acts.RequeueAfter = minPositive(acts.RequeueAfter, due.Sub(now))
		return acts
	}
	if fresh && eff.Status == corev1.ConditionUnknown {
		// Gossip says down, the API heartbeat says alive: no eviction
		// (RequeueAfter looks again when the heartbeat would go stale).
		// Ready=False is the agent's own word, through the API: it counts.
		return acts
	}
	acts.EvictionDue = true
	for _, p := range pods {
		switch {
		case p.Spec.NodeName != node.Name || finished(p):
		case eff.Status == corev1.ConditionUnknown && statefulSetPod(p):
			acts.Held = append(acts.Held, p)
		default:
			acts.Evict = append(acts.Evict, p)
		}
	}
	lost := fmt.Sprintf("node %s is unreachable: this StatefulSet pod is kept, and not started elsewhere, "+
		"until the node is confirmed gone (flotilla delete node %s) or its agent reports again", node.Name, node.Name)
	for _, p := range acts.Held {
		if p.Status.Reason == ReasonNodeLost && p.Status.Message == lost {
			continue
		}
		var m *corev1.Pod
		for _, q := range acts.MarkNotReady {
			if q.UID == p.UID {
				m = q
			}
		}
		if m == nil {
			m = p.DeepCopy()
			acts.MarkNotReady = append(acts.MarkNotReady, m)
		}
		m.Status.Reason, m.Status.Message = ReasonNodeLost, lost
	}
	return acts
}

// statefulSetPod reports whether a StatefulSet controls p.
func statefulSetPod(p *corev1.Pod) bool {
	ref := metav1.GetControllerOf(p)
	return ref != nil && ref.Kind == "StatefulSet" && strings.HasPrefix(ref.APIVersion, "apps/")
}

// Orphaned returns the pods bound to node, a Node that no longer exists,
// that are to be deleted (Kubernetes' pod garbage collection): those a
// controller owns (it recreates them elsewhere) and those an agent has
// reported on (status.phase set: they ran there). A bare pod bound to that
// name that no agent ever reported on is left alone: its node may be about
// to join. It performs no I/O.
func Orphaned(node string, pods []*corev1.Pod) []*corev1.Pod {
	var out []*corev1.Pod
	for _, p := range pods {
		if p.Spec.NodeName == node && (metav1.GetControllerOf(p) != nil || p.Status.Phase != "") {
			out = append(out, p)
		}
	}
	return out
}

// finished reports whether p is terminal (Succeeded or Failed).
func finished(p *corev1.Pod) bool {
	return p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed
}

// markNotReady returns a copy of p with its Ready and ContainersReady
// conditions False (reason NodeNotReady, message msg; added if missing),
// or nil when neither condition claims readiness (both False or absent:
// already so, nothing to write). A condition that changes status gets now
// as its transition time; one already False is kept as it is.
func markNotReady(p *corev1.Pod, msg string, now time.Time) *corev1.Pod {
	claims := false
	for _, c := range p.Status.Conditions {
		if (c.Type == corev1.PodReady || c.Type == corev1.ContainersReady) && c.Status != corev1.ConditionFalse {
			claims = true
		}
	}
	if !claims {
		return nil
	}
	out := p.DeepCopy()
	for _, typ := range []corev1.PodConditionType{corev1.ContainersReady, corev1.PodReady} {
		c := podCondition(&out.Status, typ)
		if c == nil {
			out.Status.Conditions = append(out.Status.Conditions, corev1.PodCondition{Type: typ})
			c = &out.Status.Conditions[len(out.Status.Conditions)-1]
		}
		if c.Status == corev1.ConditionFalse {
			continue
		}
		c.Status, c.Reason, c.Message = corev1.ConditionFalse, ReasonNodeNotReady, msg
		c.LastTransitionTime = metav1.NewTime(now).Rfc3339Copy()
	}
	return out
}

// podCondition returns st's condition of type typ, or nil.
func podCondition(st *corev1.PodStatus, typ corev1.PodConditionType) *corev1.PodCondition {
	for i := range st.Conditions {
		if st.Conditions[i].Type == typ {
			return &st.Conditions[i]
		}
	}
	return nil
}

// unknown returns the Unknown Ready condition with msg, keeping cur's
// heartbeat (the agent's) and its transition time when the status does not
// change.
func unknown(cur *corev1.NodeCondition, msg string, now time.Time) *corev1.NodeCondition {
	c := corev1.NodeCondition{Type: corev1.NodeReady}
	if cur != nil {
		c = *cur
	}
	if c.Status != corev1.ConditionUnknown {
		c.LastTransitionTime = metav1.NewTime(now).Rfc3339Copy()
	}
	c.Status = corev1.ConditionUnknown
	c.Reason = ReasonNodeStatusUnknown
	c.Message = msg
	return &c
}

// wantTaints returns taints with the managed taints matching ready and
// the disk pressure, and whether that differs from taints. Other taints
// are kept in order. As Kubernetes' taint-by-condition: disk-pressure
// while the agent reports DiskPressure=True, except while the node is
// unreachable (its report is stale then).
func wantTaints(taints []corev1.Taint, ready *corev1.NodeCondition, disk bool) ([]corev1.Taint, bool) {
	want := map[string]bool{}
	if ready != nil {
		switch ready.Status {
		case corev1.ConditionUnknown:
			want[TaintUnreachable] = true
			disk = false
		case corev1.ConditionFalse:
			want[TaintNotReady] = true
		}
	}
	if disk {
		want[TaintDiskPressure] = true
	}
	out := make([]corev1.Taint, 0, len(taints)+2)
	changed := false
	have := map[string]bool{}
	for _, t := range taints {
		managed := (t.Key == TaintUnreachable || t.Key == TaintNotReady || t.Key == TaintDiskPressure) && t.Effect == corev1.TaintEffectNoSchedule
		switch {
		case managed && want[t.Key] && !have[t.Key]:
			have[t.Key] = true
			out = append(out, t)
		case managed:
			changed = true
		default:
			out = append(out, t)
		}
	}
	for _, k := range []string{TaintUnreachable, TaintNotReady, TaintDiskPressure} {
		if want[k] && !have[k] {
			out = append(out, corev1.Taint{Key: k, Effect: corev1.TaintEffectNoSchedule})
			changed = true
		}
	}
	return out, changed
}

// diskPressure reports whether the node's agent reports DiskPressure=True.
func diskPressure(node *corev1.Node) bool {
	for _, c := range node.Status.Conditions {
		if c.Type == corev1.NodeDiskPressure {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// readyCondition returns node's Ready condition, or nil.
func readyCondition(node *corev1.Node) *corev1.NodeCondition {
	for i := range node.Status.Conditions {
		if node.Status.Conditions[i].Type == corev1.NodeReady {
			return &node.Status.Conditions[i]
		}
	}
	return nil
}

// stamp formats t for condition messages (UTC, seconds), "unknown" if zero.
func stamp(t time.Time) string {
	if t.IsZero() {
		return "unknown"
	}
	return t.UTC().Format(time.RFC3339)
}

func minPositive(a, b time.Duration) time.Duration {
	if a <= 0 || (b > 0 && b < a) {
		return b
	}
	return a
}
