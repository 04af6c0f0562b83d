// Package statefulset is the StatefulSet controller: it keeps pods with a
// stable identity — <set>-0 … <set>-(N-1), each with its own hostname under
// the set's headless service and its own PersistentVolumeClaims
// (<template>-<set>-<ordinal>, created before the pod and kept after it) —
// creates and removes them in order (OrderedReady) or all at once
// (Parallel), rolls a new template out from the highest ordinal down
// (RollingUpdate with partition, or OnDelete), and reports status.
//
// At most one pod per ordinal ever exists: a pod is only created under a
// name that no object holds, so a pod that still exists — terminating, or
// bound to a node that is unreachable — blocks its replacement until it is
// gone (for a lost node: until the node is deleted; see nodelifecycle).
//
// Plan is the pure planner; Controller is the edge that feeds it from the
// watch cache and writes to the store.
package statefulset

import (
	"fmt"
	"sort"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flotilla-dev/flotilla/reconciler/internal/wellformed"
	"github.com/flotilla-dev/flotilla/schema"
)

// BurstReplicas caps the pods one reconcile creates (Parallel), as the
// ReplicaSet controller's burst does: a set of two billion replicas is
// made 500 pods at a time, never in one loop.
const BurstReplicas = 500

// ForeignRetry is how soon a set whose pod name is taken by a pod it does
// not control looks again (that pod's deletion may send it no event).
const ForeignRetry = 10 * time.Second

// Actions is the next step for one StatefulSet. The edge applies them in
// field order: claims are created before the pods that mount them.
type Actions struct {
	// CreateClaims are the missing claims of the pods in Create (and of
	// pods not started yet whose claim was deleted).
	CreateClaims []*corev1.PersistentVolumeClaim
	// Create are the pods to create, lowest ordinal first.
	Create []*corev1.Pod
	// Delete are the pods to delete (conditional on their UID), in order.
	Delete []Deletion
	// UpdateClaims are claims (copies) whose ownerReferences must change to
	// follow persistentVolumeClaimRetentionPolicy.whenDeleted.
	UpdateClaims []*corev1.PersistentVolumeClaim
	// DeleteClaims are claims of scaled-down ordinals whose pod is gone,
	// under whenScaled: Delete.
	DeleteClaims []*corev1.PersistentVolumeClaim
	// Status is the status computed from the observed pods.
	Status appsv1.StatefulSetStatus
	// Waiting says what the set waits for ("" when nothing), for logs.
	Waiting string
	// RequeueAfter, when > 0, asks for another look: when a Ready pod
	// becomes available (minReadySeconds), or to retry a name held by a
	// pod this set does not control.
	RequeueAfter time.Duration
}

// Deletion is a pod to delete and why.
type Deletion struct {
	Pod *corev1.Pod
	Why string
}

// Plan computes the next step for set from the pods it controls, the pods
// holding one of its pod names (controlled or not; others are ignored) and
// the claims of its namespace (those not named and labelled as its own are
// ignored). It does no I/O and changes none of its inputs. An error means
// the spec cannot be acted on (stalled until it changes).
//
// Ordinals run from spec.ordinals.start (default 0) for spec.replicas
// (default 1). Pass by pass, the lowest ordinal first:
//
//   - a missing pod is created (its missing claims first) once no object
//     holds its name; a Failed or Succeeded pod is deleted, to be recreated
//     once gone. OrderedReady (the default) takes one such step at a time
//     and goes on to the next ordinal only when this one is Running and
//     Ready; Parallel takes them all at once.
//   - pods beyond the replicas are deleted, the highest ordinal first;
//     OrderedReady deletes one at a time, waits for it to be gone, and
//     only while every pod below is Running and Ready.
//   - RollingUpdate (the default): when the template changed, the highest
//     pod not at the update revision and at or above the partition is
//     deleted (to be recreated at the new revision), one at a time, each
//     only after every higher one is back Running and Ready. A missing pod
//     below the partition is recreated at the current revision when its
//     template can be recovered from a sibling pod (else at the update
//     revision). OnDelete: only pods that are deleted get the new
//     template.
func Plan(set *appsv1.StatefulSet, pods []*corev1.Pod, claims []*corev1.PersistentVolumeClaim, now time.Time) (Actions, error) {
	var a Actions
	if err := validate(set); err != nil {
		return a, err
	}
	replicas := 1
	if set.Spec.Replicas != nil {
		replicas = int(*set.Spec.Replicas)
	}
	start := 0
	if set.Spec.Ordinals != nil {
		start = int(set.Spec.Ordinals.Start)
	}
	monotonic := set.Spec.PodManagementPolicy != appsv1.ParallelPodManagement
	rolling := set.Spec.UpdateStrategy.Type != appsv1.OnDeleteStatefulSetStrategyType
	partition := 0
	if ru := set.Spec.UpdateStrategy.RollingUpdate; rolling && ru != nil && ru.Partition != nil {
		partition = max(0, int(*ru.Partition))
	}
	updateRev := RevisionName(set)
	currentRev := set.Status.CurrentRevision
	if currentRev == "" {
		currentRev = updateRev
	}

	// Index what is observed: a map, not a slice of spec.replicas, which may
	// be two billion.
	slots := map[int]*corev1.Pod{} // controlled pods by ordinal-start
	var ours, condemned []*corev1.Pod
	taken := map[string]*corev1.Pod{} // names held by pods not controlled by set
	for _, p := range pods {
		if !controlledBy(p, set) {
			taken[p.Name] = p
			continue
		}
		ours = append(ours, p)
		if ord, ok := Ordinal(set, p.Name); ok && ord >= start && ord < start+replicas {
			slots[ord-start] = p
		} else {
			condemned = append(condemned, p)
		}
	}
	claimByName := map[string]*corev1.PersistentVolumeClaim{}
	for _, c := range claims {
		if c.Namespace == set.Namespace {
			claimByName[c.Name] = c
		}
	}
	a.Status, a.RequeueAfter = status(set, ours, currentRev, updateRev, replicas, now)

	wait := func(format string, args ...any) {
		if a.Waiting == "" {
			a.Waiting = fmt.Sprintf(format, args...)
		}
	}
	deleting := map[*corev1.Pod]bool{}
	del := func(p *corev1.Pod, why string) {
		a.Delete = append(a.Delete, Deletion{Pod: p, Why: why})
		deleting[p] = true
	}
	var currentTmpl *corev1.PodTemplateSpec // recovered lazily
	templateFor := func(idx int) (*corev1.PodTemplateSpec, string) {
		if !rolling || idx >= partition || currentRev == updateRev {
			return &set.Spec.Template, updateRev
		}
		if currentTmpl == nil {
			for _, p := range ours {
				if p.Labels[LabelRevision] == currentRev {
					if currentTmpl = templateFromPod(set, p); currentTmpl != nil {
						break
					}
				}
			}
		}
		if currentTmpl == nil {
			return &set.Spec.Template, updateRev
		}
		return currentTmpl, currentRev
	}

	// 1. Every ordinal in range has a pod, lowest first; at most
	// BurstReplicas created per pass (the rest wait for the next).
	blocked := false
	for idx := 0; idx < replicas && !blocked; idx++ {
		if len(a.Create) >= BurstReplicas {
			wait("the next %d pods to be created", BurstReplicas)
			blocked = true
			break
		}
		ord := start + idx
		name := PodName(set, ord)
		p := slots[idx]
		switch {
		case p == nil && taken[name] != nil:
			wait("pod %s exists but is not controlled by this StatefulSet (its owner's garbage collection or a manual delete frees the name)", name)
			a.RequeueAfter = minPositive(a.RequeueAfter, ForeignRetry)
			blocked = monotonic
		case p == nil:
			tmpl, rev := templateFor(idx)
			a.CreateClaims = append(a.CreateClaims, missingClaims(set, ord, claimByName)...)
			a.Create = append(a.Create, NewPod(set, ord, tmpl, rev))
			wait("%s to be created and become Running and Ready", name)
			blocked = monotonic
		case p.DeletionTimestamp != nil:
			wait("%s to terminate", name)
			blocked = monotonic
		case finished(p):
			del(p, fmt.Sprintf("pod is %s; it is recreated once gone", p.Status.Phase))
			wait("%s (%s) to be gone and recreated", name, p.Status.Phase)
			blocked = monotonic
		default:
			if notStarted(p) {
				a.CreateClaims = append(a.CreateClaims, missingClaims(set, ord, claimByName)...)
			}
			if !runningReady(p) {
				wait("%s to be Running and Ready", name)
				blocked = monotonic
			}
		}
	}

	// 2. Pods beyond the replicas go, the highest ordinal first.
	if !blocked {
		sort.SliceStable(condemned, func(i, j int) bool { return deleteFirst(set, condemned[i], condemned[j]) })
		for _, p := range condemned {
			if p.DeletionTimestamp != nil {
				wait("%s to terminate", p.Name)
				if blocked = monotonic; blocked {
					break
				}
				continue
			}
			del(p, "scale down")
			if monotonic {
				wait("%s to be gone (scale down)", p.Name)
				blocked = true
				break
			}
		}
	}

	// 3. Rolling update, from the highest ordinal down to the partition.
	if !blocked && rolling {
		for idx := replicas - 1; idx >= partition; idx-- {
			p := slots[idx]
			if p == nil || deleting[p] {
				wait("%s to be recreated and become Running and Ready (rolling update)", PodName(set, start+idx))
				break
			}
			if p.Labels[LabelRevision] != updateRev && p.DeletionTimestamp == nil {
				del(p, fmt.Sprintf("rolling update to revision %s", updateRev))
				wait("%s to be recreated at revision %s and become Running and Ready", p.Name, updateRev)
				break
			}
			if !runningReady(p) || p.DeletionTimestamp != nil {
				wait("%s to be Running and Ready (rolling update)", p.Name)
				break
			}
		}
	}

	// Claims: the retention policy.
	pol := retention(set)
	podNames := map[string]bool{}
	for _, p := range pods {
		podNames[p.Name] = true
	}
	for _, c := range sortedClaims(claimByName) {
		ord, ok := claimOrdinal(set, c.Name)
		if !ok || !ownClaim(set, c) {
			continue
		}
		if pol.WhenScaled == appsv1.DeletePersistentVolumeClaimRetentionPolicyType &&
			(ord < start || ord >= start+replicas) && !podNames[PodName(set, ord)] && !deletingOrdinal(a.Delete, set, ord) {
			if c.DeletionTimestamp == nil {
				a.DeleteClaims = append(a.DeleteClaims, c)
			}
			continue
		}
		if u := withSetRef(set, c, pol.WhenDeleted == appsv1.DeletePersistentVolumeClaimRetentionPolicyType); u != nil {
			a.UpdateClaims = append(a.UpdateClaims, u)
		}
	}
	return a, nil
}

// maxLabelValue is the longest label value Kubernetes accepts: pods carry
// their name and the set's revision in labels.
const maxLabelValue = 63

// validate refuses what Kubernetes' API would refuse and Plan cannot act on.
func validate(set *appsv1.StatefulSet) error {
	if err := wellformed.Replicas(set.Spec.Replicas); err != nil {
		return err
	}
	if set.Spec.Ordinals != nil && set.Spec.Ordinals.Start < 0 {
		return fmt.Errorf("spec.ordinals.start is %d, want >= 0", set.Spec.Ordinals.Start)
	}
	if err := wellformed.Seconds("spec.minReadySeconds", int64(set.Spec.MinReadySeconds)); err != nil {
		return err
	}
	if err := wellformed.Selector(set.Spec.Selector, &set.Spec.Template); err != nil {
		return err
	}
	if err := wellformed.PodTemplate(&set.Spec.Template); err != nil {
		return err
	}
	switch p := set.Spec.PodManagementPolicy; p {
	case "", appsv1.OrderedReadyPodManagement, appsv1.ParallelPodManagement:
	default:
		return fmt.Errorf("spec.podManagementPolicy %q is not OrderedReady or Parallel", p)
	}
	switch t := set.Spec.UpdateStrategy.Type; t {
	case "", appsv1.RollingUpdateStatefulSetStrategyType, appsv1.OnDeleteStatefulSetStrategyType:
	default:
		return fmt.Errorf("spec.updateStrategy.type %q is not RollingUpdate or OnDelete", t)
	}
	replicas, start := 1, 0
	if set.Spec.Replicas != nil {
		replicas = int(*set.Spec.Replicas)
	}
	if set.Spec.Ordinals != nil {
		start = int(set.Spec.Ordinals.Start)
	}
	if last := PodName(set, start+max(replicas, 1)-1); len(last) > maxLabelValue {
		return fmt.Errorf("pod name %s would be %d characters long, more than %d (it is a label value): shorten the name or lower spec.ordinals.start", last, len(last), maxLabelValue)
	}
	if rev := RevisionName(set); len(rev) > maxLabelValue {
		return fmt.Errorf("revision %s would be %d characters long, more than %d (it is a label value): shorten the name", rev, len(rev), maxLabelValue)
	}
	seen := map[string]bool{}
	for i, ct := range set.Spec.VolumeClaimTemplates {
		if ct.Name == "" {
			return fmt.Errorf("spec.volumeClaimTemplates[%d].metadata.name is required", i)
		}
		if seen[ct.Name] {
			return fmt.Errorf("spec.volumeClaimTemplates[%d]: duplicate name %q", i, ct.Name)
		}
		seen[ct.Name] = true
		if err := wellformed.Name("claim", ClaimName(set, ct.Name, start+max(replicas, 1)-1)); err != nil {
			return fmt.Errorf("spec.volumeClaimTemplates[%d]: %w", i, err)
		}
	}
	return nil
}

// missingClaims returns the claims of ordinal that claims lacks.
func missingClaims(set *appsv1.StatefulSet, ordinal int, claims map[string]*corev1.PersistentVolumeClaim) []*corev1.PersistentVolumeClaim {
	var out []*corev1.PersistentVolumeClaim
	for i := range set.Spec.VolumeClaimTemplates {
		ct := &set.Spec.VolumeClaimTemplates[i]
		if claims[ClaimName(set, ct.Name, ordinal)] == nil {
			out = append(out, NewClaim(set, ct, ordinal))
		}
	}
	return out
}

// ownClaim reports whether c is a claim this set made and may manage: its
// labels carry the set's selector labels and Git does not own it (a claim
// from the repository is used as it is, never changed or deleted).
func ownClaim(set *appsv1.StatefulSet, c *corev1.PersistentVolumeClaim) bool {
	if c.Annotations[schema.AnnotationManagedBy] == schema.ManagedByGit {
		return false
	}
	for k, v := range set.Spec.Selector.MatchLabels {
		if c.Labels[k] != v {
			return false
		}
	}
	return true
}

// withSetRef returns a copy of c with set as an owner (want) or without it,
// or nil when c is already so.
func withSetRef(set *appsv1.StatefulSet, c *corev1.PersistentVolumeClaim, want bool) *corev1.PersistentVolumeClaim {
	has := false
	for _, r := range c.OwnerReferences {
		if r.UID == set.UID {
			has = true
		}
	}
	if has == want {
		return nil
	}
	out := c.DeepCopy()
	if want {
		out.OwnerReferences = append(out.OwnerReferences, setRef(set))
		return out
	}
	out.OwnerReferences = nil
	for _, r := range c.OwnerReferences {
		if r.UID != set.UID {
			out.OwnerReferences = append(out.OwnerReferences, r)
		}
	}
	return out
}

func deletingOrdinal(ds []Deletion, set *appsv1.StatefulSet, ord int) bool {
	for _, d := range ds {
		if o, ok := Ordinal(set, d.Pod.Name); ok && o == ord {
			return true
		}
	}
	return false
}

func sortedClaims(m map[string]*corev1.PersistentVolumeClaim) []*corev1.PersistentVolumeClaim {
	out := make([]*corev1.PersistentVolumeClaim, 0, len(m))
	for _, c := range m {
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// deleteFirst orders pods beyond the replicas: names that are no ordinal
// of set first, then the highest ordinal.
func deleteFirst(set *appsv1.StatefulSet, a, b *corev1.Pod) bool {
	oa, okA := Ordinal(set, a.Name)
	ob, okB := Ordinal(set, b.Name)
	if okA != okB {
		return !okA
	}
	if oa != ob {
		return oa > ob
	}
	return a.Name < b.Name
}

func controlledBy(p *corev1.Pod, set *appsv1.StatefulSet) bool {
	ref := metav1.GetControllerOf(p)
	return ref != nil && ref.UID == set.UID
}

// finished reports whether p is terminal (Succeeded or Failed).
func finished(p *corev1.Pod) bool {
	return p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed
}

// notStarted reports whether p has not been started on a node yet.
func notStarted(p *corev1.Pod) bool {
	return p.Status.Phase == "" || p.Status.Phase == corev1.PodPending
}

// runningReady reports whether p is Running with its Ready condition True
// (and not being deleted).
func runningReady(p *corev1.Pod) bool {
	if p.Status.Phase != corev1.PodRunning || p.DeletionTimestamp != nil {
		return false
	}
	c := schema.PodReadyCondition(p)
	return c != nil && c.Status == corev1.ConditionTrue
}

func minPositive(a, b time.Duration) time.Duration {
	if a <= 0 || (b > 0 && b < a) {
		return b
	}
	return a
}
