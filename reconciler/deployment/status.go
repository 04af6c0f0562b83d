package deployment

import (
	"fmt"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flotilla-dev/flotilla/reconciler/internal/wellformed"
)

// Condition reasons, as Kubernetes words them.
const (
	ReasonMinimumReplicasAvailable   = "MinimumReplicasAvailable"
	ReasonMinimumReplicasUnavailable = "MinimumReplicasUnavailable"
	ReasonNewReplicaSetAvailable     = "NewReplicaSetAvailable"
	ReasonReplicaSetUpdated          = "ReplicaSetUpdated"
	ReasonNewReplicaSetCreated       = "NewReplicaSetCreated"
	ReasonDeploymentPaused           = "DeploymentPaused"
	ReasonProgressDeadlineExceeded   = "ProgressDeadlineExceeded"
)

// DefaultProgressDeadlineSeconds is Kubernetes' default.
const DefaultProgressDeadlineSeconds = 600

// computeStatus derives the Deployment status from its ReplicaSets as
// observed (before this step's actions). Conditions keep their timestamps
// when nothing about them changed, so an unchanged status compares equal.
// A rollout that makes no progress (no more updated, ready or available
// pods, no fewer old ones) for progressDeadlineSeconds is reported as
// Progressing=False/ProgressDeadlineExceeded; the returned duration is when
// that deadline falls (0 when not rolling out).
func computeStatus(d *appsv1.Deployment, newRS *appsv1.ReplicaSet, old []*appsv1.ReplicaSet, maxUnavailable int32, now time.Time) (appsv1.DeploymentStatus, time.Duration) {
	st := appsv1.DeploymentStatus{
		ObservedGeneration: d.Generation,
		CollisionCount:     d.Status.CollisionCount,
		Conditions:         append([]appsv1.DeploymentCondition(nil), d.Status.Conditions...),
	}
	var specTotal int64
	all := old
	if newRS != nil {
		all = append(append([]*appsv1.ReplicaSet{}, old...), newRS)
		st.UpdatedReplicas = newRS.Status.Replicas
	}
	for _, rs := range all {
		st.Replicas += rs.Status.Replicas
		st.ReadyReplicas += rs.Status.ReadyReplicas
		st.AvailableReplicas += rs.Status.AvailableReplicas
		specTotal += int64(replicasOf(rs.Spec.Replicas))
	}
	st.UnavailableReplicas = wellformed.ClampInt32(max(0, specTotal-int64(st.AvailableReplicas)))
	replicas := replicasOf(d.Spec.Replicas)

	if int64(st.AvailableReplicas) >= int64(replicas)-int64(maxUnavailable) {
		setCondition(&st, appsv1.DeploymentAvailable, corev1.ConditionTrue, ReasonMinimumReplicasAvailable, "Deployment has minimum availability.", now)
	} else {
		setCondition(&st, appsv1.DeploymentAvailable, corev1.ConditionFalse, ReasonMinimumReplicasUnavailable, "Deployment does not have minimum availability.", now)
	}
	complete := newRS != nil && st.UpdatedReplicas == replicas && st.Replicas == replicas &&
		st.AvailableReplicas == replicas && replicasOf(newRS.Spec.Replicas) == replicas
	deadline := time.Duration(DefaultProgressDeadlineSeconds) * time.Second
	if d.Spec.ProgressDeadlineSeconds != nil {
		deadline = time.Duration(*d.Spec.ProgressDeadlineSeconds) * time.Second
	}
	var oldNow, oldBefore int32
	for _, rs := range old {
		oldNow += rs.Status.Replicas
	}
	oldBefore = d.Status.Replicas - d.Status.UpdatedReplicas
	progressed := st.UpdatedReplicas > d.Status.UpdatedReplicas || oldNow < oldBefore ||
		st.ReadyReplicas > d.Status.ReadyReplicas || st.AvailableReplicas > d.Status.AvailableReplicas
	var wait time.Duration
	switch {
	case d.Spec.Paused:
		setCondition(&st, appsv1.DeploymentProgressing, corev1.ConditionUnknown, ReasonDeploymentPaused, "Deployment is paused", now)
	case complete:
		setCondition(&st, appsv1.DeploymentProgressing, corev1.ConditionTrue, ReasonNewReplicaSetAvailable, fmt.Sprintf("ReplicaSet %q has successfully progressed.", newRS.Name), now)
	case newRS == nil:
		setCondition(&st, appsv1.DeploymentProgressing, corev1.ConditionTrue, ReasonNewReplicaSetCreated, "Creating a new ReplicaSet.", now)
	default:
		cur := condition(st.Conditions, appsv1.DeploymentProgressing)
		msg := fmt.Sprintf("ReplicaSet %q is progressing.", newRS.Name)
		switch {
		case progressed || cur == nil || cur.Reason == ReasonNewReplicaSetAvailable || cur.Reason == ReasonDeploymentPaused:
			setCondition(&st, appsv1.DeploymentProgressing, corev1.ConditionTrue, ReasonReplicaSetUpdated, msg, now)
			// Progress restarts the clock.
			cur = condition(st.Conditions, appsv1.DeploymentProgressing)
			cur.LastUpdateTime = metav1.NewTime(now.Truncate(time.Second))
			wait = deadline
		case cur.Reason == ReasonProgressDeadlineExceeded:
			// Stays failed until it progresses again.
		case now.Sub(cur.LastUpdateTime.Time) >= deadline:
			setCondition(&st, appsv1.DeploymentProgressing, corev1.ConditionFalse, ReasonProgressDeadlineExceeded,
				fmt.Sprintf("ReplicaSet %q has timed out progressing.", newRS.Name), now)
		default:
			wait = cur.LastUpdateTime.Add(deadline).Sub(now)
		}
	}
	return st, wait
}

func condition(cs []appsv1.DeploymentCondition, typ appsv1.DeploymentConditionType) *appsv1.DeploymentCondition {
	for i := range cs {
		if cs[i].Type == typ {
			return &cs[i]
		}
	}
	return nil
}

func setCondition(st *appsv1.DeploymentStatus, typ appsv1.DeploymentConditionType, status corev1.ConditionStatus, reason, msg string, now time.Time) {
	t := metav1.NewTime(now.Truncate(time.Second))
	c := appsv1.DeploymentCondition{Type: typ, Status: status, Reason: reason, Message: msg, LastUpdateTime: t, LastTransitionTime: t}
	for i := range st.Conditions {
		cur := &st.Conditions[i]
		if cur.Type != typ {
			continue
		}
		if cur.Status == status && cur.Reason == reason && cur.Message == msg {
			return
		}
		if cur.Status == status {
			c.LastTransitionTime = cur.LastTransitionTime
		}
		*cur = c
		return
	}
	st.Conditions = append(st.Conditions, c)
}
