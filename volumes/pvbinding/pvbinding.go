// Package pvbinding is the pure rules of persistent storage: which
// StorageClass a claim means, which PersistentVolume a claim binds to (the
// smallest that satisfies it), what becomes of a volume whose claim is
// gone, the local volume the flotilla.dev/local-path provisioner creates,
// and the volume topology the scheduler honours. No I/O: the binder
// (reconciler/volumebinding), the scheduler and the node agent share these
// rules and the annotations below, which are the contract between them.
package pvbinding

import (
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The built-in StorageClass and its provisioner.
const (
	// DefaultClassName is the built-in default StorageClass: local
	// directories on the node a claim's first pod is scheduled to. It
	// exists without being in Git (the binder creates it when missing);
	// a repository cannot define a class of this name.
	DefaultClassName = "local"
	// LocalProvisioner provisions local volumes: a directory per volume
	// on one node (LocalPath), created by that node's agent.
	LocalProvisioner = "flotilla.dev/local-path"
	// NoProvisioner is Kubernetes' name for classes of pre-created
	// volumes only.
	NoProvisioner = "kubernetes.io/no-provisioner"
	// DefaultLocalVolumeRoot is where provisioned local volumes live on
	// every node, below a directory per node (LocalPath).
	DefaultLocalVolumeRoot = "/var/lib/flotilla/volumes"
)

// Annotations, with Kubernetes' names where Kubernetes has one.
const (
	// AnnDefaultClass marks the default StorageClass, value "true".
	AnnDefaultClass = "storageclass.kubernetes.io/is-default-class"
	// AnnSelectedNode is set on a claim of a WaitForFirstConsumer class
	// by the scheduler: the node its first pod goes to, where the
	// provisioner creates the volume.
	AnnSelectedNode = "volume.kubernetes.io/selected-node"
	// AnnProvisionedBy is set on provisioned volumes: the provisioner.
	AnnProvisionedBy = "pv.kubernetes.io/provisioned-by"
	// AnnBoundByController ("yes") on a volume or claim says the binder
	// made the binding (it may undo it), not the user's manifest.
	AnnBoundByController = "pv.kubernetes.io/bound-by-controller"
	// AnnBindCompleted ("yes") on a claim says its binding is complete.
	AnnBindCompleted = "pv.kubernetes.io/bind-completed"
	// AnnProvisionedDir is set on volumes that LocalProvisioner created:
	// the absolute directory on the volume's node (equal to
	// spec.local.path). The node agent creates it before the first mount
	// and removes it when the volume is deleted; volumes without it are
	// the user's, and the agent never creates or removes their paths.
	AnnProvisionedDir = "flotilla.dev/provisioned-dir"
)

// Condition of a claim that is not bound, with why (kubectl describe
// shows a claim's conditions).
const (
	// ConditionBound is the claim condition type the binder sets to False,
	// with a reason below, while the claim is not bound; it is removed
	// once the claim is Bound.
	ConditionBound corev1.PersistentVolumeClaimConditionType = "Bound"

	ReasonWaitForFirstConsumer = "WaitForFirstConsumer"
	ReasonFailedBinding        = "FailedBinding"
	ReasonVolumeMismatch       = "VolumeMismatch"
	ReasonProvisioning         = "Provisioning"
	ReasonProvisioningFailed   = "ProvisioningFailed"
	ReasonClaimLost            = "ClaimLost"
)

// BuiltinClass returns the built-in default StorageClass "local":
// provisioner flotilla.dev/local-path, WaitForFirstConsumer (a local
// volume lives where its first pod runs), reclaimPolicy Delete.
func BuiltinClass() *storagev1.StorageClass {
	del := corev1.PersistentVolumeReclaimDelete
	wait := storagev1.VolumeBindingWaitForFirstConsumer
	return &storagev1.StorageClass{
		TypeMeta: metav1.TypeMeta{APIVersion: "storage.k8s.io/v1", Kind: "StorageClass"},
		ObjectMeta: metav1.ObjectMeta{
			Name:        DefaultClassName,
			Annotations: map[string]string{AnnDefaultClass: "true"},
		},
		Provisioner:       LocalProvisioner,
		ReclaimPolicy:     &del,
		VolumeBindingMode: &wait,
	}
}

// WithBuiltin returns classes with BuiltinClass added when no class is
// named DefaultClassName: the built-in class is always meant to exist (the
// binder creates it at start and whenever it is deleted), so a view that
// has not seen it yet (a cache just started on an empty store) must not
// judge claims without it.
func WithBuiltin(classes []*storagev1.StorageClass) []*storagev1.StorageClass {
	for _, sc := range classes {
		if sc.Name == DefaultClassName {
			return classes
		}
	}
	return append(classes[:len(classes):len(classes)], BuiltinClass())
}

// IsDefaultClass reports whether sc is marked as the default class.
func IsDefaultClass(sc *storagev1.StorageClass) bool {
	return sc.Annotations[AnnDefaultClass] == "true"
}

// DefaultClass is the name of the class a claim without
// storageClassName gets, "" when no class is marked default: among the
// classes marked default, one from the user (Git) wins over the built-in
// "local"; among several, the newest, then the first by name (Kubernetes
// also picks the newest default).
func DefaultClass(classes []*storagev1.StorageClass) string {
	var best *storagev1.StorageClass
	for _, sc := range classes {
		if !IsDefaultClass(sc) {
			continue
		}
		if best == nil || betterDefault(sc, best) {
			best = sc
		}
	}
	if best == nil {
		return ""
	}
	return best.Name
}

func betterDefault(a, b *storagev1.StorageClass) bool {
	if (a.Name == DefaultClassName) != (b.Name == DefaultClassName) {
		return b.Name == DefaultClassName
	}
	if !a.CreationTimestamp.Equal(&b.CreationTimestamp) {
		return b.CreationTimestamp.Before(&a.CreationTimestamp)
	}
	return a.Name < b.Name
}

// ClaimClass is the class a claim asks for: spec.storageClassName, or
// when that is unset (nil) the default class (Kubernetes' DefaultStorageClass
// admission; here applied when binding, so the stored claim is left as
// Git wrote it). An explicit "" means no class: only volumes without a
// class bind to it.
func ClaimClass(claim *corev1.PersistentVolumeClaim, defaultClass string) string {
	if claim.Spec.StorageClassName == nil {
		return defaultClass
	}
	return *claim.Spec.StorageClassName
}

// VolumeClass is a volume's class, "" for none.
func VolumeClass(pv *corev1.PersistentVolume) string {
	return pv.Spec.StorageClassName
}

// FindClass returns the class of that name, nil when absent.
func FindClass(classes []*storagev1.StorageClass, name string) *storagev1.StorageClass {
	if name == "" {
		return nil
	}
	for _, sc := range classes {
		if sc.Name == name {
			return sc
		}
	}
	return nil
}

// WaitForFirstConsumer reports whether a class delays binding until a pod
// using the claim is scheduled. A missing class (nil) binds at once, as
// in Kubernetes.
func WaitForFirstConsumer(sc *storagev1.StorageClass) bool {
	return sc != nil && sc.VolumeBindingMode != nil && *sc.VolumeBindingMode == storagev1.VolumeBindingWaitForFirstConsumer
}

// ReclaimPolicy is a volume's reclaim policy; unset means Retain, the
// default of a volume created by hand.
func ReclaimPolicy(pv *corev1.PersistentVolume) corev1.PersistentVolumeReclaimPolicy {
	if p := pv.Spec.PersistentVolumeReclaimPolicy; p != "" {
		return p
	}
	return corev1.PersistentVolumeReclaimRetain
}

// ClaimRefers reports whether ref names claim: same namespace and name,
// and the same UID when ref has one (a ref without a UID reserves the
// volume for a claim of that name, even one not created yet).
func ClaimRefers(ref *corev1.ObjectReference, claim *corev1.PersistentVolumeClaim) bool {
	return ref != nil && ref.Namespace == claim.Namespace && ref.Name == claim.Name &&
		(ref.UID == "" || ref.UID == claim.UID)
}

// ClaimRef is the reference a bound volume keeps to its claim.
func ClaimRef(claim *corev1.PersistentVolumeClaim) *corev1.ObjectReference {
	return &corev1.ObjectReference{Kind: "PersistentVolumeClaim", APIVersion: "v1",
		Namespace: claim.Namespace, Name: claim.Name, UID: claim.UID}
}

// ClaimKey is "namespace/name" of the claim a volume refers to.
func ClaimKey(ref *corev1.ObjectReference) string { return ref.Namespace + "/" + ref.Name }
