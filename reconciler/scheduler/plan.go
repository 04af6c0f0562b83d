// Package scheduler binds unscheduled pods to nodes. Its core, Schedule, is
// a pure planner over snapshots (pending pods, nodes, pods already bound,
// persistent storage → bindings, volume node selections and reasons for
// the pods that fit nowhere) with incremental accounting; Controller is
// the thin edge that feeds it from the watch cache and writes
// spec.nodeName, claims' selected nodes and PodScheduled conditions to the
// store.
package scheduler

import (
	"fmt"
	"runtime/debug"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
)

// Binding is one decision: put Pod on NodeName.
type Binding struct {
	Pod      *corev1.Pod
	NodeName string
}

// Failure is a pod that fits on no node, with the Kubernetes-style reason,
// e.g. "0/3 nodes are available: 1 node(s) didn't match Pod's node
// affinity/selector, 2 Insufficient cpu."
type Failure struct {
	Pod     *corev1.Pod
	Message string
}

// Plan is the outcome of one scheduling pass.
type Plan struct {
	Bindings []Binding
	Failures []Failure
	// Selections are pods that wait for their volumes on a chosen node.
	Selections []VolumeSelection
	// Broken are pods whose placement panicked (a bug meeting an object
	// nobody foresaw): they are left out, and the pass goes on with the
	// others.
	Broken []Broken
}

// Broken is a pod the planner could not place because it panicked.
type Broken struct {
	Pod   *corev1.Pod
	Panic string
	Stack []byte
}

// Filter reasons, as Kubernetes words them.
const (
	ReasonNotReady          = "node(s) were not ready"
	ReasonNodeUnschedulable = "node(s) were unschedulable"
	ReasonSelector          = "node(s) didn't match Pod's node affinity/selector"
	ReasonCPU               = "Insufficient cpu"
	ReasonMemory            = "Insufficient memory"
	ReasonPods              = "Too many pods"
)

// Scoring defaults for pods that request nothing, as kube-scheduler's
// "non-zero" requests: they still spread by load.
const (
	defaultScoreMilliCPU = 100
	defaultScoreMemory   = 200 << 20
)

// Schedule places each pending pod (in order) on a Ready, schedulable node
// whose labels match the pod's nodeSelector, whose NoSchedule/NoExecute
// taints the pod tolerates, and whose allocatable cpu,
// memory and pods are not exceeded by the requests of the pods already bound
// plus those placed earlier in this pass. Among feasible nodes it prefers the
// one with the fewest pods of the same controller owner (replicas spread
// across nodes by default), and among those the least requested. Like kube-scheduler, on large clusters it stops looking
// after finding enough feasible nodes (adaptive percentage, at least 100),
// starting each pod where the previous one stopped, so that a pass is
// O(pods × sample) and not O(pods × nodes).
//
// It performs no I/O and does not modify its arguments; bound pods whose
// phase is Succeeded or Failed do not count. Pods with
// persistentVolumeClaim volumes are placed by ScheduleWithStorage; here
// they fit nowhere (their claims are unknown).
func Schedule(pending []*corev1.Pod, nodes []*corev1.Node, bound []*corev1.Pod) Plan {
	return ScheduleWithStorage(pending, nodes, bound, nil)
}

// ScheduleWithStorage is Schedule for pods that may use persistent
// volumes, with volume topology as Kubernetes' volume binding does it:
//
//   - a claim that does not exist, is bound to a volume that does not
//     exist, or is unbound with a class that binds at once (Immediate, no
//     class, an unknown class): the pod fits nowhere, and says which claim;
//   - a claim bound to a volume with node affinity: only matching nodes
//     (ReasonVolumeNodeAffinity);
//   - a claim asking for neither ReadWriteMany nor ReadOnlyMany in use by
//     a pod (bound, or placed earlier in the pass) on a node: only that
//     node (ReasonVolumeInUse); ReadWriteOncePod in use at all: nowhere;
//   - an unbound claim of a WaitForFirstConsumer class: any node where
//     the local provisioner can create its volume, or where an existing
//     volume that satisfies it is reachable (ReasonNoVolumes); a node
//     already selected for it is preferred. Such a pod is not bound but
//     returned as a VolumeSelection.
func ScheduleWithStorage(pending []*corev1.Pod, nodes []*corev1.Node, bound []*corev1.Pod, st *Storage) Plan {
	s := newSnapshot(nodes, bound)
	s.vol = newVolState(st)
	for _, p := range bound {
		if i, ok := s.index[p.Spec.NodeName]; ok && p.Status.Phase != corev1.PodSucceeded && p.Status.Phase != corev1.PodFailed {
			s.vol.used(p, i)
		}
	}
	var plan Plan
	for _, p := range pending {
		if p.Spec.NodeName != "" {
			continue
		}
		node, pv, msg, broken := s.safePlace(p)
		switch {
		case broken != nil:
			plan.Broken = append(plan.Broken, *broken)
		case node < 0:
			plan.Failures = append(plan.Failures, Failure{Pod: p, Message: msg})
		case pv != nil && len(pv.waiting) > 0:
			sel := VolumeSelection{Pod: p, NodeName: s.nodes[node].name}
			for _, w := range pv.waiting {
				sel.Claims = append(sel.Claims, w.claim)
			}
			plan.Selections = append(plan.Selections, sel)
		default:
			plan.Bindings = append(plan.Bindings, Binding{Pod: p, NodeName: s.nodes[node].name})
		}
	}
	return plan
}

type nodeState struct {
	// Hot fields first: the filter and score loop reads only these.
	usable    bool  // Ready and not unschedulable
	allocCPU  int64 // milli
	allocMem  int64 // bytes
	allocPods int64
	reqCPU    int64
	reqMem    int64
	scoreCPU  int64 // with non-zero defaults
	scoreMem  int64
	pods      int64
	invCPU    float64 // 100/allocCPU, 0 when none
	invMem    float64

	name   string
	labels map[string]string
	taints []corev1.Taint // NoSchedule and NoExecute only
	reason string         // why not usable
}

type snapshot struct {
	nodes  []nodeState
	index  map[string]int        // node name → index
	owners map[types.UID][]int32 // owner → pods of it per node index
	next   int                   // rotating start index
	find   int                   // feasible nodes to find per pod
	vol    *volState
}

func newSnapshot(nodes []*corev1.Node, bound []*corev1.Pod) *snapshot {
	idx := make(map[string]int, len(nodes))
	s := &snapshot{nodes: make([]nodeState, 0, len(nodes)), index: idx, owners: map[types.UID][]int32{}, vol: newVolState(nil)}
	for _, n := range nodes {
		ns := nodeState{
			name:      n.Name,
			labels:    n.Labels,
			allocCPU:  n.Status.Allocatable.Cpu().MilliValue(),
			allocMem:  n.Status.Allocatable.Memory().Value(),
			allocPods: n.Status.Allocatable.Pods().Value(),
		}
		if ns.allocCPU > 0 {
			ns.invCPU = 100 / float64(ns.allocCPU)
		}
		if ns.allocMem > 0 {
			ns.invMem = 100 / float64(ns.allocMem)
		}
		for _, t := range n.Spec.Taints {
			if t.Effect == corev1.TaintEffectNoSchedule || t.Effect == corev1.TaintEffectNoExecute {
				ns.taints = append(ns.taints, t)
			}
		}
		switch {
		case n.Spec.Unschedulable:
			ns.reason = ReasonNodeUnschedulable
		case !NodeReady(n):
			ns.reason = ReasonNotReady
		default:
			ns.usable = true
		}
		idx[n.Name] = len(s.nodes)
		s.nodes = append(s.nodes, ns)
	}
	for _, p := range bound {
		i, ok := idx[p.Spec.NodeName]
		if !ok || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		s.add(i, p, requestsOf(p))
	}
	s.find = numFeasibleToFind(len(s.nodes))
	return s
}

// numFeasibleToFind follows kube-scheduler's adaptive percentageOfNodesToScore.
func numFeasibleToFind(n int) int {
	if n < 100 {
		return n
	}
	pct := 50 - n/125
	if pct < 5 {
		pct = 5
	}
	k := n * pct / 100
	if k < 100 {
		k = 100
	}
	return k
}

type request struct {
	cpu, mem           int64
	scoreCPU, scoreMem int64
}

// requestsOf is the pod's effective request: the sum over containers, or the
// largest init container if that is more, plus overhead.
func requestsOf(p *corev1.Pod) request {
	var r request
	for i := range p.Spec.Containers {
		rq := p.Spec.Containers[i].Resources.Requests
		r.cpu += rq.Cpu().MilliValue()
		r.mem += rq.Memory().Value()
	}
	for i := range p.Spec.InitContainers {
		rq := p.Spec.InitContainers[i].Resources.Requests
		r.cpu = max(r.cpu, rq.Cpu().MilliValue())
		r.mem = max(r.mem, rq.Memory().Value())
	}
	if p.Spec.Overhead != nil {
		r.cpu += p.Spec.Overhead.Cpu().MilliValue()
		r.mem += p.Spec.Overhead.Memory().Value()
	}
	r.scoreCPU, r.scoreMem = r.cpu, r.mem
	if r.scoreCPU == 0 {
		r.scoreCPU = defaultScoreMilliCPU
	}
	if r.scoreMem == 0 {
		r.scoreMem = defaultScoreMemory
	}
	return r
}

func ownerUID(p *corev1.Pod) types.UID {
	for i := range p.OwnerReferences {
		if c := p.OwnerReferences[i].Controller; c != nil && *c {
			return p.OwnerReferences[i].UID
		}
	}
	return ""
}

func (s *snapshot) add(i int, p *corev1.Pod, r request) {
	n := &s.nodes[i]
	n.reqCPU += r.cpu
	n.reqMem += r.mem
	n.scoreCPU += r.scoreCPU
	n.scoreMem += r.scoreMem
	n.pods++
	if uid := ownerUID(p); uid != "" {
		s.ownerCounts(uid)[i]++
	}
}

func (s *snapshot) ownerCounts(uid types.UID) []int32 {
	c, ok := s.owners[uid]
	if !ok {
		c = make([]int32, len(s.nodes))
		s.owners[uid] = c
	}
	return c
}

func matchesSelector(sel, labels map[string]string) bool {
	for k, v := range sel {
		if lv, ok := labels[k]; !ok || lv != v {
			return false
		}
	}
	return true
}

// fits reports whether node n passes the filters for p; it never allocates.
func (n *nodeState) fits(p *corev1.Pod, r request) bool {
	return n.usable &&
		n.pods+1 <= n.allocPods &&
		n.reqCPU+r.cpu <= n.allocCPU &&
		n.reqMem+r.mem <= n.allocMem &&
		(len(p.Spec.NodeSelector) == 0 || matchesSelector(p.Spec.NodeSelector, n.labels)) &&
		(len(n.taints) == 0 || untolerated(p, n.taints) == nil)
}

// tolerates is Kubernetes' toleration rule: an empty effect matches every
// effect, an empty key with Exists matches every key, Exists ignores the
// value and Equal (the default) compares it.
func tolerates(tol *corev1.Toleration, t *corev1.Taint) bool {
	if tol.Effect != "" && tol.Effect != t.Effect {
		return false
	}
	if tol.Key != "" && tol.Key != t.Key {
		return false
	}
	switch tol.Operator {
	case corev1.TolerationOpExists:
		return true
	case "", corev1.TolerationOpEqual:
		return tol.Key != "" && tol.Value == t.Value
	}
	return false
}

// untolerated returns the first of taints that p does not tolerate.
func untolerated(p *corev1.Pod, taints []corev1.Taint) *corev1.Taint {
	for i := range taints {
		ok := false
		for j := range p.Spec.Tolerations {
			if tolerates(&p.Spec.Tolerations[j], &taints[i]) {
				ok = true
				break
			}
		}
		if !ok {
			return &taints[i]
		}
	}
	return nil
}

// score ranks a feasible node: spread first, then least requested. Every
// pod of the same controller owner already on the node costs spreadWeight,
// more than the whole least-requested range (0..200, cpu and memory), so a
// node with fewer replicas of the owner always wins and load only breaks
// ties.
func (n *nodeState) score(r request, sameOwner int32) float64 {
	freeCPU := n.allocCPU - n.scoreCPU - r.scoreCPU
	freeMem := n.allocMem - n.scoreMem - r.scoreMem
	var sc float64
	if freeCPU > 0 {
		sc += float64(freeCPU) * n.invCPU
	}
	if freeMem > 0 {
		sc += float64(freeMem) * n.invMem
	}
	return sc - float64(sameOwner)*spreadWeight
}

// spreadWeight is the score cost of one pod of the same owner on a node.
const spreadWeight = 1000

// place chooses a node for p and accounts for it; -1 and the reason when
// none fits. pv is what p's claims ask (nil when nothing).
func (s *snapshot) place(p *corev1.Pod) (node int, pv *podVolumes, reason string) {
	n := len(s.nodes)
	if n == 0 {
		return -1, nil, "0/0 nodes are available: no nodes registered."
	}
	pv, fail := s.vol.prepare(p)
	if fail != "" {
		return -1, nil, fmt.Sprintf("0/%d nodes are available: %s.", n, fail)
	}
	pin := -1
	if pv != nil && pv.pin != "" {
		if i, ok := s.index[pv.pin]; ok {
			pin = i
		}
	}
	r := requestsOf(p)
	var counts []int32
	if uid := ownerUID(p); uid != "" {
		counts = s.ownerCounts(uid)
	}
	best, bestScore, found := -1, 0.0, 0
	start := s.next
	visited := 0
	for ; visited < n && found < s.find; visited++ {
		i := start + visited
		if i >= n {
			i -= n
		}
		ns := &s.nodes[i]
		if !ns.fits(p, r) || pv != nil && s.vol.volumeReason(ns, i, pv) != "" {
			continue
		}
		found++
		var same int32
		if counts != nil {
			same = counts[i]
		}
		sc := ns.score(r, same)
		if i == pin {
			sc += pinWeight
		}
		if best < 0 || sc > bestScore {
			best, bestScore = i, sc
		}
	}
	s.next = (start + visited) % n
	if pin >= 0 && best != pin && s.nodes[pin].fits(p, r) && s.vol.volumeReason(&s.nodes[pin], pin, pv) == "" {
		best = pin // the selected node, even when the sample missed it
	}
	if best < 0 {
		return -1, nil, s.explain(p, r, pv)
	}
	s.add(best, p, r)
	s.vol.placed(p, best, &s.nodes[best], pv)
	return best, pv, ""
}

// safePlace is place under recover: one pod the planner chokes on does
// not stop the pass for the others.
func (s *snapshot) safePlace(p *corev1.Pod) (node int, pv *podVolumes, reason string, broken *Broken) {
	defer func() {
		if r := recover(); r != nil {
			node, pv, reason = -1, nil, ""
			broken = &Broken{Pod: p, Panic: fmt.Sprint(r), Stack: debug.Stack()}
		}
	}()
	node, pv, reason = s.place(p)
	return node, pv, reason, nil
}

// pinWeight outweighs every other score: a node already selected for a
// pod's waiting claims wins whenever it fits.
const pinWeight = 1e9

// explain builds the Unschedulable message: every node's reasons, counted.
func (s *snapshot) explain(p *corev1.Pod, r request, pv *podVolumes) string {
	counts := map[string]int{}
	for i := range s.nodes {
		n := &s.nodes[i]
		if !n.usable {
			counts[n.reason]++
			continue
		}
		if len(p.Spec.NodeSelector) > 0 && !matchesSelector(p.Spec.NodeSelector, n.labels) {
			counts[ReasonSelector]++
			continue
		}
		if t := untolerated(p, n.taints); t != nil {
			counts[fmt.Sprintf("node(s) had untolerated taint {%s: %s}", t.Key, t.Value)]++
			continue
		}
		if pv != nil {
			if why := s.vol.volumeReason(n, i, pv); why != "" {
				counts[why]++
				continue
			}
		}
		if n.pods+1 > n.allocPods {
			counts[ReasonPods]++
		}
		if n.reqCPU+r.cpu > n.allocCPU {
			counts[ReasonCPU]++
		}
		if n.reqMem+r.mem > n.allocMem {
			counts[ReasonMemory]++
		}
	}
	parts := make([]string, 0, len(counts))
	for reason, c := range counts {
		parts = append(parts, fmt.Sprintf("%d %s", c, reason))
	}
	sort.Strings(parts)
	msg := fmt.Sprintf("0/%d nodes are available: %s.", len(s.nodes), strings.Join(parts, ", "))
	if pv != nil && pv.note != "" {
		msg += " " + pv.note + "."
	}
	return msg
}

// NodeReady reports whether the node's Ready condition is True.
func NodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
