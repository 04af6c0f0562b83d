package pvbinding

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/flotilla-dev/flotilla/schema"
)

type pvOpt func(*corev1.PersistentVolume)

func vol(name, size, class string, opts ...pvOpt) *corev1.PersistentVolume {
	pv := &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{}},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:               corev1.ResourceList{corev1.ResourceStorage: resource.MustParse(size)},
			AccessModes:            []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			StorageClassName:       class,
			PersistentVolumeSource: corev1.PersistentVolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/mnt/" + name}},
		},
	}
	for _, o := range opts {
		o(pv)
	}
	return pv
}

func modesPV(ms ...corev1.PersistentVolumeAccessMode) pvOpt {
	return func(pv *corev1.PersistentVolume) { pv.Spec.AccessModes = ms }
}
func labelPV(k, v string) pvOpt { return func(pv *corev1.PersistentVolume) { pv.Labels[k] = v } }
func claimedBy(ns, name, uid string) pvOpt {
	return func(pv *corev1.PersistentVolume) {
		pv.Spec.ClaimRef = &corev1.ObjectReference{Kind: "PersistentVolumeClaim", Namespace: ns, Name: name, UID: types.UID(uid)}
	}
}
func onNode(node string) pvOpt {
	return func(pv *corev1.PersistentVolume) {
		pv.Spec.NodeAffinity = &corev1.VolumeNodeAffinity{Required: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
			MatchExpressions: []corev1.NodeSelectorRequirement{{Key: corev1.LabelHostname, Operator: corev1.NodeSelectorOpIn, Values: []string{node}}},
		}}}}
	}
}
func reclaim(p corev1.PersistentVolumeReclaimPolicy) pvOpt {
	return func(pv *corev1.PersistentVolume) { pv.Spec.PersistentVolumeReclaimPolicy = p }
}
func phasePV(p corev1.PersistentVolumePhase) pvOpt {
	return func(pv *corev1.PersistentVolume) { pv.Status.Phase = p }
}

type pvcOpt func(*corev1.PersistentVolumeClaim)

func claim(name, size string, opts ...pvcOpt) *corev1.PersistentVolumeClaim {
	c := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name, UID: types.UID("uid-" + name), Annotations: map[string]string{}},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources:   corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse(size)}},
		},
	}
	for _, o := range opts {
		o(c)
	}
	return c
}

func class(name string) pvcOpt {
	return func(c *corev1.PersistentVolumeClaim) { c.Spec.StorageClassName = &name }
}
func modesPVC(ms ...corev1.PersistentVolumeAccessMode) pvcOpt {
	return func(c *corev1.PersistentVolumeClaim) { c.Spec.AccessModes = ms }
}
func selector(k, v string) pvcOpt {
	return func(c *corev1.PersistentVolumeClaim) {
		c.Spec.Selector = &metav1.LabelSelector{MatchLabels: map[string]string{k: v}}
	}
}
func volumeName(n string) pvcOpt {
	return func(c *corev1.PersistentVolumeClaim) { c.Spec.VolumeName = n }
}
func selectedNode(n string) pvcOpt {
	return func(c *corev1.PersistentVolumeClaim) { c.Annotations[AnnSelectedNode] = n }
}
func phasePVC(p corev1.PersistentVolumeClaimPhase) pvcOpt {
	return func(c *corev1.PersistentVolumeClaim) { c.Status.Phase = p }
}

func sc(name, provisioner string, wffc, isDefault bool) *storagev1.StorageClass {
	s := &storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: map[string]string{}}, Provisioner: provisioner}
	if wffc {
		m := storagev1.VolumeBindingWaitForFirstConsumer
		s.VolumeBindingMode = &m
	}
	if isDefault {
		s.Annotations[AnnDefaultClass] = "true"
	}
	return s
}

func node(name string) *corev1.Node {
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{corev1.LabelHostname: name}}}
}

// outcome renders a decision: "bind NAME", "provision NAME", or
// "Phase Reason: message".
func outcome(d ClaimDecision) string {
	switch {
	case d.Provision:
		return "provision " + d.Volume.Name
	case d.Volume != nil:
		return "bind " + d.Volume.Name
	}
	return string(d.Phase) + " " + d.Reason + ": " + d.Message
}

func TestDecideClaim(t *testing.T) {
	builtin := BuiltinClass()
	manual := sc("manual", NoProvisioner, false, false)
	cases := []struct {
		name    string
		claim   *corev1.PersistentVolumeClaim
		volumes []*corev1.PersistentVolume
		classes []*storagev1.StorageClass
		node    *corev1.Node
		want    string // prefix of outcome
	}{
		{
			name:    "smallest volume that fits",
			claim:   claim("c", "5Gi", class("manual")),
			volumes: []*corev1.PersistentVolume{vol("big", "100Gi", "manual"), vol("small", "1Gi", "manual"), vol("fit", "10Gi", "manual"), vol("exact", "5Gi", "manual")},
			want:    "bind exact",
		},
		{
			name:    "ties go to the first by name",
			claim:   claim("c", "1Gi", class("manual")),
			volumes: []*corev1.PersistentVolume{vol("b", "2Gi", "manual"), vol("a", "2Gi", "manual")},
			want:    "bind a",
		},
		{
			name:    "too small never binds",
			claim:   claim("c", "30Gi", class("manual")),
			volumes: []*corev1.PersistentVolume{vol("mysql", "20Gi", "manual")},
			classes: []*storagev1.StorageClass{builtin},
			want:    `Pending FailedBinding: no persistent volume satisfies the claim (storage class "manual", 30Gi, ReadWriteOnce): 1 too small (at most 20Gi); storage class "manual" does not exist, so none is provisioned`,
		},
		{
			name:    "another class never binds",
			claim:   claim("c", "1Gi", class("fast")),
			volumes: []*corev1.PersistentVolume{vol("slow", "10Gi", "slow"), vol("none", "10Gi", "")},
			classes: []*storagev1.StorageClass{manual},
			want:    `Pending FailedBinding: no persistent volume satisfies the claim (storage class "fast", 1Gi, ReadWriteOnce): 2 of another storage class;`,
		},
		{
			name:    "an explicit empty class binds only volumes without a class",
			claim:   claim("c", "1Gi", class("")),
			volumes: []*corev1.PersistentVolume{vol("local", "1Gi", "local"), vol("plain", "5Gi", "")},
			classes: []*storagev1.StorageClass{builtin},
			want:    "bind plain",
		},
		{
			name:    "no class and no volume",
			claim:   claim("c", "1Gi", class("")),
			volumes: []*corev1.PersistentVolume{vol("local", "1Gi", "local")},
			classes: []*storagev1.StorageClass{builtin},
			want:    `Pending FailedBinding: no persistent volume satisfies the claim (no storage class, 1Gi, ReadWriteOnce): 1 of another storage class; no storage class is set, so none is provisioned`,
		},
		{
			name:    "a nil class is the default class",
			claim:   claim("c", "1Gi"),
			volumes: []*corev1.PersistentVolume{vol("plain", "5Gi", ""), vol("fast-1", "5Gi", "fast")},
			classes: []*storagev1.StorageClass{sc("fast", NoProvisioner, false, true), sc("slow", NoProvisioner, false, false)},
			want:    "bind fast-1",
		},
		{
			name:    "a nil class without a default class binds volumes without a class",
			claim:   claim("c", "1Gi"),
			volumes: []*corev1.PersistentVolume{vol("plain", "5Gi", ""), vol("fast-1", "5Gi", "fast")},
			classes: []*storagev1.StorageClass{sc("fast", NoProvisioner, false, false)},
			want:    "bind plain",
		},
		{
			name:    "requested access modes must all be offered",
			claim:   claim("c", "1Gi", class("manual"), modesPVC(corev1.ReadWriteOnce, corev1.ReadOnlyMany)),
			volumes: []*corev1.PersistentVolume{vol("rwo", "1Gi", "manual"), vol("both", "9Gi", "manual", modesPV(corev1.ReadOnlyMany, corev1.ReadWriteOnce, corev1.ReadWriteMany))},
			want:    "bind both",
		},
		{
			name:    "missing access mode",
			claim:   claim("c", "1Gi", class("manual"), modesPVC(corev1.ReadWriteMany)),
			volumes: []*corev1.PersistentVolume{vol("rwo", "1Gi", "manual")},
			classes: []*storagev1.StorageClass{manual},
			want:    `Pending FailedBinding: no persistent volume satisfies the claim (storage class "manual", 1Gi, ReadWriteMany): 1 lacking a requested access mode; storage class "manual" provisions nothing`,
		},
		{
			name:    "selector",
			claim:   claim("c", "1Gi", class("manual"), selector("disk", "ssd")),
			volumes: []*corev1.PersistentVolume{vol("hdd", "1Gi", "manual", labelPV("disk", "hdd")), vol("ssd", "5Gi", "manual", labelPV("disk", "ssd"))},
			want:    "bind ssd",
		},
		{
			name:    "one claim per volume",
			claim:   claim("c", "1Gi", class("manual")),
			volumes: []*corev1.PersistentVolume{vol("taken", "1Gi", "manual", claimedBy("default", "other", "uid-other")), vol("free", "2Gi", "manual")},
			want:    "bind free",
		},
		{
			name:    "a released volume is not reused",
			claim:   claim("c", "1Gi", class("manual")),
			volumes: []*corev1.PersistentVolume{vol("old", "1Gi", "manual", claimedBy("default", "gone", "uid-gone"), phasePV(corev1.VolumeReleased))},
			classes: []*storagev1.StorageClass{manual},
			want:    `Pending FailedBinding: no persistent volume satisfies the claim (storage class "manual", 1Gi, ReadWriteOnce): 1 released by a deleted claim;`,
		},
		{
			name:    "a volume reserved for the claim wins over a smaller one, whatever its class",
			claim:   claim("c", "1Gi", class("manual")),
			volumes: []*corev1.PersistentVolume{vol("small", "1Gi", "manual"), vol("mine", "50Gi", "other", claimedBy("default", "c", ""))},
			want:    "bind mine",
		},
		{
			name:    "a reservation for a too-small volume is skipped",
			claim:   claim("c", "10Gi", class("manual")),
			volumes: []*corev1.PersistentVolume{vol("mine", "1Gi", "manual", claimedBy("default", "c", "")), vol("other", "10Gi", "manual")},
			want:    "bind other",
		},
		{
			name:    "a reservation for an older claim of the same name does not count",
			claim:   claim("c", "1Gi", class("manual")),
			volumes: []*corev1.PersistentVolume{vol("old", "1Gi", "manual", claimedBy("default", "c", "uid-older"))},
			classes: []*storagev1.StorageClass{manual},
			want:    "Pending FailedBinding: no persistent volume satisfies the claim (storage class \"manual\", 1Gi, ReadWriteOnce): 1 bound to another claim",
		},
		{
			name:    "pre-bound by the claim",
			claim:   claim("c", "1Gi", class("manual"), volumeName("chosen")),
			volumes: []*corev1.PersistentVolume{vol("small", "1Gi", "manual"), vol("chosen", "8Gi", "manual")},
			want:    "bind chosen",
		},
		{
			name:    "pre-bound by the claim to a volume that does not satisfy it",
			claim:   claim("c", "10Gi", class("manual"), volumeName("chosen")),
			volumes: []*corev1.PersistentVolume{vol("chosen", "8Gi", "manual")},
			want:    "Pending VolumeMismatch: cannot bind to volume chosen (spec.volumeName): volume chosen has 8Gi, the claim requests 10Gi",
		},
		{
			name:    "pre-bound by the claim to a volume of another claim",
			claim:   claim("c", "1Gi", class("manual"), volumeName("chosen")),
			volumes: []*corev1.PersistentVolume{vol("chosen", "8Gi", "manual", claimedBy("default", "d", "uid-d"))},
			want:    "Pending FailedBinding: volume chosen (spec.volumeName) is bound to claim default/d",
		},
		{
			name:  "pre-bound by the claim to a volume that does not exist",
			claim: claim("c", "1Gi", class("manual"), volumeName("nope")),
			want:  "Pending FailedBinding: volume nope (spec.volumeName) does not exist",
		},
		{
			name:  "bound, volume gone: Lost",
			claim: claim("c", "1Gi", class("manual"), volumeName("gone"), phasePVC(corev1.ClaimBound)),
			want:  "Lost ClaimLost: the bound volume gone no longer exists",
		},
		{
			name:    "bound, volume's claimRef lost (rewritten from Git): bound again",
			claim:   claim("c", "1Gi", class("manual"), volumeName("v"), phasePVC(corev1.ClaimBound)),
			volumes: []*corev1.PersistentVolume{vol("v", "1Gi", "manual")},
			want:    "bind v",
		},
		{
			name:    "claim's volumeName lost (rewritten from Git): bound again to the volume naming it",
			claim:   claim("c", "1Gi", class("manual"), phasePVC(corev1.ClaimBound)),
			volumes: []*corev1.PersistentVolume{vol("a", "1Gi", "manual"), vol("v", "9Gi", "manual", claimedBy("default", "c", "uid-c"))},
			want:    "bind v",
		},
		{
			name:    "WaitForFirstConsumer without a node",
			claim:   claim("c", "1Gi"),
			volumes: []*corev1.PersistentVolume{vol("l", "1Gi", "local")},
			classes: []*storagev1.StorageClass{builtin},
			want:    "Pending WaitForFirstConsumer: waiting for first consumer to be created before binding",
		},
		{
			name:    "WaitForFirstConsumer with a node: a matching volume on that node",
			claim:   claim("c", "1Gi", selectedNode("n2")),
			volumes: []*corev1.PersistentVolume{vol("on-n1", "1Gi", "local", onNode("n1")), vol("on-n2", "2Gi", "local", onNode("n2"))},
			classes: []*storagev1.StorageClass{builtin},
			node:    node("n2"),
			want:    "bind on-n2",
		},
		{
			name:    "WaitForFirstConsumer with a node: provisioned there",
			claim:   claim("c", "1Gi", selectedNode("n1")),
			volumes: []*corev1.PersistentVolume{vol("on-n2", "1Gi", "local", onNode("n2"))},
			classes: []*storagev1.StorageClass{builtin},
			node:    node("n1"),
			want:    "provision pvc-uid-c",
		},
		{
			name:    "WaitForFirstConsumer with a node that is gone",
			claim:   claim("c", "1Gi", selectedNode("n9")),
			classes: []*storagev1.StorageClass{builtin},
			want:    "Pending ProvisioningFailed: the selected node n9 does not exist",
		},
		{
			name:    "WaitForFirstConsumer static class without a node",
			claim:   claim("c", "1Gi", class("wait")),
			volumes: []*corev1.PersistentVolume{vol("w", "1Gi", "wait")},
			classes: []*storagev1.StorageClass{sc("wait", NoProvisioner, true, false)},
			want:    "Pending WaitForFirstConsumer",
		},
		{
			name:    "WaitForFirstConsumer static class, nothing on the node",
			claim:   claim("c", "1Gi", class("wait"), selectedNode("n1")),
			volumes: []*corev1.PersistentVolume{vol("w", "1Gi", "wait", onNode("n2"))},
			classes: []*storagev1.StorageClass{sc("wait", NoProvisioner, true, false)},
			node:    node("n1"),
			want:    `Pending FailedBinding: no persistent volume satisfies the claim (storage class "wait", 1Gi, ReadWriteOnce): 1 not reachable from node n1; storage class "wait" provisions nothing`,
		},
		{
			name:    "local provisioning refuses ReadWriteMany",
			claim:   claim("c", "1Gi", selectedNode("n1"), modesPVC(corev1.ReadWriteMany)),
			classes: []*storagev1.StorageClass{builtin},
			node:    node("n1"),
			want:    `Pending ProvisioningFailed: storage class "local" provisions node-local directories, which cannot be ReadWriteMany`,
		},
		{
			name:    "local provisioner with Immediate binding",
			claim:   claim("c", "1Gi", class("now")),
			classes: []*storagev1.StorageClass{sc("now", LocalProvisioner, false, false)},
			want:    `Pending ProvisioningFailed: no persistent volume satisfies the claim (storage class "now", 1Gi, ReadWriteOnce): there are no persistent volumes; storage class "now" provisions local volumes`,
		},
		{
			name:    "a provisioner Flotilla does not run",
			claim:   claim("c", "1Gi", class("ebs")),
			classes: []*storagev1.StorageClass{sc("ebs", "ebs.csi.aws.com", false, false)},
			want:    `Pending FailedBinding: no persistent volume satisfies the claim (storage class "ebs", 1Gi, ReadWriteOnce): there are no persistent volumes; storage class "ebs" names provisioner "ebs.csi.aws.com", which Flotilla does not run`,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := outcome(DecideClaim(ClaimInput{Claim: tc.claim, Volumes: tc.volumes, Classes: tc.classes, SelectedNode: tc.node}))
			if !strings.HasPrefix(got, tc.want) {
				t.Errorf("got  %s\nwant %s...", got, tc.want)
			}
		})
	}
}

func TestLocalVolume(t *testing.T) {
	c := claim("data", "3Gi", selectedNode("n1"))
	d := DecideClaim(ClaimInput{Claim: c, Classes: []*storagev1.StorageClass{BuiltinClass()}, SelectedNode: node("n1"), LocalVolumeRoot: "/srv/vols"})
	pv := d.Volume
	if !d.Provision || pv == nil {
		t.Fatalf("decision %+v", d)
	}
	if pv.Name != "pvc-uid-data" || pv.Spec.Local == nil || pv.Spec.Local.Path != "/srv/vols/n1/pvc-uid-data" ||
		pv.Annotations[AnnProvisionedDir] != pv.Spec.Local.Path || pv.Annotations[AnnProvisionedBy] != LocalProvisioner {
		t.Errorf("volume %s at %+v, annotations %v", pv.Name, pv.Spec.Local, pv.Annotations)
	}
	if q := Capacity(pv); q.String() != "3Gi" || pv.Spec.StorageClassName != "local" ||
		pv.Spec.PersistentVolumeReclaimPolicy != corev1.PersistentVolumeReclaimDelete || !ClaimRefers(pv.Spec.ClaimRef, c) || pv.Spec.ClaimRef.UID != c.UID {
		t.Errorf("spec %+v", pv.Spec)
	}
	if !NodeAffinityMatches(pv, node("n1")) || NodeAffinityMatches(pv, node("n2")) {
		t.Errorf("node affinity %+v", pv.Spec.NodeAffinity)
	}
	// The new volume satisfies its claim by the same rules.
	if got := outcome(DecideClaim(ClaimInput{Claim: c, Volumes: []*corev1.PersistentVolume{pv}, Classes: []*storagev1.StorageClass{BuiltinClass()}, SelectedNode: node("n1")})); got != "bind pvc-uid-data" {
		t.Errorf("after provisioning: %s", got)
	}
	// A class's reclaim policy is the volume's.
	keep := BuiltinClass()
	retain := corev1.PersistentVolumeReclaimRetain
	keep.ReclaimPolicy = &retain
	if pv, err := LocalVolume(c, keep, "n1", "/r"); err != nil || pv.Spec.PersistentVolumeReclaimPolicy != retain {
		t.Errorf("LocalVolume with Retain: %v %v", pv, err)
	}
	if _, err := LocalVolume(claim("s", "1Gi", selector("a", "b")), keep, "n1", "/r"); err == nil {
		t.Error("a claim with a selector was provisioned")
	}
}

func TestDefaultClass(t *testing.T) {
	old := sc("old", "x", false, true)
	old.CreationTimestamp = metav1.NewTime(time.Unix(100, 0))
	newer := sc("newer", "x", false, true)
	newer.CreationTimestamp = metav1.NewTime(time.Unix(200, 0))
	for _, tc := range []struct {
		classes []*storagev1.StorageClass
		want    string
	}{
		{nil, ""},
		{[]*storagev1.StorageClass{sc("plain", "x", false, false)}, ""},
		{[]*storagev1.StorageClass{BuiltinClass()}, "local"},
		{[]*storagev1.StorageClass{BuiltinClass(), old}, "old"},
		{[]*storagev1.StorageClass{old, BuiltinClass(), newer}, "newer"},
	} {
		if got := DefaultClass(tc.classes); got != tc.want {
			t.Errorf("DefaultClass(%d classes) = %q, want %q", len(tc.classes), got, tc.want)
		}
	}
}

func TestDecideVolume(t *testing.T) {
	c := claim("c", "1Gi", class("manual"), volumeName("v"))
	git := func(pv *corev1.PersistentVolume) {
		pv.Annotations = map[string]string{schema.AnnotationManagedBy: schema.ManagedByGit}
	}
	byBinder := func(pv *corev1.PersistentVolume) {
		pv.Annotations = map[string]string{AnnBoundByController: "yes"}
	}
	for _, tc := range []struct {
		name  string
		pv    *corev1.PersistentVolume
		claim *corev1.PersistentVolumeClaim
		inUse bool
		want  string
	}{
		{"free", vol("v", "1Gi", "manual"), nil, false, "Available"},
		{"bound", vol("v", "1Gi", "manual", claimedBy("default", "c", "uid-c")), c, false, "Bound"},
		{"reserved, claim not there yet", vol("v", "1Gi", "manual", claimedBy("default", "c", "")), nil, false, "Available reserved for claim default/c, which does not exist yet"},
		{"claim gone, Retain (default)", vol("v", "1Gi", "manual", claimedBy("default", "c", "uid-c")), nil, false, "Released Retained claim default/c is gone; reclaimPolicy Retain keeps the volume and its data"},
		{"claim replaced by a new one of the same name", vol("v", "1Gi", "manual", claimedBy("default", "c", "uid-old")), c, false, "Released Retained"},
		{"claim gone, Delete", vol("v", "1Gi", "manual", claimedBy("default", "c", "uid-c"), reclaim(corev1.PersistentVolumeReclaimDelete)), nil, false, "Released delete"},
		{"claim gone, Delete, still mounted", vol("v", "1Gi", "manual", claimedBy("default", "c", "uid-c"), reclaim(corev1.PersistentVolumeReclaimDelete)), nil, true, "Released InUse"},
		{"claim gone, Delete, from Git", vol("v", "1Gi", "manual", claimedBy("default", "c", "uid-c"), reclaim(corev1.PersistentVolumeReclaimDelete), git), nil, false, "Released Retained claim default/c is gone; reclaimPolicy is Delete but the volume comes from Git"},
		{"claim bound elsewhere, binder's binding", vol("v", "1Gi", "manual", claimedBy("default", "c", "uid-c"), byBinder), claim("c", "1Gi", volumeName("w")), false, "Available unbind"},
		{"claim bound elsewhere, user's reservation", vol("v", "1Gi", "manual", claimedBy("default", "c", "")), claim("c", "1Gi", volumeName("w")), false, "Available reserved for claim default/c, which is bound to volume w"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := DecideVolume(VolumeInput{Volume: tc.pv, Claim: tc.claim, ClaimInUse: tc.inUse})
			got := strings.TrimSpace(strings.Join([]string{string(d.Phase), d.Reason, d.Message}, " "))
			if d.Delete {
				got += " delete"
			}
			if d.Unbind {
				got += " unbind"
			}
			got = strings.Join(strings.Fields(got), " ")
			if !strings.HasPrefix(got, tc.want) {
				t.Errorf("got  %s\nwant %s...", got, tc.want)
			}
		})
	}
}

func TestNodeSelectorMatches(t *testing.T) {
	req := func(key string, op corev1.NodeSelectorOperator, vals ...string) corev1.NodeSelectorRequirement {
		return corev1.NodeSelectorRequirement{Key: key, Operator: op, Values: vals}
	}
	lbl := map[string]string{"zone": "a", "gen": "5"}
	for _, tc := range []struct {
		terms []corev1.NodeSelectorTerm
		want  bool
	}{
		{nil, false},
		{[]corev1.NodeSelectorTerm{{}}, false},
		{[]corev1.NodeSelectorTerm{{MatchExpressions: []corev1.NodeSelectorRequirement{req("zone", corev1.NodeSelectorOpIn, "a", "b")}}}, true},
		{[]corev1.NodeSelectorTerm{{MatchExpressions: []corev1.NodeSelectorRequirement{req("zone", corev1.NodeSelectorOpNotIn, "a")}}}, false},
		{[]corev1.NodeSelectorTerm{{MatchExpressions: []corev1.NodeSelectorRequirement{req("zone", corev1.NodeSelectorOpIn, "b")}}, {MatchFields: []corev1.NodeSelectorRequirement{req("metadata.name", corev1.NodeSelectorOpIn, "n1")}}}, true},
		{[]corev1.NodeSelectorTerm{{MatchExpressions: []corev1.NodeSelectorRequirement{req("zone", corev1.NodeSelectorOpExists), req("gen", corev1.NodeSelectorOpGt, "4"), req("ssd", corev1.NodeSelectorOpDoesNotExist)}}}, true},
		{[]corev1.NodeSelectorTerm{{MatchExpressions: []corev1.NodeSelectorRequirement{req("gen", corev1.NodeSelectorOpLt, "4")}}}, false},
	} {
		if got := NodeSelectorMatches(&corev1.NodeSelector{NodeSelectorTerms: tc.terms}, "n1", lbl); got != tc.want {
			t.Errorf("terms %+v: %v, want %v", tc.terms, got, tc.want)
		}
	}
}

// TestConformanceMySQLPV: the Kubernetes example's claim binds to its
// volume; a 30Gi claim against the same volume stays Pending and says why.
func TestConformanceMySQLPV(t *testing.T) {
	path := filepath.Join("..", "..", "..", "shared", "conformance", "k8s-examples", "mysql-pv.yaml")
	if _, err := os.Stat(path); err != nil {
		t.Skipf("conformance examples not found: %v", err)
	}
	v, err := schema.NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	ms, ps := v.LoadPaths(path)
	if err := ps.Err(); err != nil {
		t.Fatal(err)
	}
	var pv *corev1.PersistentVolume
	var pvc *corev1.PersistentVolumeClaim
	for _, m := range ms {
		switch o := m.Object.(type) {
		case *corev1.PersistentVolume:
			pv = o
		case *corev1.PersistentVolumeClaim:
			pvc = o
		}
	}
	if pv == nil || pvc == nil {
		t.Fatalf("mysql-pv.yaml: volume %v, claim %v", pv, pvc)
	}
	pvc.Namespace, pvc.UID = "default", "uid-mysql"
	classes := []*storagev1.StorageClass{BuiltinClass()}
	if got := outcome(DecideClaim(ClaimInput{Claim: pvc, Volumes: []*corev1.PersistentVolume{pv}, Classes: classes})); got != "bind mysql-pv-volume" {
		t.Errorf("mysql-pv-claim: %s", got)
	}
	big := pvc.DeepCopy()
	big.Name, big.UID = "big", "uid-big"
	big.Spec.Resources.Requests[corev1.ResourceStorage] = resource.MustParse("30Gi")
	d := DecideClaim(ClaimInput{Claim: big, Volumes: []*corev1.PersistentVolume{pv}, Classes: classes})
	if d.Volume != nil || d.Phase != corev1.ClaimPending || !strings.Contains(d.Message, "1 too small (at most 20Gi)") {
		t.Errorf("30Gi claim: %s", outcome(d))
	}
}
