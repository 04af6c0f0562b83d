package admission

import (
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	storagev1 "k8s.io/api/storage/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/flotilla-dev/flotilla/schema"
)

// immutable refuses updates of the fields Kubernetes makes immutable, with
// its words: workload selectors, a StatefulSet's serviceName,
// podManagementPolicy and volumeClaimTemplates, a claim's spec but a
// growing storage request (and its volume, set once), a volume's source,
// a pod's spec but the fields Kubernetes lets change (and its node, set
// once: the binding), a Node's pod CIDRs once set, the data of an
// immutable ConfigMap or Secret, a Secret's type, a StorageClass, an
// EndpointSlice's address type. (A Service's cluster IP is the services
// plugin's.) Any origin, Git included: Git cannot change them either.
type immutable struct{}

func (immutable) name() string { return "immutable" }

func (immutable) admit(_ Reader, ws []*Write) error {
	for _, w := range ws {
		if w.Op != Update || w.Status || w.Old == nil || w.Refused() {
			continue
		}
		if w.bodyUnchanged() {
			// Every immutable field is in the body: only a pod's node may
			// have changed (the hot path: a binding).
			if p, ok := w.Object.(*corev1.Pod); ok {
				w.Errs = append(w.Errs, nodeNameUpdate(w.Old.(*corev1.Pod), p)...)
			}
			continue
		}
		errs := immutableErrs(w.Old, w.Object)
		if len(errs) > 0 {
			// An object stored before defaults existed: compare it as it
			// would be stored now, so that defaults are never a change.
			d := schema.Copy(w.Old)
			schema.SetDefaults(d)
			errs = immutableErrs(d, w.Object)
		}
		w.Errs = append(w.Errs, errs...)
	}
	return nil
}

var spec = field.NewPath("spec")

func immutableField(newVal, oldVal any, p *field.Path) field.ErrorList {
	if apiequality.Semantic.DeepEqual(newVal, oldVal) {
		return nil
	}
	return field.ErrorList{field.Invalid(p, newVal, "field is immutable")}
}

func immutableErrs(oldObj, obj schema.Object) field.ErrorList {
	switch o := obj.(type) {
	case *appsv1.Deployment:
		return immutableField(o.Spec.Selector, oldObj.(*appsv1.Deployment).Spec.Selector, spec.Child("selector"))
	case *appsv1.ReplicaSet:
		return immutableField(o.Spec.Selector, oldObj.(*appsv1.ReplicaSet).Spec.Selector, spec.Child("selector"))
	case *appsv1.StatefulSet:
		return statefulSetUpdate(oldObj.(*appsv1.StatefulSet), o)
	case *corev1.Pod:
		return podUpdate(oldObj.(*corev1.Pod), o)
	case *corev1.PersistentVolumeClaim:
		return claimUpdate(oldObj.(*corev1.PersistentVolumeClaim), o)
	case *corev1.PersistentVolume:
		old := oldObj.(*corev1.PersistentVolume)
		errs := immutableField(o.Spec.PersistentVolumeSource, old.Spec.PersistentVolumeSource, spec.Child("persistentVolumeSource"))
		return append(errs, immutableField(o.Spec.VolumeMode, old.Spec.VolumeMode, spec.Child("volumeMode"))...)
	case *corev1.Node:
		old := oldObj.(*corev1.Node)
		var errs field.ErrorList
		if old.Spec.PodCIDR != "" {
			errs = append(errs, immutableField(o.Spec.PodCIDR, old.Spec.PodCIDR, spec.Child("podCIDR"))...)
		}
		if len(old.Spec.PodCIDRs) > 0 {
			errs = append(errs, immutableField(o.Spec.PodCIDRs, old.Spec.PodCIDRs, spec.Child("podCIDRs"))...)
		}
		return errs
	case *corev1.ConfigMap:
		old := oldObj.(*corev1.ConfigMap)
		if old.Immutable == nil || !*old.Immutable {
			return nil
		}
		errs := immutableField(o.Immutable, old.Immutable, field.NewPath("immutable"))
		if !apiequality.Semantic.DeepEqual(o.Data, old.Data) {
			errs = append(errs, field.Forbidden(field.NewPath("data"), "field is immutable when `immutable` is set"))
		}
		if !apiequality.Semantic.DeepEqual(o.BinaryData, old.BinaryData) {
			errs = append(errs, field.Forbidden(field.NewPath("binaryData"), "field is immutable when `immutable` is set"))
		}
		return errs
	case *corev1.Secret:
		old := oldObj.(*corev1.Secret)
		errs := immutableField(o.Type, old.Type, field.NewPath("type"))
		if old.Immutable == nil || !*old.Immutable {
			return errs
		}
		errs = append(errs, immutableField(o.Immutable, old.Immutable, field.NewPath("immutable"))...)
		data := o.Data
		if len(o.StringData) > 0 { // merged after this check: compare what will be stored
			data = map[string][]byte{}
			for k, v := range o.Data {
				data[k] = v
			}
			for k, v := range o.StringData {
				data[k] = []byte(v)
			}
		}
		if !apiequality.Semantic.DeepEqual(data, old.Data) {
			errs = append(errs, field.Forbidden(field.NewPath("data"), "field is immutable when `immutable` is set"))
		}
		return errs
	case *storagev1.StorageClass:
		old := oldObj.(*storagev1.StorageClass)
		errs := immutableField(o.Provisioner, old.Provisioner, field.NewPath("provisioner"))
		if !apiequality.Semantic.DeepEqual(o.Parameters, old.Parameters) {
			errs = append(errs, field.Forbidden(field.NewPath("parameters"), "updates to parameters are forbidden."))
		}
		errs = append(errs, immutableField(o.ReclaimPolicy, old.ReclaimPolicy, field.NewPath("reclaimPolicy"))...)
		return append(errs, immutableField(o.VolumeBindingMode, old.VolumeBindingMode, field.NewPath("volumeBindingMode"))...)
	case *rbacv1.RoleBinding:
		return immutableField(o.RoleRef, oldObj.(*rbacv1.RoleBinding).RoleRef, field.NewPath("roleRef"))
	case *rbacv1.ClusterRoleBinding:
		return immutableField(o.RoleRef, oldObj.(*rbacv1.ClusterRoleBinding).RoleRef, field.NewPath("roleRef"))
	case *discoveryv1.EndpointSlice:
		return immutableField(o.AddressType, oldObj.(*discoveryv1.EndpointSlice).AddressType, field.NewPath("addressType"))
	}
	return nil
}

func statefulSetUpdate(old, s *appsv1.StatefulSet) field.ErrorList {
	errs := immutableField(s.Spec.Selector, old.Spec.Selector, spec.Child("selector"))
	errs = append(errs, immutableField(s.Spec.ServiceName, old.Spec.ServiceName, spec.Child("serviceName"))...)
	errs = append(errs, immutableField(s.Spec.PodManagementPolicy, old.Spec.PodManagementPolicy, spec.Child("podManagementPolicy"))...)
	if !apiequality.Semantic.DeepEqual(s.Spec.VolumeClaimTemplates, old.Spec.VolumeClaimTemplates) {
		errs = append(errs, field.Forbidden(spec.Child("volumeClaimTemplates"),
			"updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', "+
				"'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden"))
	}
	return errs
}

func claimUpdate(old, c *corev1.PersistentVolumeClaim) field.ErrorList {
	var errs field.ErrorList
	was, now := old.Spec, c.Spec // shallow copies, made comparable below
	if was.VolumeName == "" {
		was.VolumeName = now.VolumeName // a claim is bound once
	}
	was.VolumeAttributesClassName = now.VolumeAttributesClassName
	oldReq, newReq := was.Resources.Requests[corev1.ResourceStorage], now.Resources.Requests[corev1.ResourceStorage]
	if newReq.Cmp(oldReq) < 0 {
		errs = append(errs, field.Forbidden(spec.Child("resources", "requests").Key(string(corev1.ResourceStorage)),
			fmt.Sprintf("field can not be less than previous value (%s): a claim may only grow", oldReq.String())))
	}
	if !apiequality.Semantic.DeepEqual(withoutStorage(was), withoutStorage(now)) {
		errs = append(errs, field.Forbidden(spec,
			"spec is immutable after creation except resources.requests (storage may grow) and volumeAttributesClassName"))
	}
	return errs
}

// withoutStorage is a claim spec with its storage request taken out.
func withoutStorage(s corev1.PersistentVolumeClaimSpec) corev1.PersistentVolumeClaimSpec {
	req := corev1.ResourceList{}
	for k, v := range s.Resources.Requests {
		if k != corev1.ResourceStorage {
			req[k] = v
		}
	}
	s.Resources.Requests = req
	return s
}

// podUpdate is Kubernetes' rule for pod updates: only the images, the
// active deadline, added tolerations, removed scheduling gates may
// change; the node is set once, by the binding.
func podUpdate(old, p *corev1.Pod) field.ErrorList {
	errs := nodeNameUpdate(old, p)
	was, now := old.Spec, p.Spec // shallow copies: only top-level fields are set
	was.NodeName, now.NodeName = "", ""
	if apiequality.Semantic.DeepEqual(was, now) {
		return errs
	}
	// The slow path: copy the mutable fields of the update into the old
	// spec and compare.
	w := old.Spec.DeepCopy()
	w.NodeName = ""
	if len(w.Containers) == len(now.Containers) {
		for i := range w.Containers {
			w.Containers[i].Image = now.Containers[i].Image
		}
	}
	if len(w.InitContainers) == len(now.InitContainers) {
		for i := range w.InitContainers {
			w.InitContainers[i].Image = now.InitContainers[i].Image
		}
	}
	if now.ActiveDeadlineSeconds != nil && (w.ActiveDeadlineSeconds == nil || *now.ActiveDeadlineSeconds <= *w.ActiveDeadlineSeconds) {
		w.ActiveDeadlineSeconds = now.ActiveDeadlineSeconds
	}
	if len(now.Tolerations) >= len(w.Tolerations) && apiequality.Semantic.DeepEqual(now.Tolerations[:len(w.Tolerations)], w.Tolerations) {
		w.Tolerations = now.Tolerations // additions only
	}
	if len(now.SchedulingGates) <= len(w.SchedulingGates) {
		w.SchedulingGates = now.SchedulingGates // removals only
	}
	if !apiequality.Semantic.DeepEqual(*w, now) {
		errs = append(errs, field.Forbidden(spec, "pod updates may not change fields other than `spec.containers[*].image`, "+
			"`spec.initContainers[*].image`, `spec.activeDeadlineSeconds`, `spec.tolerations` (only additions to existing tolerations) "+
			"and `spec.schedulingGates` (only removals); delete the pod and create it anew"))
	}
	return errs
}

// nodeNameUpdate is the binding rule: a pod's node is set once.
func nodeNameUpdate(old, p *corev1.Pod) field.ErrorList {
	if old.Spec.NodeName != "" && p.Spec.NodeName != old.Spec.NodeName {
		return field.ErrorList{field.Invalid(spec.Child("nodeName"), p.Spec.NodeName,
			fmt.Sprintf("may not change once the pod is bound (to %s): delete the pod to move it", old.Spec.NodeName))}
	}
	return nil
}
