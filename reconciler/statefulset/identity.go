package statefulset

import (
	"strconv"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flotilla-dev/flotilla/reconciler/deployment"
)

// Labels every pod of a StatefulSet carries, with Kubernetes' keys.
const (
	// LabelPodName is the pod's own name, for a Service per pod.
	LabelPodName = appsv1.StatefulSetPodNameLabel // "statefulset.kubernetes.io/pod-name"
	// LabelPodIndex is the pod's ordinal.
	LabelPodIndex = appsv1.PodIndexLabel // "apps.kubernetes.io/pod-index"
	// LabelRevision is the revision (RevisionName) the pod was made from.
	LabelRevision = appsv1.ControllerRevisionHashLabelKey // "controller-revision-hash"
)

// PodName is the name of the pod of set with ordinal: "<set>-<ordinal>".
func PodName(set *appsv1.StatefulSet, ordinal int) string {
	return set.Name + "-" + strconv.Itoa(ordinal)
}

// ClaimName is the name of the claim made from the volumeClaimTemplate
// called template for the pod of set with ordinal:
// "<template>-<set>-<ordinal>" (www-web-0).
func ClaimName(set *appsv1.StatefulSet, template string, ordinal int) string {
	return template + "-" + set.Name + "-" + strconv.Itoa(ordinal)
}

// Ordinal parses the ordinal out of a pod name of set; false if name is not
// "<set>-<non-negative integer>".
func Ordinal(set *appsv1.StatefulSet, name string) (int, bool) {
	return parseOrdinal(set.Name+"-", name)
}

func parseOrdinal(prefix, name string) (int, bool) {
	s, ok := strings.CutPrefix(name, prefix)
	if !ok || s == "" || (len(s) > 1 && s[0] == '0') {
		return 0, false
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return 0, false
	}
	return n, true
}

// RevisionName names the revision of set's current pod template:
// "<set>-<hash>", the hash computed as Deployments compute their
// pod-template-hash. It is the value of LabelRevision on the pods made from
// that template and of status.updateRevision.
func RevisionName(set *appsv1.StatefulSet) string {
	return set.Name + "-" + deployment.TemplateHash(&set.Spec.Template)
}

// NewPod builds the pod of set with ordinal from tmpl (set.Spec.Template,
// or an older revision's) at revision: named PodName, labelled with the
// template's labels plus LabelPodName, LabelPodIndex and LabelRevision,
// hostname its name and subdomain spec.serviceName (so that the headless
// service gives it a DNS name), one persistentVolumeClaim volume per
// volumeClaimTemplate (replacing a template volume of the same name), and
// controlled by set.
func NewPod(set *appsv1.StatefulSet, ordinal int, tmpl *corev1.PodTemplateSpec, revision string) *corev1.Pod {
	t := tmpl.DeepCopy()
	name := PodName(set, ordinal)
	labels := make(map[string]string, len(t.Labels)+3)
	for k, v := range t.Labels {
		labels[k] = v
	}
	labels[LabelPodName] = name
	labels[LabelPodIndex] = strconv.Itoa(ordinal)
	labels[LabelRevision] = revision
	yes := true
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name:        name,
			Namespace:   set.Namespace,
			Labels:      labels,
			Annotations: t.Annotations,
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion: "apps/v1", Kind: "StatefulSet", Name: set.Name, UID: set.UID,
				Controller: &yes, BlockOwnerDeletion: &yes,
			}},
		},
		Spec: t.Spec,
	}
	p.APIVersion, p.Kind = "v1", "Pod"
	p.Spec.Hostname = name
	p.Spec.Subdomain = set.Spec.ServiceName
	p.Spec.Volumes = claimVolumes(set, ordinal, p.Spec.Volumes)
	return p
}

// claimVolumes returns vols with a volume per claim template pointing at
// the ordinal's claim: one of the same name is replaced in place, the
// others are appended in template order.
func claimVolumes(set *appsv1.StatefulSet, ordinal int, vols []corev1.Volume) []corev1.Volume {
	if len(set.Spec.VolumeClaimTemplates) == 0 {
		return vols
	}
	claimVol := func(name string) corev1.Volume {
		return corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{
			PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: ClaimName(set, name, ordinal)},
		}}
	}
	out := make([]corev1.Volume, 0, len(vols)+len(set.Spec.VolumeClaimTemplates))
	placed := map[string]bool{}
	isClaim := map[string]bool{}
	for _, ct := range set.Spec.VolumeClaimTemplates {
		isClaim[ct.Name] = true
	}
	for _, v := range vols {
		if isClaim[v.Name] {
			if !placed[v.Name] {
				out = append(out, claimVol(v.Name))
				placed[v.Name] = true
			}
			continue
		}
		out = append(out, v)
	}
	for _, ct := range set.Spec.VolumeClaimTemplates {
		if !placed[ct.Name] {
			out = append(out, claimVol(ct.Name))
			placed[ct.Name] = true
		}
	}
	return out
}

// NewClaim builds the claim of the pod of set with ordinal from the
// volumeClaimTemplate tmpl: named ClaimName, in set's namespace, labelled
// with the template's labels plus set's selector labels. It is not owned by
// set (claims outlive their pods and the set: retention Retain), except
// that whenDeleted Delete makes set a (non-controller) owner, so that the
// garbage collector removes the claim with the set.
func NewClaim(set *appsv1.StatefulSet, tmpl *corev1.PersistentVolumeClaim, ordinal int) *corev1.PersistentVolumeClaim {
	t := tmpl.DeepCopy()
	labels := map[string]string{}
	for k, v := range t.Labels {
		labels[k] = v
	}
	if set.Spec.Selector != nil {
		for k, v := range set.Spec.Selector.MatchLabels {
			labels[k] = v
		}
	}
	c := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{
			Name:        ClaimName(set, t.Name, ordinal),
			Namespace:   set.Namespace,
			Labels:      labels,
			Annotations: t.Annotations,
		},
		Spec: t.Spec,
	}
	c.APIVersion, c.Kind = "v1", "PersistentVolumeClaim"
	if retention(set).WhenDeleted == appsv1.DeletePersistentVolumeClaimRetentionPolicyType {
		c.OwnerReferences = []metav1.OwnerReference{setRef(set)}
	}
	return c
}

// setRef is the non-controller owner reference a claim carries under
// whenDeleted: Delete.
func setRef(set *appsv1.StatefulSet) metav1.OwnerReference {
	return metav1.OwnerReference{APIVersion: "apps/v1", Kind: "StatefulSet", Name: set.Name, UID: set.UID}
}

// retention is set's claim retention policy with defaults (Retain, Retain).
func retention(set *appsv1.StatefulSet) appsv1.StatefulSetPersistentVolumeClaimRetentionPolicy {
	r := appsv1.StatefulSetPersistentVolumeClaimRetentionPolicy{
		WhenDeleted: appsv1.RetainPersistentVolumeClaimRetentionPolicyType,
		WhenScaled:  appsv1.RetainPersistentVolumeClaimRetentionPolicyType,
	}
	if p := set.Spec.PersistentVolumeClaimRetentionPolicy; p != nil {
		if p.WhenDeleted != "" {
			r.WhenDeleted = p.WhenDeleted
		}
		if p.WhenScaled != "" {
			r.WhenScaled = p.WhenScaled
		}
	}
	return r
}

// templateFromPod recovers the pod template that NewPod made p from, when
// it hashes to the revision p is labelled with; nil otherwise (a template
// whose hostname, subdomain, nodeName or claim-named volumes NewPod
// overwrote cannot be recovered). It lets a pod below the partition of a
// rolling update be recreated at the old revision although only the
// current template is stored.
func templateFromPod(set *appsv1.StatefulSet, p *corev1.Pod) *corev1.PodTemplateSpec {
	rev := p.Labels[LabelRevision]
	hash, ok := strings.CutPrefix(rev, set.Name+"-")
	if !ok {
		return nil
	}
	t := &corev1.PodTemplateSpec{Spec: *p.Spec.DeepCopy()}
	for k, v := range p.Labels {
		if k == LabelPodName || k == LabelPodIndex || k == LabelRevision {
			continue
		}
		if t.Labels == nil {
			t.Labels = map[string]string{}
		}
		t.Labels[k] = v
	}
	for k, v := range p.Annotations {
		if t.Annotations == nil {
			t.Annotations = map[string]string{}
		}
		t.Annotations[k] = v
	}
	t.Spec.NodeName, t.Spec.Hostname, t.Spec.Subdomain = "", "", ""
	ord, _ := Ordinal(set, p.Name)
	var vols []corev1.Volume
	for _, v := range t.Spec.Volumes {
		if c := v.PersistentVolumeClaim; c != nil && isClaimTemplate(set, v.Name) && c.ClaimName == ClaimName(set, v.Name, ord) {
			continue
		}
		vols = append(vols, v)
	}
	t.Spec.Volumes = vols
	if deployment.TemplateHash(t) != hash {
		return nil
	}
	return t
}

func isClaimTemplate(set *appsv1.StatefulSet, name string) bool {
	for _, ct := range set.Spec.VolumeClaimTemplates {
		if ct.Name == name {
			return true
		}
	}
	return false
}

// claimOrdinal parses name as a claim of set ("<template>-<set>-<ordinal>"
// for one of its templates).
func claimOrdinal(set *appsv1.StatefulSet, name string) (int, bool) {
	for _, ct := range set.Spec.VolumeClaimTemplates {
		if ord, ok := parseOrdinal(ct.Name+"-"+set.Name+"-", name); ok {
			return ord, true
		}
	}
	return 0, false
}
