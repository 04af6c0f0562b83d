package replicaset

import (
	"encoding/json"
	"math"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// hostile are ReplicaSets as they may reach the store past admission, each
// with whether Plan must refuse it (an error: stalled).
func hostile() []struct {
	name    string
	invalid bool
	rs      *appsv1.ReplicaSet
} {
	mk := func(fn func(rs *appsv1.ReplicaSet)) *appsv1.ReplicaSet {
		rs := testRS(3)
		fn(rs)
		return rs
	}
	i32 := func(v int32) *int32 { return &v }
	return []struct {
		name    string
		invalid bool
		rs      *appsv1.ReplicaSet
	}{
		{"negative replicas", true, mk(func(rs *appsv1.ReplicaSet) { rs.Spec.Replicas = i32(-1) })},
		{"most negative replicas", true, mk(func(rs *appsv1.ReplicaSet) { rs.Spec.Replicas = i32(math.MinInt32) })},
		{"huge replicas", false, mk(func(rs *appsv1.ReplicaSet) { rs.Spec.Replicas = i32(math.MaxInt32) })},
		{"nil replicas", false, mk(func(rs *appsv1.ReplicaSet) { rs.Spec.Replicas = nil })},
		{"nil selector", true, mk(func(rs *appsv1.ReplicaSet) { rs.Spec.Selector = nil })},
		{"empty selector", true, mk(func(rs *appsv1.ReplicaSet) { rs.Spec.Selector = &metav1.LabelSelector{} })},
		{"bad selector operator", true, mk(func(rs *appsv1.ReplicaSet) {
			rs.Spec.Selector.MatchExpressions = []metav1.LabelSelectorRequirement{{Key: "app", Operator: "Near"}}
		})},
		{"selector not matching the template", true, mk(func(rs *appsv1.ReplicaSet) { rs.Spec.Template.Labels = map[string]string{"app": "other"} })},
		{"no containers", true, mk(func(rs *appsv1.ReplicaSet) { rs.Spec.Template.Spec.Containers = nil })},
		{"container without image", true, mk(func(rs *appsv1.ReplicaSet) { rs.Spec.Template.Spec.Containers[0].Image = "" })},
		{"duplicate container names", true, mk(func(rs *appsv1.ReplicaSet) {
			rs.Spec.Template.Spec.Containers = append(rs.Spec.Template.Spec.Containers, rs.Spec.Template.Spec.Containers[0])
		})},
		{"negative minReadySeconds", true, mk(func(rs *appsv1.ReplicaSet) { rs.Spec.MinReadySeconds = -5 })},
		{"huge minReadySeconds", false, mk(func(rs *appsv1.ReplicaSet) { rs.Spec.MinReadySeconds = math.MaxInt32 })},
		{"enormous name", false, mk(func(rs *appsv1.ReplicaSet) { rs.Name = strings.Repeat("n", 10000) })},
		{"enormous labels", true, mk(func(rs *appsv1.ReplicaSet) {
			big := strings.Repeat("v", 100000)
			rs.Spec.Selector.MatchLabels["big"] = big
			rs.Spec.Template.Labels["big"] = big
		})},
	}
}

// TestPlanHostile: no input makes Plan panic or plan more than the burst;
// what it cannot act on is an error.
func TestPlanHostile(t *testing.T) {
	pods := []*corev1.Pod{testPod("a", bound, isReady), testPod("b"), testPod("c", bound)}
	for _, h := range hostile() {
		t.Run(h.name, func(t *testing.T) {
			for _, ps := range [][]*corev1.Pod{nil, pods} {
				a, err := Plan(h.rs, ps, now)
				if (err != nil) != h.invalid {
					t.Fatalf("err = %v, want invalid=%v", err, h.invalid)
				}
				if a.Create > BurstReplicas || len(a.Delete) > BurstReplicas || a.Create < 0 {
					t.Errorf("create %d delete %d: beyond the burst", a.Create, len(a.Delete))
				}
			}
		})
	}
	if n := len(PodName(hostile()[13].rs)); n > 63 {
		t.Errorf("a pod of an enormous ReplicaSet is named with %d characters", n)
	}
}

// FuzzPlan: whatever JSON decodes into a ReplicaSet, Plan neither panics
// nor plans beyond the burst.
func FuzzPlan(f *testing.F) {
	for _, h := range hostile() {
		if b, err := json.Marshal(h.rs); err == nil && len(b) < 4096 {
			f.Add(b)
		}
	}
	pods := []*corev1.Pod{testPod("a", bound, isReady), testPod("b")}
	f.Fuzz(func(t *testing.T, data []byte) {
		var rs appsv1.ReplicaSet
		if json.Unmarshal(data, &rs) != nil {
			return
		}
		rs.UID = "rs-uid"
		a, err := Plan(&rs, pods, now)
		if err == nil && (a.Create > BurstReplicas || a.Create < 0) {
			t.Errorf("create %d", a.Create)
		}
		_ = time.Second
	})
}
