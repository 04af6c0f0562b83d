// Package deployment is the Deployment controller: it keeps one ReplicaSet
// per pod template (named <deployment>-<pod-template-hash>), scales them,
// rolls a new template out with the RollingUpdate or Recreate strategy,
// prunes old ReplicaSets beyond revisionHistoryLimit, and reports status.
// Plan is the pure planner (desired vs observed → the next step); Controller
// is the edge that feeds it from the watch cache and writes to the store.
package deployment

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/flotilla-dev/flotilla/reconciler/internal/wellformed"
)

// Actions is the next step toward a Deployment's desired state. The edge
// applies Create, then Updates, then Deletes, then the revision annotation
// and Status; each reconcile takes one step and the resulting events bring
// the next.
type Actions struct {
	// Create is the new ReplicaSet to create, if any.
	Create *appsv1.ReplicaSet
	// Updates are ReplicaSets (copies) with a new spec.replicas or revision.
	Updates []*appsv1.ReplicaSet
	// Deletes are old ReplicaSets beyond revisionHistoryLimit.
	Deletes []*appsv1.ReplicaSet
	// Revision is the value the Deployment's revision annotation should have.
	Revision int64
	// Status is the Deployment status computed from what was observed.
	Status appsv1.DeploymentStatus
	// Waiting names what the rollout waits for ("" when not waiting on
	// something that sends no event, e.g. old pods to be gone).
	Waiting string
	// RequeueAfter, when > 0, is when the progress deadline of a rollout
	// in progress falls: look again then even if nothing happens.
	RequeueAfter time.Duration
}

// Plan computes the next step for d given the ReplicaSets it controls and
// the pods of those ReplicaSets (only counted for Recreate, which waits for
// the old pods to be gone). It does no I/O and changes none of its inputs.
//
// minReadySeconds is passed on to the ReplicaSets, whose controller counts a
// pod available once Ready for that long; progressDeadlineSeconds turns
// Progressing to False (ProgressDeadlineExceeded) when a rollout stalls. A
// failed rollout is only reported: it never blocks a newer template.
func Plan(d *appsv1.Deployment, rss []*appsv1.ReplicaSet, pods []*corev1.Pod, now time.Time) (a Actions, err error) {
	if err := Validate(d); err != nil {
		return a, err
	}
	surge, unavailable, err := RollingParams(d)
	if err != nil {
		return a, err
	}
	replicas := replicasOf(d.Spec.Replicas)
	hash := TemplateHash(&d.Spec.Template)

	var newRS *appsv1.ReplicaSet
	var old []*appsv1.ReplicaSet
	for _, rs := range rss {
		if rs.Labels[HashLabel] == hash && newRS == nil {
			newRS = rs
		} else {
			old = append(old, rs)
		}
	}
	sortOldestFirst(old)
	var maxOld int64
	for _, rs := range old {
		maxOld = max(maxOld, Revision(rs))
	}

	// The revision of the current template: one more than any older one.
	a.Revision = maxOld + 1
	if newRS != nil && Revision(newRS) > maxOld {
		a.Revision = Revision(newRS)
	}
	defer func() { a.Status, a.RequeueAfter = computeStatus(d, newRS, old, unavailable, now) }()

	if d.Spec.Paused {
		a.Revision = max(Revision(d), 0)
		if cur := pausedTarget(newRS, old); cur != nil && replicasOf(cur.Spec.Replicas) != replicas {
			a.Updates = append(a.Updates, scaled(cur, replicas, 0))
		}
		return a, nil
	}

	// A template that was rolled out before gets the newest revision again.
	bumpNew := newRS != nil && Revision(newRS) != a.Revision

	if d.Spec.Strategy.Type == appsv1.RecreateDeploymentStrategyType {
		if scaledOld := scaleAllToZero(old); len(scaledOld) > 0 {
			a.Updates = scaledOld
			return a, nil
		}
		if n := podsOf(old, pods); n > 0 {
			a.Waiting = fmt.Sprintf("%d old pod(s) to terminate", n)
			return a, nil
		}
		switch {
		case newRS == nil:
			a.Create = NewReplicaSet(d, hash, replicas, a.Revision)
		case replicasOf(newRS.Spec.Replicas) != replicas || bumpNew:
			a.Updates = append(a.Updates, scaled(newRS, replicas, a.Revision))
		default:
			a.Deletes = prune(d, old)
		}
		return a, nil
	}

	// RollingUpdate: first scale the new ReplicaSet up (within maxSurge).
	all := append([]*appsv1.ReplicaSet{}, old...)
	if newRS != nil {
		all = append(all, newRS)
	}
	if newRS == nil {
		a.Create = NewReplicaSet(d, hash, newReplicas(replicas, surge, all, 0), a.Revision)
		return a, nil
	}
	if want := newReplicas(replicas, surge, all, replicasOf(newRS.Spec.Replicas)); want != replicasOf(newRS.Spec.Replicas) || bumpNew {
		a.Updates = append(a.Updates, scaled(newRS, want, a.Revision))
		return a, nil
	}
	// Then scale old ReplicaSets down (within maxUnavailable).
	if ups := scaleDownOld(replicas, unavailable, newRS, old); len(ups) > 0 {
		a.Updates = ups
		return a, nil
	}
	a.Deletes = prune(d, old)
	return a, nil
}

// Validate reports what in d's spec the controller cannot act on: what
// Kubernetes' API refuses, for a Deployment that reached the store past
// admission.
func Validate(d *appsv1.Deployment) error {
	if err := wellformed.Workload(d.Spec.Replicas, d.Spec.MinReadySeconds, d.Spec.Selector, &d.Spec.Template); err != nil {
		return err
	}
	if l := d.Spec.RevisionHistoryLimit; l != nil && *l < 0 {
		return fmt.Errorf("spec.revisionHistoryLimit is %d, want 0 or more", *l)
	}
	if p := d.Spec.ProgressDeadlineSeconds; p != nil && *p <= d.Spec.MinReadySeconds {
		return fmt.Errorf("spec.progressDeadlineSeconds is %d, want more than spec.minReadySeconds (%d)", *p, d.Spec.MinReadySeconds)
	}
	switch t := d.Spec.Strategy.Type; t {
	case "", appsv1.RollingUpdateDeploymentStrategyType:
	case appsv1.RecreateDeploymentStrategyType:
		if d.Spec.Strategy.RollingUpdate != nil {
			return errors.New("spec.strategy.rollingUpdate may not be set when spec.strategy.type is Recreate")
		}
	default:
		return fmt.Errorf("spec.strategy.type %q is not RollingUpdate or Recreate", t)
	}
	if _, _, err := RollingParams(d); err != nil {
		return err
	}
	// The ReplicaSets are named <deployment>-<pod-template-hash> (up to 10
	// characters).
	return wellformed.Name("the ReplicaSets'", d.Name+"-"+strings.Repeat("x", 10))
}

// newReplicas is the new ReplicaSet's size for a rolling update: grow
// toward replicas while the total stays within replicas+surge; shrink to
// replicas if above. Sums are int64: hostile sizes cannot overflow.
func newReplicas(replicas, surge int32, all []*appsv1.ReplicaSet, cur int32) int32 {
	if cur >= replicas {
		return replicas
	}
	total := sumSpec(all)
	maxTotal := int64(replicas) + int64(surge)
	if total >= maxTotal {
		return cur
	}
	return wellformed.ClampInt32(int64(cur) + min(maxTotal-total, int64(replicas)-int64(cur)))
}

// scaleDownOld follows Kubernetes' reconcileOldReplicaSets: first remove
// old pods that are not available (they cost no availability), then
// available ones while at least replicas-maxUnavailable stay available.
func scaleDownOld(replicas, unavailable int32, newRS *appsv1.ReplicaSet, old []*appsv1.ReplicaSet) []*appsv1.ReplicaSet {
	if sumSpec(old) == 0 {
		return nil
	}
	target := map[*appsv1.ReplicaSet]int64{}
	for _, rs := range old {
		target[rs] = int64(replicasOf(rs.Spec.Replicas))
	}
	all := sumSpec(old) + int64(replicasOf(newRS.Spec.Replicas))
	minAvailable := int64(replicas) - int64(unavailable)
	newUnavailable := int64(replicasOf(newRS.Spec.Replicas)) - int64(newRS.Status.AvailableReplicas)
	maxScaledDown := all - minAvailable - newUnavailable
	if maxScaledDown <= 0 {
		return nil
	}
	// Unhealthy old pods first.
	var done int64
	for _, rs := range old {
		if done >= maxScaledDown {
			break
		}
		unhealthy := target[rs] - int64(rs.Status.AvailableReplicas)
		if target[rs] == 0 || unhealthy <= 0 {
			continue
		}
		n := min(maxScaledDown-done, unhealthy)
		target[rs] -= n
		done += n
	}
	// Then available ones, keeping minAvailable.
	available := int64(newRS.Status.AvailableReplicas)
	for _, rs := range old {
		available += int64(rs.Status.AvailableReplicas)
	}
	if available > minAvailable {
		total := available - minAvailable
		var down int64
		for _, rs := range old {
			if down >= total {
				break
			}
			if target[rs] <= 0 {
				continue
			}
			n := min(target[rs], total-down)
			target[rs] -= n
			down += n
		}
	}
	var out []*appsv1.ReplicaSet
	for _, rs := range old {
		if n := wellformed.ClampInt32(max(target[rs], 0)); n != replicasOf(rs.Spec.Replicas) {
			out = append(out, scaled(rs, n, 0))
		}
	}
	return out
}

// pausedTarget is the ReplicaSet a paused Deployment may scale: the only
// active one, else the new one.
func pausedTarget(newRS *appsv1.ReplicaSet, old []*appsv1.ReplicaSet) *appsv1.ReplicaSet {
	var active []*appsv1.ReplicaSet
	for _, rs := range append(append([]*appsv1.ReplicaSet{}, old...), newRS) {
		if rs != nil && replicasOf(rs.Spec.Replicas) > 0 {
			active = append(active, rs)
		}
	}
	switch {
	case len(active) == 1:
		return active[0]
	case len(active) == 0:
		return newRS
	}
	return nil
}

func scaleAllToZero(old []*appsv1.ReplicaSet) []*appsv1.ReplicaSet {
	var out []*appsv1.ReplicaSet
	for _, rs := range old {
		if replicasOf(rs.Spec.Replicas) != 0 {
			out = append(out, scaled(rs, 0, 0))
		}
	}
	return out
}

// scaled returns a copy of rs with replicas n and, when rev > 0, revision rev.
func scaled(rs *appsv1.ReplicaSet, n int32, rev int64) *appsv1.ReplicaSet {
	c := rs.DeepCopy()
	c.Spec.Replicas = &n
	if rev > 0 {
		setRevision(c, rev)
	}
	return c
}

// prune returns the old ReplicaSets beyond revisionHistoryLimit that are
// scaled to 0 and have no pods left, oldest revision first.
func prune(d *appsv1.Deployment, old []*appsv1.ReplicaSet) []*appsv1.ReplicaSet {
	limit := int32(DefaultRevisionHistoryLimit)
	if d.Spec.RevisionHistoryLimit != nil {
		limit = max(*d.Spec.RevisionHistoryLimit, 0)
	}
	var idle []*appsv1.ReplicaSet
	for _, rs := range old {
		if replicasOf(rs.Spec.Replicas) == 0 && rs.Status.Replicas == 0 {
			idle = append(idle, rs)
		}
	}
	excess := len(idle) - int(limit)
	if excess <= 0 {
		return nil
	}
	sort.SliceStable(idle, func(i, j int) bool { return Revision(idle[i]) < Revision(idle[j]) })
	return idle[:excess]
}

func podsOf(rss []*appsv1.ReplicaSet, pods []*corev1.Pod) int {
	uids := map[types.UID]bool{}
	for _, rs := range rss {
		uids[rs.UID] = true
	}
	n := 0
	for _, p := range pods {
		for _, ref := range p.OwnerReferences {
			if ref.Controller != nil && *ref.Controller && uids[ref.UID] {
				n++
				break
			}
		}
	}
	return n
}

func sumSpec(rss []*appsv1.ReplicaSet) int64 {
	var n int64
	for _, rs := range rss {
		n += int64(replicasOf(rs.Spec.Replicas))
	}
	return n
}

// sortOldestFirst orders by revision, then creation time, then name.
func sortOldestFirst(rss []*appsv1.ReplicaSet) {
	sort.SliceStable(rss, func(i, j int) bool {
		ri, rj := Revision(rss[i]), Revision(rss[j])
		if ri != rj {
			return ri < rj
		}
		ti, tj := rss[i].CreationTimestamp, rss[j].CreationTimestamp
		if !ti.Equal(&tj) {
			return ti.Before(&tj)
		}
		return rss[i].Name < rss[j].Name
	})
}
