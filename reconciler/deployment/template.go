package deployment

import (
	"encoding/json"
	"fmt"
	"hash/fnv"
	"strconv"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/rand"

	"github.com/flotilla-dev/flotilla/reconciler/internal/wellformed"
)

// Well-known labels and annotations, as Kubernetes names them.
const (
	// HashLabel is added to a ReplicaSet's selector, its template labels and
	// so its pods, so that ReplicaSets of different templates never overlap.
	HashLabel = appsv1.DefaultDeploymentUniqueLabelKey // "pod-template-hash"
	// RevisionAnnotation numbers the rollouts of a Deployment, on it and on
	// each of its ReplicaSets.
	RevisionAnnotation = "deployment.kubernetes.io/revision"
)

// Defaults, as Kubernetes applies them.
const (
	DefaultRevisionHistoryLimit = 10
)

// TemplateHash is the pod-template-hash of a pod template: FNV-32a of its
// JSON encoding (without any pod-template-hash label), safe-encoded like
// Kubernetes' (the value differs from Kubernetes' own, which hashes a Go
// dump of the struct).
func TemplateHash(t *corev1.PodTemplateSpec) string {
	c := t.DeepCopy()
	delete(c.Labels, HashLabel)
	if len(c.Labels) == 0 {
		c.Labels = nil
	}
	b, err := json.Marshal(c)
	if err != nil {
		panic(fmt.Sprintf("deployment: encoding pod template: %v", err)) // cannot happen for API types
	}
	h := fnv.New32a()
	h.Write(b)
	return rand.SafeEncodeString(strconv.FormatUint(uint64(h.Sum32()), 10))
}

// ReplicasOf is *spec.replicas, 1 when unset.
func replicasOf(p *int32) int32 {
	if p == nil {
		return 1
	}
	return *p
}

// RollingParams resolves maxSurge and maxUnavailable against replicas as
// Kubernetes does: defaults 25%, surge rounds up, unavailable rounds down,
// and when both come to 0, unavailable is 1. A negative value, or one
// that is not an integer or a percentage, is an error; a huge one is
// capped at the largest int32.
func RollingParams(d *appsv1.Deployment) (surge, unavailable int32, err error) {
	def := intstr.FromString("25%")
	ms, mu := &def, &def
	if ru := d.Spec.Strategy.RollingUpdate; ru != nil {
		if ru.MaxSurge != nil {
			ms = ru.MaxSurge
		}
		if ru.MaxUnavailable != nil {
			mu = ru.MaxUnavailable
		}
	}
	replicas := int(replicasOf(d.Spec.Replicas))
	s, err := intstr.GetScaledValueFromIntOrPercent(ms, replicas, true)
	if err != nil {
		return 0, 0, fmt.Errorf("spec.strategy.rollingUpdate.maxSurge: %w", err)
	}
	u, err := intstr.GetScaledValueFromIntOrPercent(mu, replicas, false)
	if err != nil {
		return 0, 0, fmt.Errorf("spec.strategy.rollingUpdate.maxUnavailable: %w", err)
	}
	if s < 0 || u < 0 {
		return 0, 0, fmt.Errorf("spec.strategy.rollingUpdate: maxSurge %s and maxUnavailable %s must not be negative", ms.String(), mu.String())
	}
	if s == 0 && u == 0 {
		u = 1
	}
	return wellformed.ClampInt32(int64(s)), wellformed.ClampInt32(int64(u)), nil
}

// Revision reads the revision annotation (0 when absent or invalid).
func Revision(obj metav1.Object) int64 {
	v, err := strconv.ParseInt(obj.GetAnnotations()[RevisionAnnotation], 10, 64)
	if err != nil {
		return 0
	}
	return v
}

func setRevision(obj metav1.Object, rev int64) {
	a := obj.GetAnnotations()
	if a == nil {
		a = map[string]string{}
	}
	a[RevisionAnnotation] = strconv.FormatInt(rev, 10)
	obj.SetAnnotations(a)
}

// NewReplicaSet builds the ReplicaSet of d's current template: named
// <deployment>-<hash>, the hash label added to its selector and template,
// owned by d (controller, blockOwnerDeletion).
func NewReplicaSet(d *appsv1.Deployment, hash string, replicas int32, revision int64) *appsv1.ReplicaSet {
	tmpl := d.Spec.Template.DeepCopy()
	if tmpl.Labels == nil {
		tmpl.Labels = map[string]string{}
	}
	tmpl.Labels[HashLabel] = hash
	sel := &metav1.LabelSelector{}
	if d.Spec.Selector != nil {
		sel = d.Spec.Selector.DeepCopy()
	}
	if sel.MatchLabels == nil {
		sel.MatchLabels = map[string]string{}
	}
	sel.MatchLabels[HashLabel] = hash
	labels := map[string]string{}
	for k, v := range tmpl.Labels {
		labels[k] = v
	}
	yes := true
	rs := &appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{
			Name:      d.Name + "-" + hash,
			Namespace: d.Namespace,
			Labels:    labels,
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion: "apps/v1", Kind: "Deployment", Name: d.Name, UID: d.UID,
				Controller: &yes, BlockOwnerDeletion: &yes,
			}},
		},
		Spec: appsv1.ReplicaSetSpec{
			Replicas:        &replicas,
			MinReadySeconds: d.Spec.MinReadySeconds,
			Selector:        sel,
			Template:        *tmpl,
		},
	}
	rs.APIVersion, rs.Kind = "apps/v1", "ReplicaSet"
	setRevision(rs, revision)
	return rs
}
