package volumes

import (
	"context"
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"

	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/schema"
	"github.com/flotilla-dev/flotilla/volumes/pvbinding"
)

// AnnotationProvisionedDir on a PersistentVolume says that Flotilla's local
// provisioner made it for a directory of its own (the value is that
// directory, equal to spec.local.path; any non-empty value counts): the
// agent creates the directory when it is missing, as a hostPath of type
// DirectoryOrCreate. Without it a local volume's path must exist, and a
// hostPath volume's is checked by its own type. pvbinding owns the name.
const AnnotationProvisionedDir = pvbinding.AnnProvisionedDir

// Objects reads API objects; store.Interface is one. Get returns an error
// wrapping store.ErrNotFound for a missing object.
type Objects interface {
	Get(ctx context.Context, resource, namespace, name string) (schema.Object, error)
}

// ClaimVolume is where a bound claim's data lives on this node.
type ClaimVolume struct {
	// PersistentVolume is the bound volume's name.
	PersistentVolume string
	// Path is the host directory that containers mount.
	Path string
	// Type is checked (and created) like a hostPath volume's type.
	Type corev1.HostPathType
}

// Claims resolves a pod's PersistentVolumeClaim to the host path of the
// PersistentVolume bound to it. It is the seam between the agent and PV/PVC
// binding: binding is the binder's business, the agent only reads the
// result.
//
// Resolve is called from the agent's pod workers, concurrently for
// different pods; it may block on the store as long as ctx allows. It
// returns a *WaitError while the claim is missing, not bound, being
// deleted, or its volume is missing or bound to another claim (the pod
// waits and the agent retries), and a *ConfigError when the volume is of a
// kind this node cannot mount.
type Claims interface {
	Resolve(ctx context.Context, namespace, claim string) (ClaimVolume, error)
}

// StoreClaims resolves claims from the objects in the store. What the binder
// and the provisioner must write for a claim to be mounted:
//
//   - the claim: spec.volumeName = the PersistentVolume's name (its
//     status.phase is not read);
//   - the PersistentVolume: spec.hostPath.path or spec.local.path (the
//     directory, on the node the pod runs on), volumeMode Filesystem (or
//     unset), and either no spec.claimRef or one naming this claim
//     (namespace and name; its uid, when both are set, must be the claim's);
//   - the annotation AnnotationProvisionedDir (non-empty) when the
//     directory is the provisioner's, to be created when missing.
func StoreClaims(objs Objects) Claims { return storeClaims{objs} }

type storeClaims struct{ objs Objects }

// Resolve implements Claims.
func (s storeClaims) Resolve(ctx context.Context, namespace, claim string) (ClaimVolume, error) {
	wait := func(format string, args ...any) (ClaimVolume, error) {
		return ClaimVolume{}, &WaitError{Msg: fmt.Sprintf(format, args...)}
	}
	obj, err := s.objs.Get(ctx, "persistentvolumeclaims", namespace, claim)
	if errors.Is(err, store.ErrNotFound) {
		return wait("waiting for claim %s: persistentvolumeclaim %s/%s not found", claim, namespace, claim)
	}
	if err != nil {
		return ClaimVolume{}, fmt.Errorf("read persistentvolumeclaim %s/%s: %w", namespace, claim, err)
	}
	pvc, ok := obj.(*corev1.PersistentVolumeClaim)
	if !ok {
		return ClaimVolume{}, fmt.Errorf("read persistentvolumeclaim %s/%s: got %T", namespace, claim, obj)
	}
	if pvc.DeletionTimestamp != nil {
		return wait("waiting for claim %s: it is being deleted", claim)
	}
	if pvc.Spec.VolumeName == "" {
		return wait("waiting for claim %s to be bound", claim)
	}
	obj, err = s.objs.Get(ctx, "persistentvolumes", "", pvc.Spec.VolumeName)
	if errors.Is(err, store.ErrNotFound) {
		return wait("waiting for claim %s: its persistentvolume %s not found", claim, pvc.Spec.VolumeName)
	}
	if err != nil {
		return ClaimVolume{}, fmt.Errorf("read persistentvolume %s: %w", pvc.Spec.VolumeName, err)
	}
	pv, ok := obj.(*corev1.PersistentVolume)
	if !ok {
		return ClaimVolume{}, fmt.Errorf("read persistentvolume %s: got %T", pvc.Spec.VolumeName, obj)
	}
	if ref := pv.Spec.ClaimRef; ref != nil {
		if ref.Namespace != namespace || ref.Name != claim || (ref.UID != "" && pvc.UID != "" && ref.UID != pvc.UID) {
			return wait("waiting for claim %s: persistentvolume %s is bound to claim %s/%s", claim, pv.Name, ref.Namespace, ref.Name)
		}
	}
	volume := "claim " + claim
	if pv.Spec.VolumeMode != nil && *pv.Spec.VolumeMode == corev1.PersistentVolumeBlock {
		return ClaimVolume{}, configErr(volume, "persistentvolume %s has volumeMode Block; Flotilla mounts only filesystems", pv.Name)
	}
	cv := ClaimVolume{PersistentVolume: pv.Name}
	switch {
	case pv.Spec.HostPath != nil:
		cv.Path = pv.Spec.HostPath.Path
		if t := pv.Spec.HostPath.Type; t != nil {
			cv.Type = *t
		}
	case pv.Spec.Local != nil:
		cv.Path, cv.Type = pv.Spec.Local.Path, corev1.HostPathDirectory
	default:
		return ClaimVolume{}, configErr(volume, "persistentvolume %s has neither hostPath nor local: Flotilla mounts only those", pv.Name)
	}
	if pv.Annotations[AnnotationProvisionedDir] != "" {
		cv.Type = corev1.HostPathDirectoryOrCreate
	}
	return cv, nil
}
