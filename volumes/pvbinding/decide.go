package pvbinding

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"

	"github.com/flotilla-dev/flotilla/schema"
)

// ClaimInput is what DecideClaim reads. Nothing in it is modified.
type ClaimInput struct {
	Claim   *corev1.PersistentVolumeClaim
	Volumes []*corev1.PersistentVolume
	Classes []*storagev1.StorageClass
	// SelectedNode is the node the claim's AnnSelectedNode names, nil when
	// the claim has no such annotation or the node does not exist.
	SelectedNode *corev1.Node
	// LocalVolumeRoot is where provisioned local volumes live on every
	// node (LocalPath). Default DefaultLocalVolumeRoot.
	LocalVolumeRoot string
}

// ClaimDecision is what becomes of a claim.
type ClaimDecision struct {
	// Volume is the volume to bind the claim to: an existing one, or with
	// Provision the new volume to create first (its claimRef already names
	// the claim). nil when the claim stays unbound.
	Volume    *corev1.PersistentVolume
	Provision bool
	// Phase is Bound with a Volume, else Pending or Lost.
	Phase corev1.PersistentVolumeClaimPhase
	// Reason and Message say why the claim is not bound (ConditionBound).
	Reason, Message string
}

func pending(reason, format string, args ...any) ClaimDecision {
	return ClaimDecision{Phase: corev1.ClaimPending, Reason: reason, Message: fmt.Sprintf(format, args...)}
}

func bind(pv *corev1.PersistentVolume) ClaimDecision {
	return ClaimDecision{Volume: pv, Phase: corev1.ClaimBound}
}

// DecideClaim decides a claim's binding, as Kubernetes' volume binder
// does:
//
//   - spec.volumeName set (bound, or pre-bound by the user): that volume,
//     when it exists and is free or already names the claim; a claim
//     that was Bound and lost its volume is Lost. A user's pre-binding
//     must satisfy the claim (Satisfies) but ignores the selector.
//   - a volume reserved for the claim (spec.claimRef naming it) and big
//     enough: that volume (also how a binding left half-written
//     completes).
//   - a WaitForFirstConsumer class and no node selected yet: Pending
//     (WaitForFirstConsumer); once the scheduler has selected a node,
//     only volumes reachable from it count.
//   - FindVolume: the smallest volume that satisfies the claim.
//   - else, for a class of the local provisioner with a selected node, a
//     new local volume on that node (LocalVolume); else Pending with the
//     reason (FailedBinding, ProvisioningFailed).
//
// The claim's class is ClaimClass with DefaultClass(Classes).
func DecideClaim(in ClaimInput) ClaimDecision {
	claim := in.Claim
	class := ClaimClass(claim, DefaultClass(in.Classes))
	if name := claim.Spec.VolumeName; name != "" {
		return decideNamed(claim, class, name, in.Volumes)
	}
	sc := FindClass(in.Classes, class)
	wffc := WaitForFirstConsumer(sc)
	var node *corev1.Node
	if wffc {
		selected := claim.Annotations[AnnSelectedNode]
		if selected == "" {
			var reserved []*corev1.PersistentVolume
			for _, pv := range in.Volumes {
				if pv.Spec.ClaimRef != nil && ClaimRefers(pv.Spec.ClaimRef, claim) {
					reserved = append(reserved, pv)
				}
			}
			if pv, _ := FindVolume(claim, class, reserved, nil, nil); pv != nil {
				return bind(pv)
			}
			return pending(ReasonWaitForFirstConsumer, "waiting for first consumer to be created before binding")
		}
		if in.SelectedNode == nil || in.SelectedNode.Name != selected {
			return pending(ReasonProvisioningFailed, "the selected node %s does not exist; the scheduler selects another", selected)
		}
		node = in.SelectedNode
	}
	pv, why := FindVolume(claim, class, in.Volumes, node, nil)
	if pv != nil {
		return bind(pv)
	}
	miss := fmt.Sprintf("no persistent volume satisfies the claim (%s): %s", Describe(claim, class), why)
	switch {
	case sc != nil && sc.Provisioner == LocalProvisioner:
		if !wffc {
			return pending(ReasonProvisioningFailed, "%s; storage class %q provisions local volumes (%s), which needs volumeBindingMode WaitForFirstConsumer: a local volume is created on the node of the first pod using the claim",
				miss, class, LocalProvisioner)
		}
		root := in.LocalVolumeRoot
		if root == "" {
			root = DefaultLocalVolumeRoot
		}
		v, err := LocalVolume(claim, sc, node.Name, root)
		if err != nil {
			return pending(ReasonProvisioningFailed, "%v", err)
		}
		return ClaimDecision{Volume: v, Provision: true, Phase: corev1.ClaimBound}
	case class == "":
		return pending(ReasonFailedBinding, "%s; no storage class is set, so none is provisioned", miss)
	case sc == nil:
		return pending(ReasonFailedBinding, "%s; storage class %q does not exist, so none is provisioned", miss, class)
	case sc.Provisioner == NoProvisioner:
		return pending(ReasonFailedBinding, "%s; storage class %q provisions nothing (%s): only existing volumes bind", miss, class, NoProvisioner)
	default:
		return pending(ReasonFailedBinding, "%s; storage class %q names provisioner %q, which Flotilla does not run (it runs %s): only existing volumes bind",
			miss, class, sc.Provisioner, LocalProvisioner)
	}
}

// decideNamed decides a claim whose spec.volumeName is set.
func decideNamed(claim *corev1.PersistentVolumeClaim, class, name string, volumes []*corev1.PersistentVolume) ClaimDecision {
	var pv *corev1.PersistentVolume
	for _, v := range volumes {
		if v.Name == name {
			pv = v
			break
		}
	}
	wasBound := claim.Status.Phase == corev1.ClaimBound || claim.Status.Phase == corev1.ClaimLost
	lost := func(format string, args ...any) ClaimDecision {
		return ClaimDecision{Phase: corev1.ClaimLost, Reason: ReasonClaimLost, Message: fmt.Sprintf(format, args...)}
	}
	switch {
	case pv == nil:
		if wasBound {
			return lost("the bound volume %s no longer exists: the claim's data is gone or must be restored under that name", name)
		}
		return pending(ReasonFailedBinding, "volume %s (spec.volumeName) does not exist", name)
	case pv.Spec.ClaimRef == nil:
		if !wasBound {
			if why := Satisfies(claim, class, pv); why != "" {
				return pending(ReasonVolumeMismatch, "cannot bind to volume %s (spec.volumeName): %s", name, why)
			}
		}
		return bind(pv)
	case ClaimRefers(pv.Spec.ClaimRef, claim):
		return bind(pv)
	case wasBound:
		return lost("the bound volume %s now belongs to claim %s", name, ClaimKey(pv.Spec.ClaimRef))
	default:
		return pending(ReasonFailedBinding, "volume %s (spec.volumeName) is bound to claim %s", name, ClaimKey(pv.Spec.ClaimRef))
	}
}

// VolumeInput is what DecideVolume reads. Nothing in it is modified.
type VolumeInput struct {
	Volume *corev1.PersistentVolume
	// Claim is the claim spec.claimRef names (by namespace and name), nil
	// when there is none.
	Claim *corev1.PersistentVolumeClaim
	// ClaimInUse: pods that have not finished still name the claim (see
	// PodsUsingClaim). A volume whose claim is gone is not deleted while
	// they run: their mounts still use it.
	ClaimInUse bool
}

// VolumeDecision is what becomes of a volume.
type VolumeDecision struct {
	Phase           corev1.PersistentVolumePhase
	Reason, Message string
	// Unbind clears spec.claimRef: the binder bound the volume to a claim
	// that went to another volume.
	Unbind bool
	// Delete deletes the volume (reclaimPolicy Delete, claim gone). For a
	// provisioned local volume the node's agent then removes its
	// directory (AnnProvisionedDir).
	Delete bool
}

// DecideVolume decides a volume's phase and reclaim:
//
//   - no claimRef: Available;
//   - reserved (a claimRef without UID): Available until the claim binds
//     it, then Bound;
//   - its claim exists (same UID): Bound; if the claim went to another
//     volume and the binder made this binding, it is undone (Available);
//   - its claim is gone (or is a new claim of the same name): Released,
//     then by spec.persistentVolumeReclaimPolicy: Retain (the default of
//     a volume made by hand) keeps it Released with its data; Delete
//     deletes it once no pod uses the claim, except a volume from Git,
//     which stays Released (Git owns it: remove it there); Recycle is not
//     supported and is kept as Retain.
func DecideVolume(in VolumeInput) VolumeDecision {
	pv, claim := in.Volume, in.Claim
	ref := pv.Spec.ClaimRef
	available := func(format string, args ...any) VolumeDecision {
		return VolumeDecision{Phase: corev1.VolumeAvailable, Message: fmt.Sprintf(format, args...)}
	}
	if ref == nil {
		return VolumeDecision{Phase: corev1.VolumeAvailable}
	}
	who := ClaimKey(ref)
	if claim != nil && ClaimRefers(ref, claim) {
		switch claim.Spec.VolumeName {
		case pv.Name:
			return VolumeDecision{Phase: corev1.VolumeBound}
		case "":
			if ref.UID == "" {
				return available("reserved for claim %s", who)
			}
			return VolumeDecision{Phase: corev1.VolumeBound} // the claim's side follows
		default:
			if pv.Annotations[AnnBoundByController] == "yes" {
				return VolumeDecision{Phase: corev1.VolumeAvailable, Unbind: true}
			}
			return available("reserved for claim %s, which is bound to volume %s", who, claim.Spec.VolumeName)
		}
	}
	if ref.UID == "" {
		return available("reserved for claim %s, which does not exist yet", who)
	}
	released := func(reason, format string, args ...any) VolumeDecision {
		return VolumeDecision{Phase: corev1.VolumeReleased, Reason: reason, Message: fmt.Sprintf(format, args...)}
	}
	switch ReclaimPolicy(pv) {
	case corev1.PersistentVolumeReclaimDelete:
		if pv.Annotations[schema.AnnotationManagedBy] == schema.ManagedByGit {
			return released("Retained", "claim %s is gone; reclaimPolicy is Delete but the volume comes from Git, so it is kept with its data: remove it from the repository", who)
		}
		if in.ClaimInUse {
			return released("InUse", "claim %s is gone; the volume is deleted once the pods still using it have ended", who)
		}
		return VolumeDecision{Phase: corev1.VolumeReleased, Delete: true}
	case corev1.PersistentVolumeReclaimRecycle:
		return released("Retained", "claim %s is gone; reclaimPolicy Recycle is not supported, so the volume is kept with its data as with Retain", who)
	default:
		return released("Retained", "claim %s is gone; reclaimPolicy Retain keeps the volume and its data: to use it again, delete it and create it anew (in Git: remove it in one commit, add it back in the next)", who)
	}
}

// PodsUsingClaim returns the pods of namespace that have not finished
// and name the claim in a persistentVolumeClaim volume.
func PodsUsingClaim(pods []*corev1.Pod, namespace, claim string) []*corev1.Pod {
	var out []*corev1.Pod
	for _, p := range pods {
		if p.Namespace != namespace || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		for _, v := range p.Spec.Volumes {
			if v.PersistentVolumeClaim != nil && v.PersistentVolumeClaim.ClaimName == claim {
				out = append(out, p)
				break
			}
		}
	}
	return out
}
