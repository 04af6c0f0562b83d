package apiserver

import (
	"strconv"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/selection"

	"github.com/flotilla-dev/flotilla/schema"
)

// The store filters by metadata.name, metadata.namespace, (pods)
// spec.nodeName and (Secrets) type. The server adds the other field selectors kubectl and
// controllers use (events by involvedObject for `kubectl describe`, pods by
// status.phase, …) and filters those itself.

// storeField says whether the store filters by field for resource.
func storeField(resource, field string) bool {
	return field == "metadata.name" || field == "metadata.namespace" ||
		(field == "spec.nodeName" && resource == "pods") || (field == "type" && resource == "secrets")
}

// fieldSet is every field an object of its kind can be selected by.
func fieldSet(obj schema.Object) fields.Set {
	set := fields.Set{"metadata.name": obj.GetName(), "metadata.namespace": obj.GetNamespace()}
	switch o := obj.(type) {
	case *corev1.Pod:
		set["spec.nodeName"] = o.Spec.NodeName
		set["spec.restartPolicy"] = string(o.Spec.RestartPolicy)
		set["spec.schedulerName"] = o.Spec.SchedulerName
		set["spec.serviceAccountName"] = o.Spec.ServiceAccountName
		set["status.phase"] = string(o.Status.Phase)
		set["status.podIP"] = o.Status.PodIP
		set["status.nominatedNodeName"] = o.Status.NominatedNodeName
	case *corev1.Event:
		set["involvedObject.kind"] = o.InvolvedObject.Kind
		set["involvedObject.namespace"] = o.InvolvedObject.Namespace
		set["involvedObject.name"] = o.InvolvedObject.Name
		set["involvedObject.uid"] = string(o.InvolvedObject.UID)
		set["involvedObject.apiVersion"] = o.InvolvedObject.APIVersion
		set["involvedObject.resourceVersion"] = o.InvolvedObject.ResourceVersion
		set["involvedObject.fieldPath"] = o.InvolvedObject.FieldPath
		set["reason"] = o.Reason
		set["reportingComponent"] = o.ReportingController
		set["source"] = o.Source.Component
		set["type"] = o.Type
	case *corev1.Secret:
		set["type"] = string(o.Type)
	case *corev1.Namespace:
		set["status.phase"] = string(o.Status.Phase)
	case *corev1.Node:
		set["spec.unschedulable"] = strconv.FormatBool(o.Spec.Unschedulable)
	case *corev1.PersistentVolumeClaim:
		set["spec.volumeName"] = o.Spec.VolumeName
	}
	return set
}

// splitFields parses a field selector into the part the store applies
// (as a selector string) and the part the server applies (nil: none).
// Fields no object of the kind has are a 400, as in Kubernetes.
func splitFields(k schema.Kind, selector string) (string, fields.Selector, error) {
	sel, err := fields.ParseSelector(selector)
	if err != nil {
		return "", nil, badRequest("invalid field selector: %v", err)
	}
	known := fieldSet(k.New())
	var inStore, here []fields.Selector
	for _, r := range sel.Requirements() {
		if _, ok := known[r.Field]; !ok {
			return "", nil, badRequest("field label not supported: %s", r.Field)
		}
		var one fields.Selector
		switch r.Operator {
		case selection.Equals, selection.DoubleEquals:
			one = fields.OneTermEqualSelector(r.Field, r.Value)
		case selection.NotEquals:
			one = fields.OneTermNotEqualSelector(r.Field, r.Value)
		default:
			return "", nil, badRequest("invalid field selector operator %q", r.Operator)
		}
		if storeField(k.Resource, r.Field) {
			inStore = append(inStore, one)
		} else {
			here = append(here, one)
		}
	}
	storeSel := ""
	if len(inStore) > 0 {
		storeSel = fields.AndSelectors(inStore...).String()
	}
	if len(here) == 0 {
		return storeSel, nil, nil
	}
	return storeSel, fields.AndSelectors(here...), nil
}

// keep filters objs by the server-side field selector.
func keep(sel fields.Selector, obj schema.Object) bool {
	return sel == nil || sel.Matches(fieldSet(obj))
}
