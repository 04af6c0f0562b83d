// Package replicaset is the ReplicaSet controller: it keeps spec.replicas
// pods (named <replicaset>-<5 random chars>, owned by the ReplicaSet, made
// from its template) and reports how many exist, are ready and available.
// Plan is the pure planner; Controller is the edge, which confirms every
// create or delete against a fresh list from the store so that a lagging
// cache or a restart never makes duplicate pods.
package replicaset

import (
	"sort"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"

	"github.com/flotilla-dev/flotilla/reconciler/internal/wellformed"
	"github.com/flotilla-dev/flotilla/schema"
)

// BurstReplicas caps the pods created or deleted by one reconcile, as
// Kubernetes' --replicaset-burst (500) does.
const BurstReplicas = 500

// Actions is the next step for one ReplicaSet.
type Actions struct {
	// Create is the number of pods to create (use NewPod for each).
	Create int
	// Delete are the pods to delete, the least useful first.
	Delete []*corev1.Pod
	// Status is the status computed from the observed pods.
	Status appsv1.ReplicaSetStatus
	// RequeueAfter, when > 0, is when a Ready pod becomes available
	// (minReadySeconds), so the status should be recomputed.
	RequeueAfter time.Duration
}

// Plan compares rs.spec.replicas with the pods it controls. pods may contain
// others (not controlled by rs; ignored). Pods being deleted or finished
// (Succeeded, Failed) are not counted. It does no I/O, and never plans more
// than BurstReplicas creations or deletions, whatever spec.replicas says.
// An error means rs's spec cannot be acted on (stalled until it changes):
// negative replicas, a selector that is missing, empty or does not select
// the template, a template without containers.
func Plan(rs *appsv1.ReplicaSet, pods []*corev1.Pod, now time.Time) (Actions, error) {
	var a Actions
	if err := Validate(rs); err != nil {
		return a, err
	}
	active := Active(rs, pods)
	want := int64(1)
	if rs.Spec.Replicas != nil {
		want = int64(*rs.Spec.Replicas)
	}
	switch diff := int64(len(active)) - want; {
	case diff < 0:
		a.Create = int(min(-diff, BurstReplicas))
	case diff > 0:
		ranked := append([]*corev1.Pod(nil), active...)
		sort.SliceStable(ranked, func(i, j int) bool { return deleteFirst(ranked[i], ranked[j]) })
		a.Delete = ranked[:min(diff, BurstReplicas, int64(len(ranked)))]
	}
	a.Status, a.RequeueAfter = status(rs, active, now)
	return a, nil
}

// Validate reports what in rs's spec the controller cannot act on.
func Validate(rs *appsv1.ReplicaSet) error {
	if err := wellformed.Workload(rs.Spec.Replicas, rs.Spec.MinReadySeconds, rs.Spec.Selector, &rs.Spec.Template); err != nil {
		return err
	}
	return nil
}

// Active returns the pods controlled by rs (by UID) that count toward its
// replicas: not being deleted, not Succeeded or Failed.
func Active(rs *appsv1.ReplicaSet, pods []*corev1.Pod) []*corev1.Pod {
	var out []*corev1.Pod
	for _, p := range pods {
		if !controlledBy(p, rs) || p.DeletionTimestamp != nil ||
			p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		out = append(out, p)
	}
	return out
}

func controlledBy(p *corev1.Pod, rs *appsv1.ReplicaSet) bool {
	ref := metav1.GetControllerOf(p)
	return ref != nil && ref.UID == rs.UID
}

// deleteFirst ranks pods for scale-down: unscheduled, then pending, then
// not ready, then the most recently created (then by name, for stability).
func deleteFirst(a, b *corev1.Pod) bool {
	if (a.Spec.NodeName == "") != (b.Spec.NodeName == "") {
		return a.Spec.NodeName == ""
	}
	pa, pb := a.Status.Phase == corev1.PodPending || a.Status.Phase == "", b.Status.Phase == corev1.PodPending || b.Status.Phase == ""
	if pa != pb {
		return pa
	}
	ra, rb := schema.PodReady(a), schema.PodReady(b)
	if ra != rb {
		return !ra
	}
	if !a.CreationTimestamp.Equal(&b.CreationTimestamp) {
		return b.CreationTimestamp.Before(&a.CreationTimestamp)
	}
	return a.Name > b.Name
}

func status(rs *appsv1.ReplicaSet, active []*corev1.Pod, now time.Time) (appsv1.ReplicaSetStatus, time.Duration) {
	st := appsv1.ReplicaSetStatus{
		Replicas:           int32(len(active)),
		ObservedGeneration: rs.Generation,
		Conditions:         rs.Status.Conditions,
	}
	minReady := time.Duration(rs.Spec.MinReadySeconds) * time.Second
	var requeue time.Duration
	for _, p := range active {
		if hasLabels(p.Labels, rs.Spec.Template.Labels) {
			st.FullyLabeledReplicas++
		}
		c := schema.PodReadyCondition(p)
		if c == nil || c.Status != corev1.ConditionTrue {
			continue
		}
		st.ReadyReplicas++
		if minReady == 0 {
			st.AvailableReplicas++
			continue
		}
		if left := c.LastTransitionTime.Add(minReady).Sub(now); left <= 0 {
			st.AvailableReplicas++
		} else if requeue == 0 || left < requeue {
			requeue = left
		}
	}
	return st, requeue
}

func hasLabels(have, want map[string]string) bool {
	for k, v := range want {
		if have[k] != v {
			return false
		}
	}
	return true
}

// maxGeneratedPrefix is how much of "<rs>-" a pod name keeps, as
// Kubernetes' generateName: the name stays within 63 characters.
const maxGeneratedPrefix = 58

// PodName is a new name for a pod of rs: "<rs>-" (cut to 58 characters)
// and 5 random characters.
func PodName(rs *appsv1.ReplicaSet) string {
	prefix := rs.Name + "-"
	if len(prefix) > maxGeneratedPrefix {
		prefix = prefix[:maxGeneratedPrefix]
	}
	return prefix + rand.String(5)
}

// NewPod builds a pod of rs from its template, named PodName.
func NewPod(rs *appsv1.ReplicaSet) *corev1.Pod {
	yes := true
	t := rs.Spec.Template.DeepCopy()
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name:        PodName(rs),
			Namespace:   rs.Namespace,
			Labels:      t.Labels,
			Annotations: t.Annotations,
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion: "apps/v1", Kind: "ReplicaSet", Name: rs.Name, UID: rs.UID,
				Controller: &yes, BlockOwnerDeletion: &yes,
			}},
		},
		Spec: t.Spec,
	}
	p.APIVersion, p.Kind = "v1", "Pod"
	return p
}
