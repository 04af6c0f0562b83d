package statefulset

import (
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/flotilla-dev/flotilla/schema"
)

// status derives set's status from the pods it controls, as observed
// (before this step's actions), and when a Ready pod becomes available
// (0: none pending). Once every pod is at the update revision and Ready,
// the update revision becomes the current one (for both strategies:
// Kubernetes leaves currentRevision behind under OnDelete).
func status(set *appsv1.StatefulSet, ours []*corev1.Pod, currentRev, updateRev string, replicas int, now time.Time) (appsv1.StatefulSetStatus, time.Duration) {
	st := appsv1.StatefulSetStatus{
		ObservedGeneration: set.Generation,
		CurrentRevision:    currentRev,
		UpdateRevision:     updateRev,
		CollisionCount:     set.Status.CollisionCount,
		Conditions:         set.Status.Conditions,
	}
	minReady := time.Duration(set.Spec.MinReadySeconds) * time.Second
	var requeue time.Duration
	for _, p := range ours {
		st.Replicas++
		if runningReady(p) {
			st.ReadyReplicas++
			c := schema.PodReadyCondition(p)
			if left := c.LastTransitionTime.Add(minReady).Sub(now); minReady == 0 || left <= 0 {
				st.AvailableReplicas++
			} else {
				requeue = minPositive(requeue, left)
			}
		}
		if p.DeletionTimestamp != nil {
			continue
		}
		if p.Labels[LabelRevision] == currentRev {
			st.CurrentReplicas++
		}
		if p.Labels[LabelRevision] == updateRev {
			st.UpdatedReplicas++
		}
	}
	if int(st.Replicas) == replicas && st.UpdatedReplicas == st.Replicas && st.ReadyReplicas == st.Replicas {
		st.CurrentRevision = updateRev
		st.CurrentReplicas = st.UpdatedReplicas
	}
	return st, requeue
}
