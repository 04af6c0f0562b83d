package admission

import (
	"fmt"
	"slices"

	corev1 "k8s.io/api/core/v1"

	"github.com/flotilla-dev/flotilla/cluster/auth"
)

// nodeRestriction is Kubernetes' NodeRestriction for what the Node
// authorizer cannot see, the content of a node's writes: a node may create
// or change only its own Node, and not what the server decides about it —
// the key its name is bound to and its pod CIDRs (the overlay routes by
// them) — may write the status only of pods bound to it, and keep only its
// own Lease.
type nodeRestriction struct{}

func (nodeRestriction) name() string { return "NodeRestriction" }

func (nodeRestriction) admit(r Reader, ws []*Write) error {
	for _, w := range ws {
		if w.User == nil || w.Refused() {
			continue
		}
		node, ok := auth.NodeName(w.User)
		if !ok {
			continue
		}
		deny := func(format string, args ...any) {
			w.deny(Forbidden(w.Kind, w.name(), fmt.Sprintf("node %q "+format, append([]any{node}, args...)...)))
		}
		switch w.Kind.Resource {
		case "nodes":
			if w.name() != node {
				deny("may not modify node %q", w.name())
				continue
			}
			n, _ := w.Object.(*corev1.Node)
			old, _ := w.Old.(*corev1.Node)
			if n == nil {
				continue
			}
			var oldKey, oldCIDR string
			var oldCIDRs []string
			if old != nil {
				oldKey, oldCIDR, oldCIDRs = old.Annotations[auth.AnnotationNodeKey], old.Spec.PodCIDR, old.Spec.PodCIDRs
			}
			switch {
			case n.Annotations[auth.AnnotationNodeKey] != oldKey:
				deny("may not set its own %s: the server binds the name to the key of its first certificate", auth.AnnotationNodeKey)
			case n.Spec.PodCIDR != oldCIDR || !slices.Equal(n.Spec.PodCIDRs, oldCIDRs):
				deny("may not set its own pod CIDRs: the server allocates them")
			}
		case "leases":
			if w.Object != nil && (w.Object.GetNamespace() != auth.NodeLeaseNamespace || w.name() != node) {
				deny("may only keep its own Lease, %s/%s", auth.NodeLeaseNamespace, node)
			}
		case "events":
			// Events only about itself or the pods bound to it (Kubernetes
			// lets a node write any Event; Flotilla does not).
			ev, _ := w.Object.(*corev1.Event)
			if ev == nil {
				deny("may not delete events")
				continue
			}
			if why := nodeEventRefused(r, node, ev); why != "" {
				deny("may only report events about itself or pods bound to it: %s", why)
			}
		case "pods":
			// The stored pod says where it is bound (a status write keeps
			// the spec as stored).
			old, _ := w.Old.(*corev1.Pod)
			if w.Op != Update || !w.Status || old == nil || old.Spec.NodeName != node {
				deny("may only write the status of pods bound to it")
			}
		}
	}
	return nil
}

// nodeEventRefused says why node may not write ev ("": it may).
func nodeEventRefused(r Reader, node string, ev *corev1.Event) string {
	ref := ev.InvolvedObject
	switch {
	case ref.Kind == "Node" && (ref.APIVersion == "" || ref.APIVersion == "v1"):
		if ref.Name != node {
			return fmt.Sprintf("the event is about node %q", ref.Name)
		}
		return ""
	case ref.Kind == "Pod" && (ref.APIVersion == "" || ref.APIVersion == "v1"):
		o, err := r.Get("pods", ev.Namespace, ref.Name)
		if err != nil {
			return fmt.Sprintf("pod %s/%s: %v", ev.Namespace, ref.Name, err)
		}
		if p, _ := o.(*corev1.Pod); p == nil || p.Spec.NodeName != node || (ref.UID != "" && ref.UID != p.UID) {
			return fmt.Sprintf("pod %s/%s is not bound to it", ev.Namespace, ref.Name)
		}
		return ""
	}
	return fmt.Sprintf("the event is about a %s", ref.Kind)
}
