package controller

import (
	"time"
	"unicode/utf8"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flotilla-dev/flotilla/schema"
)

// ConditionStalled is the condition type the Loop writes on an object whose
// reconcile is stalled: Status True, a Reason and a Message saying why and
// what to change. Flux's meaning: the object cannot progress until it is
// changed. It is removed by the next reconcile that succeeds (done,
// requeue or waiting). Kinds with status conditions carry it: Deployment,
// ReplicaSet, StatefulSet, Pod, Node, Service, PersistentVolumeClaim.
const ConditionStalled = "Stalled"

// Reasons of the Stalled condition written by the Loop and the
// controllers.
const (
	// ReasonInvalidSpec: the spec read from the store cannot be acted on
	// (negative replicas, a selector that does not select the template,
	// no containers, …); the message names the field.
	ReasonInvalidSpec = "InvalidSpec"
	// ReasonReconcilePanic: the controller panicked on this object; the
	// message is the panic, the log has the stack. The key is retried
	// with back-off.
	ReasonReconcilePanic = "ReconcilePanic"
	// ReasonWriteRefused: the store (its admission) refused a write the
	// controller made for this object, e.g. pods from a template that
	// does not validate; the message is the store's.
	ReasonWriteRefused = "WriteRefused"
)

// MaxMessageBytes bounds a Stalled message (a panic's text may quote
// anything): longer ones are cut, with "…" at the end.
const MaxMessageBytes = 1024

func clip(msg string) string {
	if len(msg) <= MaxMessageBytes {
		return msg
	}
	cut := MaxMessageBytes - len("…")
	for cut > 0 && !utf8.RuneStart(msg[cut]) {
		cut--
	}
	return msg[:cut] + "…"
}

// HasConditions reports whether obj's kind carries the Stalled condition.
func HasConditions(obj schema.Object) bool {
	switch obj.(type) {
	case *appsv1.Deployment, *appsv1.ReplicaSet, *appsv1.StatefulSet, *corev1.Pod, *corev1.Node,
		*corev1.Service, *corev1.PersistentVolumeClaim:
		return true
	}
	return false
}

// Stall is the state of a Stalled condition.
type Stall struct {
	Reason, Message string
}

// StalledCondition returns obj's Stalled condition when it is True.
func StalledCondition(obj schema.Object) (Stall, bool) {
	var found bool
	var s Stall
	visit := func(typ, status, reason, msg string) {
		if typ == ConditionStalled && status == string(corev1.ConditionTrue) {
			found, s = true, Stall{reason, msg}
		}
	}
	switch o := obj.(type) {
	case *appsv1.Deployment:
		for _, c := range o.Status.Conditions {
			visit(string(c.Type), string(c.Status), c.Reason, c.Message)
		}
	case *appsv1.ReplicaSet:
		for _, c := range o.Status.Conditions {
			visit(string(c.Type), string(c.Status), c.Reason, c.Message)
		}
	case *appsv1.StatefulSet:
		for _, c := range o.Status.Conditions {
			visit(string(c.Type), string(c.Status), c.Reason, c.Message)
		}
	case *corev1.Pod:
		for _, c := range o.Status.Conditions {
			visit(string(c.Type), string(c.Status), c.Reason, c.Message)
		}
	case *corev1.Node:
		for _, c := range o.Status.Conditions {
			visit(string(c.Type), string(c.Status), c.Reason, c.Message)
		}
	case *corev1.Service:
		for _, c := range o.Status.Conditions {
			visit(c.Type, string(c.Status), c.Reason, c.Message)
		}
	case *corev1.PersistentVolumeClaim:
		for _, c := range o.Status.Conditions {
			visit(string(c.Type), string(c.Status), c.Reason, c.Message)
		}
	}
	return s, found
}

// SetStalled sets (stall != nil) or removes (nil) obj's Stalled condition
// in place. It reports whether obj changed, and false for kinds without
// status conditions. A condition that only changes reason or message keeps
// its transition time.
func SetStalled(obj schema.Object, stall *Stall, now time.Time) bool {
	t := metav1.NewTime(now.Truncate(time.Second))
	var reason, msg string
	if stall != nil {
		reason, msg = stall.Reason, clip(stall.Message)
	}
	on := stall != nil
	switch o := obj.(type) {
	case *appsv1.Deployment:
		return upsert(&o.Status.Conditions, on, func(c *appsv1.DeploymentCondition) string { return string(c.Type) },
			func(c *appsv1.DeploymentCondition) bool { return c.Reason == reason && c.Message == msg },
			appsv1.DeploymentCondition{Type: ConditionStalled, Status: corev1.ConditionTrue, Reason: reason, Message: msg, LastUpdateTime: t, LastTransitionTime: t},
			func(c *appsv1.DeploymentCondition) {
				c.Reason, c.Message, c.LastUpdateTime = reason, msg, t
			})
	case *appsv1.ReplicaSet:
		return upsert(&o.Status.Conditions, on, func(c *appsv1.ReplicaSetCondition) string { return string(c.Type) },
			func(c *appsv1.ReplicaSetCondition) bool { return c.Reason == reason && c.Message == msg },
			appsv1.ReplicaSetCondition{Type: ConditionStalled, Status: corev1.ConditionTrue, Reason: reason, Message: msg, LastTransitionTime: t},
			func(c *appsv1.ReplicaSetCondition) { c.Reason, c.Message = reason, msg })
	case *appsv1.StatefulSet:
		return upsert(&o.Status.Conditions, on, func(c *appsv1.StatefulSetCondition) string { return string(c.Type) },
			func(c *appsv1.StatefulSetCondition) bool { return c.Reason == reason && c.Message == msg },
			appsv1.StatefulSetCondition{Type: ConditionStalled, Status: corev1.ConditionTrue, Reason: reason, Message: msg, LastTransitionTime: t},
			func(c *appsv1.StatefulSetCondition) { c.Reason, c.Message = reason, msg })
	case *corev1.Pod:
		return upsert(&o.Status.Conditions, on, func(c *corev1.PodCondition) string { return string(c.Type) },
			func(c *corev1.PodCondition) bool { return c.Reason == reason && c.Message == msg },
			corev1.PodCondition{Type: ConditionStalled, Status: corev1.ConditionTrue, Reason: reason, Message: msg, LastTransitionTime: t},
			func(c *corev1.PodCondition) { c.Reason, c.Message = reason, msg })
	case *corev1.Node:
		return upsert(&o.Status.Conditions, on, func(c *corev1.NodeCondition) string { return string(c.Type) },
			func(c *corev1.NodeCondition) bool { return c.Reason == reason && c.Message == msg },
			corev1.NodeCondition{Type: ConditionStalled, Status: corev1.ConditionTrue, Reason: reason, Message: msg, LastHeartbeatTime: t, LastTransitionTime: t},
			func(c *corev1.NodeCondition) { c.Reason, c.Message = reason, msg })
	case *corev1.Service:
		return upsert(&o.Status.Conditions, on, func(c *metav1.Condition) string { return c.Type },
			func(c *metav1.Condition) bool {
				return c.Reason == reason && c.Message == msg && c.ObservedGeneration == o.Generation
			},
			metav1.Condition{Type: ConditionStalled, Status: metav1.ConditionTrue, Reason: reason, Message: msg, LastTransitionTime: t, ObservedGeneration: o.Generation},
			func(c *metav1.Condition) { c.Reason, c.Message, c.ObservedGeneration = reason, msg, o.Generation })
	case *corev1.PersistentVolumeClaim:
		return upsert(&o.Status.Conditions, on, func(c *corev1.PersistentVolumeClaimCondition) string { return string(c.Type) },
			func(c *corev1.PersistentVolumeClaimCondition) bool { return c.Reason == reason && c.Message == msg },
			corev1.PersistentVolumeClaimCondition{Type: ConditionStalled, Status: corev1.ConditionTrue, Reason: reason, Message: msg, LastTransitionTime: t},
			func(c *corev1.PersistentVolumeClaimCondition) { c.Reason, c.Message = reason, msg })
	}
	return false
}

// upsert sets (on) or removes the Stalled condition of cs. A True one
// with the same reason and message (same) is left alone; one of another
// status is replaced by fresh; one with another reason or message is
// updated in place (update), keeping its transition time. It reports
// whether cs changed.
func upsert[C any](cs *[]C, on bool, typ func(*C) string, same func(*C) bool, fresh C, update func(*C)) bool {
	idx := -1
	for i := range *cs {
		if typ(&(*cs)[i]) == ConditionStalled {
			idx = i
			break
		}
	}
	if !on {
		if idx < 0 {
			return false
		}
		out := make([]C, 0, len(*cs)-1)
		out = append(out, (*cs)[:idx]...)
		*cs = append(out, (*cs)[idx+1:]...)
		return true
	}
	if idx < 0 {
		*cs = append(*cs, fresh)
		return true
	}
	cur := &(*cs)[idx]
	if statusOf(cur) != "True" {
		*cur = fresh
		return true
	}
	if same(cur) {
		return false
	}
	update(cur)
	return true
}

// statusOf reads the Status field of a condition of any of the kinds.
func statusOf(c any) string {
	switch c := c.(type) {
	case *appsv1.DeploymentCondition:
		return string(c.Status)
	case *appsv1.ReplicaSetCondition:
		return string(c.Status)
	case *appsv1.StatefulSetCondition:
		return string(c.Status)
	case *corev1.PodCondition:
		return string(c.Status)
	case *corev1.NodeCondition:
		return string(c.Status)
	case *metav1.Condition:
		return string(c.Status)
	case *corev1.PersistentVolumeClaimCondition:
		return string(c.Status)
	}
	return ""
}
