package deployment

import (
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
)

type hostileCase struct {
	name    string
	invalid bool
	d       *appsv1.Deployment
}

// hostile are Deployments as they may reach the store past admission.
func hostile() []hostileCase {
	mk := func(fn func(d *appsv1.Deployment)) *appsv1.Deployment {
		d := testDeployment(3, "a")
		fn(d)
		return d
	}
	i, s := intstr.FromInt32, intstr.FromString
	rolling := func(surge, unavail intstr.IntOrString) func(d *appsv1.Deployment) {
		return func(d *appsv1.Deployment) {
			d.Spec.Strategy.RollingUpdate = &appsv1.RollingUpdateDeployment{MaxSurge: &surge, MaxUnavailable: &unavail}
		}
	}
	return []hostileCase{
		{"negative replicas", true, mk(func(d *appsv1.Deployment) { d.Spec.Replicas = ptr(int32(-1)) })},
		{"huge replicas", false, mk(func(d *appsv1.Deployment) { d.Spec.Replicas = ptr(int32(math.MaxInt32)) })},
		{"huge replicas, huge surge", false, mk(func(d *appsv1.Deployment) {
			d.Spec.Replicas = ptr(int32(math.MaxInt32))
			rolling(s("100000%"), s("100000%"))(d)
		})},
		{"maxSurge=maxUnavailable=0", false, mk(rolling(i(0), i(0)))},
		{"negative maxSurge", true, mk(rolling(i(-5), i(1)))},
		{"maxSurge not a percentage", true, mk(rolling(s("lots"), i(1)))},
		{"unknown strategy", true, mk(func(d *appsv1.Deployment) { d.Spec.Strategy.Type = "BlueGreen" })},
		{"recreate with rollingUpdate", true, mk(func(d *appsv1.Deployment) {
			d.Spec.Strategy.Type = appsv1.RecreateDeploymentStrategyType
			rolling(i(1), i(1))(d)
		})},
		{"negative revisionHistoryLimit", true, mk(func(d *appsv1.Deployment) { d.Spec.RevisionHistoryLimit = ptr(int32(-3)) })},
		{"negative progressDeadlineSeconds", true, mk(func(d *appsv1.Deployment) { d.Spec.ProgressDeadlineSeconds = ptr(int32(-1)) })},
		{"huge progressDeadlineSeconds", false, mk(func(d *appsv1.Deployment) { d.Spec.ProgressDeadlineSeconds = ptr(int32(math.MaxInt32)) })},
		{"nil selector", true, mk(func(d *appsv1.Deployment) { d.Spec.Selector = nil })},
		{"empty selector", true, mk(func(d *appsv1.Deployment) { d.Spec.Selector = &metav1.LabelSelector{} })},
		{"selector not matching", true, mk(func(d *appsv1.Deployment) { d.Spec.Template.Labels = nil })},
		{"no containers", true, mk(func(d *appsv1.Deployment) { d.Spec.Template.Spec.Containers = nil })},
		{"enormous name", true, mk(func(d *appsv1.Deployment) { d.Name = strings.Repeat("d", 300) })},
		{"paused and huge", false, mk(func(d *appsv1.Deployment) { d.Spec.Paused = true; d.Spec.Replicas = ptr(int32(math.MaxInt32)) })},
	}
}

// hostileReplicaSets are ReplicaSets d controls, as they may be stored:
// enormous, negative, with garbage revisions and statuses.
func hostileReplicaSets(d *appsv1.Deployment) [][]*appsv1.ReplicaSet {
	yes := true
	rs := func(name, hash string, replicas int32, rev string, avail int32) *appsv1.ReplicaSet {
		r := &appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", UID: types.UID("uid-" + name),
			Labels:          map[string]string{HashLabel: hash},
			Annotations:     map[string]string{RevisionAnnotation: rev},
			OwnerReferences: []metav1.OwnerReference{{Kind: "Deployment", Name: d.Name, UID: d.UID, Controller: &yes}}},
			Spec:   appsv1.ReplicaSetSpec{Replicas: &replicas},
			Status: appsv1.ReplicaSetStatus{Replicas: replicas, AvailableReplicas: avail, ReadyReplicas: avail}}
		return r
	}
	cur := TemplateHash(&d.Spec.Template)
	return [][]*appsv1.ReplicaSet{
		nil,
		{rs("old1", "x", math.MaxInt32, "1", math.MaxInt32), rs("old2", "y", math.MaxInt32, "2", -5)},
		{rs("old", "x", -7, "9223372036854775807", math.MinInt32), rs("new", cur, math.MaxInt32, "garbage", 0)},
		{rs("new", cur, 2, "1", 2), rs("new-too", cur, 3, "1", 1)},
	}
}

// TestPlanHostile: no Deployment and no set of ReplicaSets makes Plan
// panic or plan a negative size.
func TestPlanHostile(t *testing.T) {
	for _, h := range hostile() {
		for i, rss := range hostileReplicaSets(h.d) {
			t.Run(fmt.Sprintf("%s/rs%d", h.name, i), func(t *testing.T) {
				a, err := Plan(h.d, rss, nil, now)
				if (err != nil) != h.invalid {
					t.Fatalf("err = %v, want invalid=%v", err, h.invalid)
				}
				checkSizes(t, a)
			})
		}
	}
}

func checkSizes(t *testing.T, a Actions) {
	t.Helper()
	if a.Create != nil && *a.Create.Spec.Replicas < 0 {
		t.Errorf("creates a ReplicaSet of %d", *a.Create.Spec.Replicas)
	}
	for _, u := range a.Updates {
		if *u.Spec.Replicas < 0 {
			t.Errorf("scales %s to %d", u.Name, *u.Spec.Replicas)
		}
	}
	if a.Status.UnavailableReplicas < 0 {
		t.Errorf("status %+v", a.Status)
	}
}

// FuzzPlan: whatever JSON decodes into a Deployment, Plan does not panic.
func FuzzPlan(f *testing.F) {
	for _, h := range hostile() {
		if b, err := json.Marshal(h.d); err == nil && len(b) < 4096 {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var d appsv1.Deployment
		if json.Unmarshal(data, &d) != nil {
			return
		}
		d.UID = "d-uid"
		for _, rss := range hostileReplicaSets(&d) {
			a, err := Plan(&d, rss, []*corev1.Pod{}, now)
			if err == nil {
				checkSizes(t, a)
			}
		}
	})
}
