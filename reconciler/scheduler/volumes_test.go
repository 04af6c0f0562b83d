package scheduler

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/flotilla-dev/flotilla/volumes/pvbinding"
)

func withClaims(p *corev1.Pod, claims ...string) *corev1.Pod {
	for _, c := range claims {
		p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: c,
			VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: c}}})
	}
	return p
}

func pvc(name, class, volume string, modes ...corev1.PersistentVolumeAccessMode) *corev1.PersistentVolumeClaim {
	if len(modes) == 0 {
		modes = []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}
	}
	c := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name, UID: types.UID("uid-" + name), Annotations: map[string]string{}},
		Spec: corev1.PersistentVolumeClaimSpec{AccessModes: modes, VolumeName: volume,
			Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}}},
	}
	if class != "-" {
		c.Spec.StorageClassName = &class
	}
	return c
}

func pvOn(name, class, node string) *corev1.PersistentVolume {
	pv := &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:         corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")},
			AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			StorageClassName: class,
		},
	}
	if node != "" {
		pv.Spec.NodeAffinity = &corev1.VolumeNodeAffinity{Required: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
			MatchExpressions: []corev1.NodeSelectorRequirement{{Key: corev1.LabelHostname, Operator: corev1.NodeSelectorOpIn, Values: []string{node}}},
		}}}}
	}
	return pv
}

func hostNode(name, cpu string) *corev1.Node {
	return node(name, cpu, "8Gi", 10, label(corev1.LabelHostname, name))
}

func storageOf(claims []*corev1.PersistentVolumeClaim, volumes []*corev1.PersistentVolume, classes ...*storagev1.StorageClass) *Storage {
	st := &Storage{Claims: map[string]*corev1.PersistentVolumeClaim{}, Volumes: map[string]*corev1.PersistentVolume{}, Classes: classes}
	for _, c := range claims {
		st.Claims[c.Namespace+"/"+c.Name] = c
	}
	for _, v := range volumes {
		st.Volumes[v.Name] = v
	}
	return st
}

// volResult is result() with selections as "? node".
func volResult(plan Plan) map[string]string {
	out := result(plan)
	for _, s := range plan.Selections {
		var cs []string
		for _, c := range s.Claims {
			cs = append(cs, c.Name)
		}
		out[s.Pod.Name] = "? " + s.NodeName + " for " + strings.Join(cs, ",")
	}
	return out
}

func TestScheduleVolumes(t *testing.T) {
	noProv := &storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: "static-wait"}, Provisioner: pvbinding.NoProvisioner}
	wait := storagev1.VolumeBindingWaitForFirstConsumer
	noProv.VolumeBindingMode = &wait
	nodes := []*corev1.Node{hostNode("a", "4"), hostNode("b", "4"), hostNode("c", "4")}
	selected := pvc("sel", "-", "")
	selected.Annotations[pvbinding.AnnSelectedNode] = "c"
	cases := []struct {
		name    string
		pending []*corev1.Pod
		bound   []*corev1.Pod
		nodes   []*corev1.Node
		st      *Storage
		want    map[string]string
	}{
		{
			name:    "a claim bound to a volume with node affinity: that node only",
			pending: []*corev1.Pod{withClaims(pod("p", "", "", ""), "data")},
			bound:   []*corev1.Pod{onNode(pod("x1", "3", "", ""), "b")},
			st:      storageOf([]*corev1.PersistentVolumeClaim{pvc("data", "manual", "pv-b")}, []*corev1.PersistentVolume{pvOn("pv-b", "manual", "b")}),
			want:    map[string]string{"p": "b"},
		},
		{
			name:    "the volume's node is full",
			pending: []*corev1.Pod{withClaims(pod("p", "2", "", ""), "data")},
			bound:   []*corev1.Pod{onNode(pod("x1", "3", "", ""), "b")},
			st:      storageOf([]*corev1.PersistentVolumeClaim{pvc("data", "manual", "pv-b")}, []*corev1.PersistentVolume{pvOn("pv-b", "manual", "b")}),
			want:    map[string]string{"p": "! 0/3 nodes are available: 1 Insufficient cpu, 2 node(s) had volume node affinity conflict."},
		},
		{
			name:    "a volume without node affinity: anywhere",
			pending: []*corev1.Pod{withClaims(pod("p", "", "", ""), "data")},
			bound:   []*corev1.Pod{onNode(pod("x1", "3", "", ""), "a"), onNode(pod("x2", "3", "", ""), "b")},
			st:      storageOf([]*corev1.PersistentVolumeClaim{pvc("data", "manual", "pv", corev1.ReadWriteMany)}, []*corev1.PersistentVolume{pvOn("pv", "manual", "")}),
			want:    map[string]string{"p": "c"},
		},
		{
			name:    "a missing claim",
			pending: []*corev1.Pod{withClaims(pod("p", "", "", ""), "data", "logs")},
			st:      storageOf([]*corev1.PersistentVolumeClaim{pvc("logs", "manual", "pv")}, []*corev1.PersistentVolume{pvOn("pv", "manual", "")}),
			want:    map[string]string{"p": `! 0/3 nodes are available: persistentvolumeclaim "data" not found.`},
		},
		{
			name:    "without storage every claim is missing",
			pending: []*corev1.Pod{withClaims(pod("p", "", "", ""), "data")},
			want:    map[string]string{"p": `! 0/3 nodes are available: persistentvolumeclaim "data" not found.`},
		},
		{
			name:    "a claim bound to a volume that is gone",
			pending: []*corev1.Pod{withClaims(pod("p", "", "", ""), "data")},
			st:      storageOf([]*corev1.PersistentVolumeClaim{pvc("data", "manual", "gone")}, nil),
			want:    map[string]string{"p": `! 0/3 nodes are available: persistentvolumeclaim "data" is bound to persistentvolume "gone", which does not exist.`},
		},
		{
			name:    "an unbound claim of an Immediate class",
			pending: []*corev1.Pod{withClaims(pod("p", "", "", ""), "data")},
			st:      storageOf([]*corev1.PersistentVolumeClaim{pvc("data", "manual", "")}, nil),
			want:    map[string]string{"p": `! 0/3 nodes are available: pod has unbound immediate PersistentVolumeClaims (data: describe the claim for why).`},
		},
		{
			name:    "an unbound claim of the default local class: a node is selected, the pod waits",
			pending: []*corev1.Pod{withClaims(pod("p", "", "", ""), "data")},
			bound:   []*corev1.Pod{onNode(pod("x1", "3", "", ""), "a"), onNode(pod("x2", "3", "", ""), "c")},
			st:      storageOf([]*corev1.PersistentVolumeClaim{pvc("data", "-", "")}, nil, pvbinding.BuiltinClass()),
			want:    map[string]string{"p": "? b for data"},
		},
		{
			name:    "a node already selected for the claim is preferred",
			pending: []*corev1.Pod{withClaims(pod("p", "", "", ""), "sel")},
			bound:   []*corev1.Pod{onNode(pod("x1", "3", "", ""), "c")},
			st:      storageOf([]*corev1.PersistentVolumeClaim{selected}, nil, pvbinding.BuiltinClass()),
			want:    map[string]string{"p": "? c for sel"},
		},
		{
			name:    "a selected node that no longer fits is replaced",
			pending: []*corev1.Pod{withClaims(pod("p", "2", "", ""), "sel")},
			bound:   []*corev1.Pod{onNode(pod("x1", "3", "", ""), "c"), onNode(pod("x2", "1", "", ""), "a")},
			st:      storageOf([]*corev1.PersistentVolumeClaim{selected}, nil, pvbinding.BuiltinClass()),
			want:    map[string]string{"p": "? b for sel"},
		},
		{
			name: "two pods of one unbound ReadWriteOnce claim go to one node",
			pending: []*corev1.Pod{
				withClaims(pod("p1", "", "", "rs"), "data"), withClaims(pod("p2", "", "", "rs"), "data"),
			},
			st:   storageOf([]*corev1.PersistentVolumeClaim{pvc("data", "-", "")}, nil, pvbinding.BuiltinClass()),
			want: map[string]string{"p1": "? a for data", "p2": "? a for data"},
		},
		{
			name:    "a ReadWriteOnce claim in use on a node: only that node, despite spreading",
			pending: []*corev1.Pod{withClaims(pod("p", "", "", "rs"), "data")},
			bound:   []*corev1.Pod{withClaims(onNode(pod("x", "", "", "rs"), "b"), "data")},
			st:      storageOf([]*corev1.PersistentVolumeClaim{pvc("data", "manual", "pv")}, []*corev1.PersistentVolume{pvOn("pv", "manual", "")}),
			want:    map[string]string{"p": "b"},
		},
		{
			name:    "a ReadWriteOnce claim in use on a full node: pending with the reason",
			pending: []*corev1.Pod{withClaims(pod("p", "2", "", ""), "data")},
			bound:   []*corev1.Pod{withClaims(onNode(pod("x", "3", "", ""), "b"), "data")},
			st:      storageOf([]*corev1.PersistentVolumeClaim{pvc("data", "manual", "pv")}, []*corev1.PersistentVolume{pvOn("pv", "manual", "")}),
			want:    map[string]string{"p": "! 0/3 nodes are available: 1 Insufficient cpu, 2 " + ReasonVolumeInUse + "."},
		},
		{
			name:    "a finished pod does not hold its ReadWriteOnce claim",
			pending: []*corev1.Pod{withClaims(pod("p", "2", "", ""), "data")},
			bound: []*corev1.Pod{func() *corev1.Pod {
				p := withClaims(onNode(pod("x", "3", "", ""), "b"), "data")
				p.Status.Phase = corev1.PodSucceeded
				return p
			}()},
			st:   storageOf([]*corev1.PersistentVolumeClaim{pvc("data", "manual", "pv")}, []*corev1.PersistentVolume{pvOn("pv", "manual", "")}),
			want: map[string]string{"p": "a"},
		},
		{
			name:    "a ReadWriteMany claim is shared across nodes",
			pending: []*corev1.Pod{withClaims(pod("p", "", "", "rs"), "data")},
			bound:   []*corev1.Pod{withClaims(onNode(pod("x", "", "", "rs"), "b"), "data")},
			st:      storageOf([]*corev1.PersistentVolumeClaim{pvc("data", "manual", "pv", corev1.ReadWriteMany)}, []*corev1.PersistentVolume{pvOn("pv", "manual", "")}),
			want:    map[string]string{"p": "a"},
		},
		{
			name:    "a ReadOnlyMany claim is shared across nodes",
			pending: []*corev1.Pod{withClaims(pod("p", "", "", "rs"), "data")},
			bound:   []*corev1.Pod{withClaims(onNode(pod("x", "", "", "rs"), "a"), "data")},
			st:      storageOf([]*corev1.PersistentVolumeClaim{pvc("data", "manual", "pv", corev1.ReadOnlyMany)}, []*corev1.PersistentVolume{pvOn("pv", "manual", "")}),
			want:    map[string]string{"p": "b"},
		},
		{
			name:    "a ReadWriteOncePod claim admits one pod",
			pending: []*corev1.Pod{withClaims(pod("p1", "", "", ""), "data"), withClaims(pod("p2", "", "", ""), "data")},
			st:      storageOf([]*corev1.PersistentVolumeClaim{pvc("data", "manual", "pv", corev1.ReadWriteOncePod)}, []*corev1.PersistentVolume{pvOn("pv", "manual", "")}),
			want: map[string]string{"p1": "a",
				"p2": `! 0/3 nodes are available: persistentvolumeclaim "data" is ReadWriteOncePod and already in use by another pod.`},
		},
		{
			name:    "WaitForFirstConsumer without a provisioner: only nodes with a free matching volume",
			pending: []*corev1.Pod{withClaims(pod("p1", "", "", ""), "d1"), withClaims(pod("p2", "", "", ""), "d2")},
			st: storageOf([]*corev1.PersistentVolumeClaim{pvc("d1", "static-wait", ""), pvc("d2", "static-wait", "")},
				[]*corev1.PersistentVolume{pvOn("pv-c", "static-wait", "c")}, noProv),
			want: map[string]string{"p1": "? c for d1", "p2": "! 0/3 nodes are available: 3 " + ReasonNoVolumes + "."},
		},
		{
			name:    "a claim the local provisioner cannot serve says why",
			pending: []*corev1.Pod{withClaims(pod("p", "", "", ""), "shared")},
			st:      storageOf([]*corev1.PersistentVolumeClaim{pvc("shared", "-", "", corev1.ReadWriteMany)}, nil, pvbinding.BuiltinClass()),
			want: map[string]string{"p": "! 0/3 nodes are available: 3 " + ReasonNoVolumes + `. persistentvolumeclaim "shared": storage class "local" provisions node-local directories, which cannot be ReadWriteMany: ` +
				"use ReadWriteOnce, or a hostPath volume on shared storage."},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ns := tc.nodes
			if ns == nil {
				ns = nodes
			}
			got := volResult(ScheduleWithStorage(tc.pending, ns, tc.bound, tc.st))
			for k, want := range tc.want {
				if got[k] != want {
					t.Errorf("%s: got %q\nwant %q", k, got[k], want)
				}
			}
			if len(got) != len(tc.want) {
				t.Errorf("plan %v, want %v", got, tc.want)
			}
		})
	}
}
