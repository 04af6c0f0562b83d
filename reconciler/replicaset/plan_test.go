package replicaset

import (
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

var now = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func testRS(replicas int32) *appsv1.ReplicaSet {
	labels := map[string]string{"app": "web", "pod-template-hash": "abc"}
	return &appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{Name: "web-abc", Namespace: "default", UID: "rs-uid", Generation: 3},
		Spec: appsv1.ReplicaSetSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "nginx"}}},
			},
		},
	}
}

type podOpt func(*corev1.Pod)

func bound(p *corev1.Pod)   { p.Spec.NodeName = "n1"; p.Status.Phase = corev1.PodRunning }
func isReady(p *corev1.Pod) { setReady(p, now.Add(-time.Hour)) }
func setReady(p *corev1.Pod, since time.Time) {
	p.Status.Conditions = append(p.Status.Conditions, corev1.PodCondition{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: metav1.NewTime(since)})
}
func age(d time.Duration) podOpt {
	return func(p *corev1.Pod) { p.CreationTimestamp = metav1.NewTime(now.Add(-d)) }
}
func owned(uid types.UID) podOpt {
	return func(p *corev1.Pod) {
		yes := true
		p.OwnerReferences = []metav1.OwnerReference{{Kind: "ReplicaSet", Name: "x", UID: uid, Controller: &yes}}
	}
}

func testPod(name string, opts ...podOpt) *corev1.Pod {
	rs := testRS(1)
	p := NewPod(rs)
	p.Name = name
	p.UID = types.UID("uid-" + name)
	p.CreationTimestamp = metav1.NewTime(now.Add(-time.Hour))
	for _, o := range opts {
		o(p)
	}
	return p
}

func names(ps []*corev1.Pod) string {
	var n []string
	for _, p := range ps {
		n = append(n, p.Name)
	}
	return strings.Join(n, ",")
}

// plan is Plan for a valid ReplicaSet.
func plan(t *testing.T, rs *appsv1.ReplicaSet, pods []*corev1.Pod, now time.Time) Actions {
	t.Helper()
	a, err := Plan(rs, pods, now)
	if err != nil {
		t.Fatalf("Plan: %v", err)
	}
	return a
}

func TestPlan(t *testing.T) {
	deleting := func(p *corev1.Pod) { ts := metav1.NewTime(now); p.DeletionTimestamp = &ts }
	failed := func(p *corev1.Pod) { p.Status.Phase = corev1.PodFailed }
	cases := []struct {
		name       string
		replicas   int32
		pods       []*corev1.Pod
		wantCreate int
		wantDelete string
		wantStatus appsv1.ReplicaSetStatus
	}{
		{name: "scale up from zero", replicas: 3, wantCreate: 3,
			wantStatus: appsv1.ReplicaSetStatus{ObservedGeneration: 3}},
		{name: "steady", replicas: 2,
			pods:       []*corev1.Pod{testPod("a", bound, isReady), testPod("b", bound, isReady)},
			wantStatus: appsv1.ReplicaSetStatus{Replicas: 2, FullyLabeledReplicas: 2, ReadyReplicas: 2, AvailableReplicas: 2, ObservedGeneration: 3}},
		{name: "pods being deleted, failed or not ours are not counted", replicas: 2,
			pods: []*corev1.Pod{
				testPod("a", bound, isReady), testPod("gone", bound, deleting), testPod("f", bound, failed),
				testPod("stranger", bound, isReady, owned("other")),
			},
			wantCreate: 1,
			wantStatus: appsv1.ReplicaSetStatus{Replicas: 1, FullyLabeledReplicas: 1, ReadyReplicas: 1, AvailableReplicas: 1, ObservedGeneration: 3}},
		{name: "scale down prefers unscheduled, then not ready, then newest", replicas: 1,
			pods: []*corev1.Pod{
				testPod("old-ready", bound, isReady, age(3*time.Hour)),
				testPod("new-ready", bound, isReady, age(time.Hour)),
				testPod("not-ready", bound, age(2*time.Hour)),
				testPod("unscheduled", age(4*time.Hour)),
			},
			wantDelete: "unscheduled,not-ready,new-ready",
			wantStatus: appsv1.ReplicaSetStatus{Replicas: 4, FullyLabeledReplicas: 4, ReadyReplicas: 2, AvailableReplicas: 2, ObservedGeneration: 3}},
		{name: "partially labeled pods", replicas: 1,
			pods: []*corev1.Pod{func() *corev1.Pod {
				p := testPod("a", bound)
				p.Labels = map[string]string{"app": "web"}
				return p
			}()},
			wantStatus: appsv1.ReplicaSetStatus{Replicas: 1, ObservedGeneration: 3}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a := plan(t, testRS(c.replicas), c.pods, now)
			if a.Create != c.wantCreate || names(a.Delete) != c.wantDelete {
				t.Errorf("create %d delete %q, want %d %q", a.Create, names(a.Delete), c.wantCreate, c.wantDelete)
			}
			if a.Status.String() != c.wantStatus.String() {
				t.Errorf("status\n got %v\nwant %v", a.Status.String(), c.wantStatus.String())
			}
		})
	}
}

func TestMinReadySeconds(t *testing.T) {
	rs := testRS(1)
	rs.Spec.MinReadySeconds = 10
	p := testPod("a", bound)
	setReady(p, now.Add(-4*time.Second))
	a := plan(t, rs, []*corev1.Pod{p}, now)
	if a.Status.ReadyReplicas != 1 || a.Status.AvailableReplicas != 0 || a.RequeueAfter != 6*time.Second {
		t.Fatalf("status %v requeue %v", a.Status, a.RequeueAfter)
	}
	a = plan(t, rs, []*corev1.Pod{p}, now.Add(6*time.Second))
	if a.Status.AvailableReplicas != 1 || a.RequeueAfter != 0 {
		t.Fatalf("later: status %v requeue %v", a.Status, a.RequeueAfter)
	}
}

func TestBurst(t *testing.T) {
	if a := plan(t, testRS(2000), nil, now); a.Create != BurstReplicas {
		t.Errorf("create %d, want %d", a.Create, BurstReplicas)
	}
}

func TestNewPod(t *testing.T) {
	rs := testRS(1)
	p := NewPod(rs)
	if !strings.HasPrefix(p.Name, "web-abc-") || len(p.Name) != len("web-abc-")+5 {
		t.Errorf("name %q", p.Name)
	}
	ref := metav1.GetControllerOf(p)
	if ref == nil || ref.UID != rs.UID || ref.Kind != "ReplicaSet" || ref.APIVersion != "apps/v1" {
		t.Errorf("owner %+v", p.OwnerReferences)
	}
	if p.Labels["pod-template-hash"] != "abc" || p.Spec.Containers[0].Image != "nginx" {
		t.Errorf("template not applied: %v %v", p.Labels, p.Spec.Containers)
	}
	p.Labels["x"] = "y"
	if rs.Spec.Template.Labels["x"] != "" {
		t.Error("pod shares the template's label map")
	}
	if q := NewPod(rs); q.Name == p.Name {
		t.Error("two pods with the same name")
	}
}
