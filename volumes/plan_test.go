package volumes

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func testPod(vols ...corev1.Volume) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "default", UID: "uid-1"},
		Spec: corev1.PodSpec{Volumes: vols, Containers: []corev1.Container{{Name: "c"}}}}
}

func vol(name string, vs corev1.VolumeSource) corev1.Volume {
	return corev1.Volume{Name: name, VolumeSource: vs}
}

func quantity(s string) *resource.Quantity { q := resource.MustParse(s); return &q }

func TestPlanPod(t *testing.T) {
	hp := corev1.HostPathDirectoryOrCreate
	for _, tc := range []struct {
		name string
		vol  corev1.Volume
		want Volume // Source is not compared
		err  string // substring of a *ConfigError
	}{
		{name: "emptyDir on disk", vol: vol("cache", corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}),
			want: Volume{Name: "cache", Kind: KindEmptyDir, Dir: "/r/uid-1/volumes/empty-dir/cache"}},
		{name: "emptyDir with sizeLimit", vol: vol("cache", corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{SizeLimit: quantity("1Mi")}}),
			want: Volume{Name: "cache", Kind: KindEmptyDir, Dir: "/r/uid-1/volumes/empty-dir/cache", SizeLimit: 1 << 20}},
		{name: "emptyDir in memory", vol: vol("shm", corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{Medium: corev1.StorageMediumMemory, SizeLimit: quantity("64Mi")}}),
			want: Volume{Name: "shm", Kind: KindEmptyDir, Dir: "/r/uid-1/volumes/empty-dir/shm", Tmpfs: true, SizeLimit: 64 << 20}},
		{name: "emptyDir hugepages", vol: vol("hp", corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{Medium: corev1.StorageMediumHugePages}}),
			err: `emptyDir medium "HugePages" is not supported`},
		{name: "emptyDir zero limit", vol: vol("z", corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{SizeLimit: quantity("0")}}),
			err: "not positive"},
		{name: "hostPath", vol: vol("host", corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/srv/data/", Type: &hp}}),
			want: Volume{Name: "host", Kind: KindHostPath, Dir: "/srv/data"}},
		{name: "hostPath relative", vol: vol("host", corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "srv"}}),
			err: "not an absolute path"},
		{name: "configMap is read-only", vol: vol("cfg", corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "x"}}}),
			want: Volume{Name: "cfg", Kind: KindConfigMap, Dir: "/r/uid-1/volumes/configmap/cfg", ReadOnly: true}},
		{name: "secret on tmpfs", vol: vol("sec", corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "x"}}),
			want: Volume{Name: "sec", Kind: KindSecret, Dir: "/r/uid-1/volumes/secret/sec", Tmpfs: true, ReadOnly: true}},
		{name: "downwardAPI", vol: vol("info", corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{}}),
			want: Volume{Name: "info", Kind: KindDownwardAPI, Dir: "/r/uid-1/volumes/downward-api/info", ReadOnly: true}},
		{name: "projected on tmpfs", vol: vol("all", corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{}}),
			want: Volume{Name: "all", Kind: KindProjected, Dir: "/r/uid-1/volumes/projected/all", Tmpfs: true, ReadOnly: true}},
		{name: "claim", vol: vol("data", corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "data-0"}}),
			want: Volume{Name: "data", Kind: KindClaim}},
		{name: "claim read-only", vol: vol("data", corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "data-0", ReadOnly: true}}),
			want: Volume{Name: "data", Kind: KindClaim, ReadOnly: true}},
		{name: "claim without name", vol: vol("data", corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{}}),
			err: "no claimName"},
		{name: "nfs", vol: vol("n", corev1.VolumeSource{NFS: &corev1.NFSVolumeSource{Server: "x", Path: "/"}}),
			err: "volume type nfs is not supported"},
		{name: "no source", vol: vol("n", corev1.VolumeSource{}), err: "volume type (none)"},
		{name: "bad name", vol: vol("../x", corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}), err: "cannot name a directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			plan, err := PlanPod("/r", testPod(tc.vol))
			if tc.err != "" {
				var ce *ConfigError
				if !errors.As(err, &ce) || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want a ConfigError with %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if plan.Dir != "/r/uid-1" || len(plan.Volumes) != 1 {
				t.Fatalf("plan = %+v", plan)
			}
			got := plan.Volumes[0]
			got.Source = nil
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("volume = %+v\nwant     %+v", got, tc.want)
			}
		})
	}
}

func TestPlanPodRejects(t *testing.T) {
	e := corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}
	if _, err := PlanPod("/r", testPod(vol("a", e), vol("a", e))); err == nil || !strings.Contains(err.Error(), "two volumes") {
		t.Errorf("duplicate names: %v", err)
	}
	p := testPod()
	p.UID = "../etc"
	if _, err := PlanPod("/r", p); err == nil {
		t.Error("a UID with a slash was planned")
	}
}

func TestPlanMounts(t *testing.T) {
	pod := testPod(
		vol("cache", corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}),
		vol("cfg", corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{}}),
		vol("data", corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "c", ReadOnly: true}}),
	)
	plan, err := PlanPod("/r", pod)
	if err != nil {
		t.Fatal(err)
	}
	expand := func(s string) string { return strings.ReplaceAll(s, "$(POD)", "p-0") }
	for _, tc := range []struct {
		name string
		vms  []corev1.VolumeMount
		want []MountPlan
		err  string
	}{
		{name: "whole volume", vms: []corev1.VolumeMount{{Name: "cache", MountPath: "/cache/"}},
			want: []MountPlan{{Volume: "cache", Destination: "/cache"}}},
		{name: "readOnly", vms: []corev1.VolumeMount{{Name: "cache", MountPath: "/c", ReadOnly: true}},
			want: []MountPlan{{Volume: "cache", Destination: "/c", ReadOnly: true}}},
		{name: "API volumes are read-only", vms: []corev1.VolumeMount{{Name: "cfg", MountPath: "/etc/app"}},
			want: []MountPlan{{Volume: "cfg", Destination: "/etc/app", ReadOnly: true}}},
		{name: "read-only claim", vms: []corev1.VolumeMount{{Name: "data", MountPath: "/data"}},
			want: []MountPlan{{Volume: "data", Destination: "/data", ReadOnly: true}}},
		{name: "subPath", vms: []corev1.VolumeMount{{Name: "cfg", MountPath: "/etc/app.conf", SubPath: "./app.conf"}},
			want: []MountPlan{{Volume: "cfg", SubPath: "app.conf", Destination: "/etc/app.conf", ReadOnly: true}}},
		{name: "subPathExpr", vms: []corev1.VolumeMount{{Name: "cache", MountPath: "/c", SubPathExpr: "pods/$(POD)"}},
			want: []MountPlan{{Volume: "cache", SubPath: "pods/p-0", Destination: "/c"}}},
		{name: "subPath dot is the whole volume", vms: []corev1.VolumeMount{{Name: "cache", MountPath: "/c", SubPath: "."}},
			want: []MountPlan{{Volume: "cache", Destination: "/c"}}},
		{name: "unknown volume", vms: []corev1.VolumeMount{{Name: "nope", MountPath: "/x"}}, err: "no volume of that name"},
		{name: "relative mountPath", vms: []corev1.VolumeMount{{Name: "cache", MountPath: "x"}}, err: "not absolute"},
		{name: "two at one path", vms: []corev1.VolumeMount{{Name: "cache", MountPath: "/x"}, {Name: "cfg", MountPath: "/x/"}}, err: "two volumes at /x"},
		{name: "subPath climbing out", vms: []corev1.VolumeMount{{Name: "cache", MountPath: "/x", SubPath: "a/../../etc"}}, err: "must not contain '..'"},
		{name: "absolute subPath", vms: []corev1.VolumeMount{{Name: "cache", MountPath: "/x", SubPath: "/etc"}}, err: "must be a relative path"},
		{name: "subPath and subPathExpr", vms: []corev1.VolumeMount{{Name: "cache", MountPath: "/x", SubPath: "a", SubPathExpr: "b"}}, err: "both subPath and subPathExpr"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := plan.Mounts(&corev1.Container{Name: "c", VolumeMounts: tc.vms}, expand)
			if tc.err != "" {
				var ce *ConfigError
				if !errors.As(err, &ce) || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want a ConfigError with %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("mounts = %+v\nwant     %+v", got, tc.want)
			}
		})
	}
}
