package volumebinding

import (
	corev1 "k8s.io/api/core/v1"

	"github.com/flotilla-dev/flotilla/gitsync"
	"github.com/flotilla-dev/flotilla/schema"
)

// AdmitGit is a gitsync admission hook (chain it into gitsync.Config.Admit
// with gitsync.ChainAdmit): it keeps the bindings the binder wrote when a
// commit rewrites a volume or a claim from Git. The sync writes a changed
// object's spec whole, as Git has it, and Git never has the binding the
// cluster made: spec.claimRef of a PersistentVolume and spec.volumeName
// of a PersistentVolumeClaim. Like `kubectl apply`, which leaves fields
// it never set alone, the hook carries the stored value over when Git's
// object leaves the field empty; a value Git sets (a pre-binding) wins.
//
// Without the hook a rewritten binding would heal anyway (the binder
// binds a claim to the volume that still names it, and a bound claim's
// volume back to it), but a Released volume would lose its claimRef and
// could be bound to another claim, data and all. The hook refuses
// nothing and reads nothing from r.
func AdmitGit(_ gitsync.Reader, objs []gitsync.Admission) (schema.Problems, error) {
	for _, o := range objs {
		if o.Object == nil || o.Stored == nil {
			continue
		}
		switch obj := o.Object.(type) {
		case *corev1.PersistentVolume:
			if old, ok := o.Stored.(*corev1.PersistentVolume); ok && obj.Spec.ClaimRef == nil && old.Spec.ClaimRef != nil {
				obj.Spec.ClaimRef = old.Spec.ClaimRef.DeepCopy()
			}
		case *corev1.PersistentVolumeClaim:
			if old, ok := o.Stored.(*corev1.PersistentVolumeClaim); ok && obj.Spec.VolumeName == "" && old.Spec.VolumeName != "" {
				obj.Spec.VolumeName = old.Spec.VolumeName
			}
		}
	}
	return nil, nil
}

// Interface guard: AdmitGit is a gitsync admission hook.
var _ gitsync.AdmitFunc = AdmitGit
