package auth

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// TestPodUses: every place a pod names a Secret, ConfigMap or claim counts,
// and nothing else does.
func TestPodUses(t *testing.T) {
	ref := func(n string) corev1.LocalObjectReference { return corev1.LocalObjectReference{Name: n} }
	p := &corev1.Pod{Spec: corev1.PodSpec{
		ImagePullSecrets: []corev1.LocalObjectReference{ref("pull")},
		Volumes: []corev1.Volume{
			{Name: "a", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "vol-secret"}}},
			{Name: "b", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: ref("vol-cm")}}},
			{Name: "c", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "claim"}}},
			{Name: "d", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{
				{Secret: &corev1.SecretProjection{LocalObjectReference: ref("proj-secret")}},
				{ConfigMap: &corev1.ConfigMapProjection{LocalObjectReference: ref("proj-cm")}}}}}},
		},
		InitContainers: []corev1.Container{{Name: "i", EnvFrom: []corev1.EnvFromSource{{SecretRef: &corev1.SecretEnvSource{LocalObjectReference: ref("init-secret")}}}}},
		Containers: []corev1.Container{{Name: "c", Env: []corev1.EnvVar{
			{Name: "A", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: ref("env-secret"), Key: "k"}}},
			{Name: "B", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{LocalObjectReference: ref("env-cm"), Key: "k"}}},
			{Name: "C", Value: "plain"},
		}}},
	}}
	for _, tc := range []struct {
		resource, name string
		want           bool
	}{
		{"secrets", "pull", true}, {"secrets", "vol-secret", true}, {"secrets", "proj-secret", true},
		{"secrets", "init-secret", true}, {"secrets", "env-secret", true},
		{"configmaps", "vol-cm", true}, {"configmaps", "proj-cm", true}, {"configmaps", "env-cm", true},
		{"persistentvolumeclaims", "claim", true},
		{"secrets", "vol-cm", false}, {"configmaps", "vol-secret", false}, {"secrets", "plain", false},
		{"persistentvolumeclaims", "vol-secret", false}, {"secrets", "claim", false}, {"configmaps", "other", false},
	} {
		if got := podUses(p, tc.resource, tc.name); got != tc.want {
			t.Errorf("podUses(%s %s) = %v, want %v", tc.resource, tc.name, got, tc.want)
		}
	}
}
