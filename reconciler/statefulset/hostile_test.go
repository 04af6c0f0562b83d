package statefulset

import (
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

type hostileCase struct {
	name    string
	invalid bool
	set     *appsv1.StatefulSet
}

// hostile are StatefulSets as they may reach the store past admission.
func hostile() []hostileCase {
	i32 := func(v int32) *int32 { return &v }
	ordinals := func(start int32) setOpt {
		return func(s *appsv1.StatefulSet) { s.Spec.Ordinals = &appsv1.StatefulSetOrdinals{Start: start} }
	}
	replicas := func(n int32) setOpt { return func(s *appsv1.StatefulSet) { s.Spec.Replicas = i32(n) } }
	return []hostileCase{
		{"negative replicas", true, testSet(-1)},
		{"huge replicas, ordered", false, testSet(math.MaxInt32)},
		{"huge replicas, parallel", false, testSet(math.MaxInt32, parallel)},
		{"huge replicas, huge partition", false, testSet(math.MaxInt32, partition(math.MaxInt32))},
		{"negative partition", false, testSet(3, partition(-9), image("nginx:2"))},
		{"negative ordinals start", true, testSet(3, ordinals(-1))},
		{"huge ordinals start", false, testSet(3, ordinals(math.MaxInt32-1))},
		{"huge ordinals start and replicas", false, testSet(math.MaxInt32, ordinals(math.MaxInt32), parallel)},
		{"nil selector", true, testSet(3, func(s *appsv1.StatefulSet) { s.Spec.Selector = nil })},
		{"empty selector", true, testSet(3, func(s *appsv1.StatefulSet) { s.Spec.Selector = &metav1.LabelSelector{} })},
		{"selector not matching", true, testSet(3, func(s *appsv1.StatefulSet) { s.Spec.Template.Labels = map[string]string{"x": "y"} })},
		{"no containers", true, testSet(3, func(s *appsv1.StatefulSet) { s.Spec.Template.Spec.Containers = nil })},
		{"unknown pod management", true, testSet(3, func(s *appsv1.StatefulSet) { s.Spec.PodManagementPolicy = "Sideways" })},
		{"unknown update strategy", true, testSet(3, func(s *appsv1.StatefulSet) { s.Spec.UpdateStrategy.Type = "Never" })},
		{"claim template without name", true, testSet(3, func(s *appsv1.StatefulSet) { s.Spec.VolumeClaimTemplates[0].Name = "" })},
		{"duplicate claim templates", true, testSet(3, func(s *appsv1.StatefulSet) {
			s.Spec.VolumeClaimTemplates = append(s.Spec.VolumeClaimTemplates, s.Spec.VolumeClaimTemplates[0])
		})},
		{"claim template without size", false, testSet(3, func(s *appsv1.StatefulSet) {
			s.Spec.VolumeClaimTemplates[0].Spec.Resources = corev1.VolumeResourceRequirements{}
		})},
		{"enormous name", true, testSet(3, func(s *appsv1.StatefulSet) { s.Name = strings.Repeat("s", 300) })},
		{"negative minReadySeconds", true, testSet(3, func(s *appsv1.StatefulSet) { s.Spec.MinReadySeconds = -1 })},
		{"zero replicas, pods above", false, testSet(0, replicas(0))},
	}
}

// TestPlanHostile: no StatefulSet makes Plan panic, allocate by
// spec.replicas, or create more than the burst; what it cannot act on is
// an error.
func TestPlanHostile(t *testing.T) {
	pods := []*corev1.Pod{old(0, running, ready), old(1, running), old(7, running, ready), old(2, terminating)}
	for _, h := range hostile() {
		for i, ps := range [][]*corev1.Pod{nil, pods} {
			t.Run(fmt.Sprintf("%s/pods%d", h.name, i), func(t *testing.T) {
				start := time.Now()
				a, err := Plan(h.set, ps, claims("www-web-0"), now)
				if (err != nil) != h.invalid {
					t.Fatalf("err = %v, want invalid=%v", err, h.invalid)
				}
				if len(a.Create) > BurstReplicas || len(a.CreateClaims) > BurstReplicas*len(h.set.Spec.VolumeClaimTemplates) {
					t.Errorf("creates %d pods, %d claims: beyond the burst", len(a.Create), len(a.CreateClaims))
				}
				if el := time.Since(start); el > 10*time.Second {
					t.Errorf("Plan took %s: it loops over spec.replicas", el)
				}
			})
		}
	}
}

// FuzzPlan: whatever JSON decodes into a StatefulSet, Plan does not panic
// nor create beyond the burst.
func FuzzPlan(f *testing.F) {
	for _, h := range hostile() {
		if b, err := json.Marshal(h.set); err == nil && len(b) < 4096 {
			f.Add(b)
		}
	}
	pods := []*corev1.Pod{old(0, running, ready), old(3, running)}
	f.Fuzz(func(t *testing.T, data []byte) {
		var s appsv1.StatefulSet
		if json.Unmarshal(data, &s) != nil {
			return
		}
		s.UID = "set-uid"
		a, err := Plan(&s, pods, claims("www-web-0"), now)
		if err == nil && len(a.Create) > BurstReplicas {
			t.Errorf("creates %d pods", len(a.Create))
		}
	})
}
