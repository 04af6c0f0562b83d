package pvbinding

import (
	"errors"
	"fmt"
	"path/filepath"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// LocalPath is the directory of a provisioned local volume on its node:
// ROOT/NODE/VOLUME. The node's name is in the path so that nodes sharing
// one filesystem (flotilla lab, or a shared root) never share a volume's
// directory; on a host of its own a node uses only its own subdirectory.
func LocalPath(root, node, volume string) string {
	return filepath.Join(root, node, volume)
}

// VolumeName is the name of the volume provisioned for a claim,
// "pvc-<claim UID>" as in Kubernetes: a new claim of the same name gets a
// new volume, and a retried provisioning finds the volume it created.
func VolumeName(claim *corev1.PersistentVolumeClaim) string {
	return "pvc-" + string(claim.UID)
}

// LocalVolume is the volume the local provisioner creates for claim on
// node: a spec.local directory at LocalPath(root, node, VolumeName), node
// affinity to that node (kubernetes.io/hostname), capacity equal to the
// request, the claim's access modes, the class's reclaim policy (Delete
// by default) and its name, already reserved for the claim (claimRef with
// UID), annotated with AnnProvisionedBy and AnnProvisionedDir.
//
// The capacity is advisory: the directory is not a quota, a pod may
// write more than the claim requests (as with Kubernetes' hostPath and
// local-path volumes).
//
// Refused, with the reason: a claim without UID (not stored yet), with a
// selector (a new volume has no labels to match), for Block volume mode,
// or asking for ReadWriteMany or ReadOnlyMany (a local directory is
// reachable from one node only: use a hostPath volume on shared storage).
func LocalVolume(claim *corev1.PersistentVolumeClaim, sc *storagev1.StorageClass, node, root string) (*corev1.PersistentVolume, error) {
	switch {
	case claim.UID == "":
		return nil, errors.New("the claim has no UID yet")
	case node == "":
		return nil, errors.New("no node was selected for the claim")
	}
	if err := CheckLocal(claim, sc); err != nil {
		return nil, err
	}
	modes := claim.Spec.AccessModes
	if len(modes) == 0 {
		modes = []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}
	}
	policy := corev1.PersistentVolumeReclaimDelete
	if sc.ReclaimPolicy != nil && *sc.ReclaimPolicy != "" {
		policy = *sc.ReclaimPolicy
	}
	name := VolumeName(claim)
	path := LocalPath(root, node, name)
	fs := corev1.PersistentVolumeFilesystem
	return &corev1.PersistentVolume{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "PersistentVolume"},
		ObjectMeta: metav1.ObjectMeta{
			Name: name,
			Annotations: map[string]string{
				AnnProvisionedBy:     sc.Provisioner,
				AnnProvisionedDir:    path,
				AnnBoundByController: "yes",
			},
		},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: Request(claim)},
			AccessModes:                   append([]corev1.PersistentVolumeAccessMode(nil), modes...),
			PersistentVolumeReclaimPolicy: policy,
			StorageClassName:              sc.Name,
			VolumeMode:                    &fs,
			PersistentVolumeSource:        corev1.PersistentVolumeSource{Local: &corev1.LocalVolumeSource{Path: path}},
			NodeAffinity: &corev1.VolumeNodeAffinity{Required: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
				MatchExpressions: []corev1.NodeSelectorRequirement{{Key: corev1.LabelHostname, Operator: corev1.NodeSelectorOpIn, Values: []string{node}}},
			}}}},
			ClaimRef: ClaimRef(claim),
		},
	}, nil
}

// CheckLocal says why the local provisioner of class sc cannot provision
// for claim (nil when it can): a selector, Block volume mode, or an
// access mode other than ReadWriteOnce and ReadWriteOncePod.
func CheckLocal(claim *corev1.PersistentVolumeClaim, sc *storagev1.StorageClass) error {
	if claim.Spec.Selector != nil {
		return fmt.Errorf("storage class %q cannot provision for a claim with a selector: a new volume has no labels to match (drop spec.selector or create a matching volume)", sc.Name)
	}
	if m := volumeMode(claim.Spec.VolumeMode); m != corev1.PersistentVolumeFilesystem {
		return fmt.Errorf("storage class %q provisions directories: volumeMode %s is not supported", sc.Name, m)
	}
	for _, m := range claim.Spec.AccessModes {
		if m != corev1.ReadWriteOnce && m != corev1.ReadWriteOncePod {
			return fmt.Errorf("storage class %q provisions node-local directories, which cannot be %s: use ReadWriteOnce, or a hostPath volume on shared storage", sc.Name, m)
		}
	}
	return nil
}
