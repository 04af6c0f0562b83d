package statefulset

import (
	"fmt"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/flotilla-dev/flotilla/schema"
)

var now = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

type setOpt func(*appsv1.StatefulSet)

func testSet(replicas int32, opts ...setOpt) *appsv1.StatefulSet {
	labels := map[string]string{"app": "nginx"}
	s := &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default", UID: "set-uid", Generation: 4},
		Spec: appsv1.StatefulSetSpec{
			Replicas:    &replicas,
			ServiceName: "nginx",
			Selector:    &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{
					Name: "nginx", Image: "nginx:1",
					VolumeMounts: []corev1.VolumeMount{{Name: "www", MountPath: "/usr/share/nginx/html"}},
				}}},
			},
			VolumeClaimTemplates: []corev1.PersistentVolumeClaim{{
				ObjectMeta: metav1.ObjectMeta{Name: "www"},
				Spec: corev1.PersistentVolumeClaimSpec{
					AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
					Resources:   corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}},
				},
			}},
		},
	}
	s.APIVersion, s.Kind = "apps/v1", "StatefulSet"
	for _, o := range opts {
		o(s)
	}
	return s
}

func parallel(s *appsv1.StatefulSet) { s.Spec.PodManagementPolicy = appsv1.ParallelPodManagement }
func onDelete(s *appsv1.StatefulSet) {
	s.Spec.UpdateStrategy = appsv1.StatefulSetUpdateStrategy{Type: appsv1.OnDeleteStatefulSetStrategyType}
}
func image(img string) setOpt {
	return func(s *appsv1.StatefulSet) { s.Spec.Template.Spec.Containers[0].Image = img }
}
func partition(n int32) setOpt {
	return func(s *appsv1.StatefulSet) {
		s.Spec.UpdateStrategy = appsv1.StatefulSetUpdateStrategy{Type: appsv1.RollingUpdateStatefulSetStrategyType,
			RollingUpdate: &appsv1.RollingUpdateStatefulSetStrategy{Partition: &n}}
	}
}
func whenScaledDelete(s *appsv1.StatefulSet) {
	s.Spec.PersistentVolumeClaimRetentionPolicy = &appsv1.StatefulSetPersistentVolumeClaimRetentionPolicy{WhenScaled: appsv1.DeletePersistentVolumeClaimRetentionPolicyType}
}
func whenDeletedDelete(s *appsv1.StatefulSet) {
	s.Spec.PersistentVolumeClaimRetentionPolicy = &appsv1.StatefulSetPersistentVolumeClaimRetentionPolicy{WhenDeleted: appsv1.DeletePersistentVolumeClaimRetentionPolicyType}
}

// rev1 is the revision of testSet's template (image nginx:1), current in
// the status of sets made by rolled.
var rev1 = RevisionName(testSet(1))

// rolled marks the set as fully rolled out at rev1 (its status), as the
// controller would have written it before the template changed.
func rolled(s *appsv1.StatefulSet) { s.Status.CurrentRevision = rev1 }

type podOpt func(*corev1.Pod)

func ready(p *corev1.Pod) {
	p.Spec.NodeName = "n1"
	p.Status.Phase = corev1.PodRunning
	p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: metav1.NewTime(now.Add(-time.Hour))}}
}
func running(p *corev1.Pod) { p.Spec.NodeName = "n1"; p.Status.Phase = corev1.PodRunning }
func phase(ph corev1.PodPhase) podOpt {
	return func(p *corev1.Pod) { p.Spec.NodeName = "n1"; p.Status.Phase = ph }
}
func terminating(p *corev1.Pod) { ts := metav1.NewTime(now); p.DeletionTimestamp = &ts }

// nodeLost is a pod on an unreachable node as nodelifecycle leaves it:
// Running as last reported, Ready=False, reason NodeLost.
func nodeLost(p *corev1.Pod) {
	ready(p)
	p.Status.Conditions[0].Status = corev1.ConditionFalse
	p.Status.Reason = "NodeLost"
}
func foreign(p *corev1.Pod) {
	yes := true
	p.OwnerReferences = []metav1.OwnerReference{{Kind: "StatefulSet", Name: "web", UID: "old-set-uid", Controller: &yes}}
}

// pod makes the pod of testSet with ordinal at the template of the set
// given (its revision), as NewPod makes it.
func pod(s *appsv1.StatefulSet, ord int, opts ...podOpt) *corev1.Pod {
	p := NewPod(s, ord, &s.Spec.Template, RevisionName(s))
	p.UID = types.UID(fmt.Sprintf("uid-%s-%s", p.Name, RevisionName(s)))
	p.CreationTimestamp = metav1.NewTime(now.Add(-time.Hour))
	for _, o := range opts {
		o(p)
	}
	return p
}

func old(ord int, opts ...podOpt) *corev1.Pod { return pod(testSet(1), ord, opts...) }
func upd(ord int, opts ...podOpt) *corev1.Pod { return pod(testSet(1, image("nginx:2")), ord, opts...) }

func claims(names ...string) []*corev1.PersistentVolumeClaim {
	var out []*corev1.PersistentVolumeClaim
	for _, n := range names {
		c := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{
			Name: n, Namespace: "default", UID: types.UID("uid-" + n), Labels: map[string]string{"app": "nginx"},
		}}
		out = append(out, c)
	}
	return out
}

func podNames(ps []*corev1.Pod) string {
	var n []string
	for _, p := range ps {
		n = append(n, p.Name)
	}
	return strings.Join(n, ",")
}

func delNames(ds []Deletion) string {
	var n []string
	for _, d := range ds {
		n = append(n, d.Pod.Name)
	}
	return strings.Join(n, ",")
}

func claimNames(cs []*corev1.PersistentVolumeClaim) string {
	var n []string
	for _, c := range cs {
		n = append(n, c.Name)
	}
	return strings.Join(n, ",")
}

func TestPlan(t *testing.T) {
	v2 := RevisionName(testSet(1, image("nginx:2")))
	cases := []struct {
		name   string
		set    *appsv1.StatefulSet
		pods   []*corev1.Pod
		claims []*corev1.PersistentVolumeClaim
		// want: claims and pods created, pods deleted, claims deleted, waiting fragment.
		createClaims, create, del, delClaims string
		waiting                              string
	}{
		{name: "ordered: web-0 first, its claim before it", set: testSet(2),
			createClaims: "www-web-0", create: "web-0", waiting: "web-0 to be created"},
		{name: "ordered: web-1 waits until web-0 is Running and Ready", set: testSet(2),
			pods: []*corev1.Pod{old(0, running)}, claims: claims("www-web-0"), waiting: "web-0 to be Running and Ready"},
		{name: "ordered: web-0 Ready, web-1 created; an existing claim is reused", set: testSet(2),
			pods: []*corev1.Pod{old(0, ready)}, claims: claims("www-web-0", "www-web-1"), create: "web-1"},
		{name: "parallel: all at once, whatever their state", set: testSet(3, parallel),
			pods: []*corev1.Pod{old(1)}, claims: claims("www-web-1"), createClaims: "www-web-0,www-web-2", create: "web-0,web-2"},
		{name: "a pending pod whose claim was deleted gets it back", set: testSet(1),
			pods: []*corev1.Pod{old(0)}, createClaims: "www-web-0", waiting: "web-0 to be Running and Ready"},
		{name: "a running pod whose claim was deleted does not get an empty one", set: testSet(1),
			pods: []*corev1.Pod{old(0, ready)}},
		{name: "steady: nothing", set: testSet(2, rolled),
			pods: []*corev1.Pod{old(0, ready), old(1, ready)}, claims: claims("www-web-0", "www-web-1")},

		{name: "ordered scale down: the highest ordinal first, one at a time; claims kept", set: testSet(1),
			pods: []*corev1.Pod{old(0, ready), old(1, ready), old(2, ready)}, claims: claims("www-web-0", "www-web-1", "www-web-2"),
			del: "web-2", waiting: "web-2 to be gone"},
		{name: "ordered scale down waits while a kept pod is not Ready", set: testSet(1),
			pods: []*corev1.Pod{old(0, running), old(2, ready)}, waiting: "web-0 to be Running and Ready"},
		{name: "ordered scale down waits for a terminating pod", set: testSet(1),
			pods: []*corev1.Pod{old(0, ready), old(1, ready), old(2, ready, terminating)}, waiting: "web-2 to terminate"},
		{name: "parallel scale down: all at once, highest first", set: testSet(1, parallel),
			pods: []*corev1.Pod{old(0, running), old(1, ready), old(2)}, del: "web-2,web-1"},
		{name: "whenScaled Delete: the claims of pods that are gone", set: testSet(1, whenScaledDelete),
			pods: []*corev1.Pod{old(0, ready), old(1, ready)}, claims: claims("www-web-0", "www-web-1", "www-web-2", "www-other-2", "data-web-3"),
			del: "web-1", delClaims: "www-web-2", waiting: "web-1 to be gone"},

		{name: "rolling update: the highest ordinal first", set: testSet(3, rolled, image("nginx:2")),
			pods: []*corev1.Pod{old(0, ready), old(1, ready), old(2, ready)}, claims: claims("www-web-0", "www-web-1", "www-web-2"),
			del: "web-2", waiting: "web-2 to be recreated at revision " + v2},
		{name: "rolling update: the deleted pod comes back at the new revision", set: testSet(3, rolled, image("nginx:2")),
			pods: []*corev1.Pod{old(0, ready), old(1, ready)}, claims: claims("www-web-0", "www-web-1", "www-web-2"),
			create: "web-2"},
		{name: "rolling update waits for the recreated pod to be Ready", set: testSet(3, rolled, image("nginx:2")),
			pods: []*corev1.Pod{old(0, ready), old(1, ready), upd(2, running)}, waiting: "web-2 to be Running and Ready"},
		{name: "rolling update: then the next one down", set: testSet(3, rolled, image("nginx:2")),
			pods: []*corev1.Pod{old(0, ready), old(1, ready), upd(2, ready)}, del: "web-1"},
		{name: "rolling update waits while any pod is not Ready (ordered)", set: testSet(3, rolled, image("nginx:2")),
			pods: []*corev1.Pod{old(0, running), old(1, ready), old(2, ready)}, waiting: "web-0 to be Running and Ready"},
		{name: "partition: ordinals below it keep the old revision", set: testSet(3, rolled, image("nginx:2"), partition(2)),
			pods: []*corev1.Pod{old(0, ready), old(1, ready), upd(2, ready)}},
		{name: "partition: above it is updated", set: testSet(3, rolled, image("nginx:2"), partition(1)),
			pods: []*corev1.Pod{old(0, ready), old(1, ready), upd(2, ready)}, del: "web-1"},
		{name: "OnDelete: nothing is replaced", set: testSet(2, rolled, image("nginx:2"), onDelete),
			pods: []*corev1.Pod{old(0, ready), old(1, ready)}},
		{name: "OnDelete: a deleted pod comes back at the new revision", set: testSet(2, rolled, image("nginx:2"), onDelete),
			pods: []*corev1.Pod{old(0, ready)}, claims: claims("www-web-0", "www-web-1"), create: "web-1"},

		{name: "one pod per ordinal: a terminating web-1 blocks its replacement", set: testSet(2),
			pods: []*corev1.Pod{old(0, ready), old(1, ready, terminating)}, waiting: "web-1 to terminate"},
		{name: "one pod per ordinal: web-1 on an unreachable node is not replaced", set: testSet(2),
			pods: []*corev1.Pod{old(0, ready), old(1, nodeLost)}, waiting: "web-1 to be Running and Ready"},
		{name: "one pod per ordinal (parallel): a name held by another set's pod", set: testSet(2, parallel),
			pods: []*corev1.Pod{old(0, ready, foreign)}, createClaims: "www-web-1", create: "web-1", waiting: "web-0 exists but is not controlled"},
		{name: "one pod per ordinal (ordered): a name held by another set's pod", set: testSet(2),
			pods: []*corev1.Pod{old(0, ready, foreign)}, waiting: "web-0 exists but is not controlled"},
		{name: "a Failed pod is deleted, to be recreated once gone", set: testSet(2),
			pods: []*corev1.Pod{old(0, phase(corev1.PodFailed)), old(1, ready)}, del: "web-0", waiting: "web-0 (Failed) to be gone"},
		{name: "a Failed pod during a rolling update is deleted once", set: testSet(2, parallel, rolled, image("nginx:2")),
			pods: []*corev1.Pod{old(0, ready), old(1, phase(corev1.PodFailed))}, del: "web-1"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := make([]string, len(c.pods))
			for i, p := range c.pods {
				before[i] = p.String()
			}
			setBefore := c.set.String()
			a, err := Plan(c.set, c.pods, c.claims, now)
			if err != nil {
				t.Fatal(err)
			}
			for i, p := range c.pods {
				if p.String() != before[i] {
					t.Fatalf("Plan modified pod %s", p.Name)
				}
			}
			if c.set.String() != setBefore {
				t.Fatal("Plan modified the set")
			}
			if got := claimNames(a.CreateClaims); got != c.createClaims {
				t.Errorf("claims created %q, want %q", got, c.createClaims)
			}
			if got := podNames(a.Create); got != c.create {
				t.Errorf("pods created %q, want %q", got, c.create)
			}
			if got := delNames(a.Delete); got != c.del {
				t.Errorf("pods deleted %q, want %q", got, c.del)
			}
			if got := claimNames(a.DeleteClaims); got != c.delClaims {
				t.Errorf("claims deleted %q, want %q", got, c.delClaims)
			}
			if len(a.UpdateClaims) != 0 {
				t.Errorf("claims updated %q", claimNames(a.UpdateClaims))
			}
			if !strings.Contains(a.Waiting, c.waiting) || (c.waiting == "" && a.Waiting != "" && len(a.Create)+len(a.Delete) == 0) {
				t.Errorf("waiting %q, want %q", a.Waiting, c.waiting)
			}
		})
	}
}

func TestPlanStatus(t *testing.T) {
	v2 := RevisionName(testSet(1, image("nginx:2")))
	cases := []struct {
		name string
		set  *appsv1.StatefulSet
		pods []*corev1.Pod
		want appsv1.StatefulSetStatus
	}{
		{name: "new set", set: testSet(2),
			want: appsv1.StatefulSetStatus{ObservedGeneration: 4, CurrentRevision: rev1, UpdateRevision: rev1}},
		{name: "creating", set: testSet(2), pods: []*corev1.Pod{old(0, ready)},
			want: appsv1.StatefulSetStatus{ObservedGeneration: 4, Replicas: 1, ReadyReplicas: 1, AvailableReplicas: 1, CurrentReplicas: 1, UpdatedReplicas: 1, CurrentRevision: rev1, UpdateRevision: rev1}},
		{name: "rolling, one updated", set: testSet(3, rolled, image("nginx:2")),
			pods: []*corev1.Pod{old(0, ready), old(1, ready), upd(2, running)},
			want: appsv1.StatefulSetStatus{ObservedGeneration: 4, Replicas: 3, ReadyReplicas: 2, AvailableReplicas: 2, CurrentReplicas: 2, UpdatedReplicas: 1, CurrentRevision: rev1, UpdateRevision: v2}},
		{name: "partition holds: current stays", set: testSet(3, rolled, image("nginx:2"), partition(2)),
			pods: []*corev1.Pod{old(0, ready), old(1, ready), upd(2, ready)},
			want: appsv1.StatefulSetStatus{ObservedGeneration: 4, Replicas: 3, ReadyReplicas: 3, AvailableReplicas: 3, CurrentReplicas: 2, UpdatedReplicas: 1, CurrentRevision: rev1, UpdateRevision: v2}},
		{name: "rolled out: the update revision becomes current", set: testSet(2, rolled, image("nginx:2")),
			pods: []*corev1.Pod{upd(0, ready), upd(1, ready)},
			want: appsv1.StatefulSetStatus{ObservedGeneration: 4, Replicas: 2, ReadyReplicas: 2, AvailableReplicas: 2, CurrentReplicas: 2, UpdatedReplicas: 2, CurrentRevision: v2, UpdateRevision: v2}},
		{name: "terminating and foreign pods", set: testSet(2, rolled),
			pods: []*corev1.Pod{old(0, ready, terminating), old(1, ready, foreign)},
			want: appsv1.StatefulSetStatus{ObservedGeneration: 4, Replicas: 1, CurrentRevision: rev1, UpdateRevision: rev1}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a, err := Plan(c.set, c.pods, nil, now)
			if err != nil {
				t.Fatal(err)
			}
			if a.Status.String() != c.want.String() {
				t.Errorf("status\n got %s\nwant %s", a.Status.String(), c.want.String())
			}
		})
	}
}

func TestMinReadySeconds(t *testing.T) {
	s := testSet(1)
	s.Spec.MinReadySeconds = 10
	p := old(0, ready)
	p.Status.Conditions[0].LastTransitionTime = metav1.NewTime(now.Add(-4 * time.Second))
	a, _ := Plan(s, []*corev1.Pod{p}, nil, now)
	if a.Status.ReadyReplicas != 1 || a.Status.AvailableReplicas != 0 || a.RequeueAfter != 6*time.Second {
		t.Fatalf("status %v requeue %v", a.Status, a.RequeueAfter)
	}
	a, _ = Plan(s, []*corev1.Pod{p}, nil, now.Add(6*time.Second))
	if a.Status.AvailableReplicas != 1 || a.RequeueAfter != 0 {
		t.Fatalf("later: status %v requeue %v", a.Status, a.RequeueAfter)
	}
}

func TestPlanInvalid(t *testing.T) {
	for name, mutate := range map[string]setOpt{
		"no selector":              func(s *appsv1.StatefulSet) { s.Spec.Selector = nil },
		"selector misses template": func(s *appsv1.StatefulSet) { s.Spec.Selector.MatchLabels = map[string]string{"app": "other"} },
		"negative replicas":        func(s *appsv1.StatefulSet) { n := int32(-1); s.Spec.Replicas = &n },
		"duplicate claim templates": func(s *appsv1.StatefulSet) {
			s.Spec.VolumeClaimTemplates = append(s.Spec.VolumeClaimTemplates, s.Spec.VolumeClaimTemplates[0])
		},
	} {
		if _, err := Plan(testSet(1, mutate), nil, nil, now); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

// TestRecreateBelowPartition: a pod below the partition that is lost is
// recreated at the current (old) revision, its template recovered from a
// sibling; with no sibling to recover it from, at the update revision.
func TestRecreateBelowPartition(t *testing.T) {
	s := testSet(3, rolled, image("nginx:2"), partition(2))
	a, err := Plan(s, []*corev1.Pod{old(1, ready), upd(2, ready)}, claims("www-web-0"), now)
	if err != nil || len(a.Create) != 1 {
		t.Fatalf("%v %+v", err, a)
	}
	p := a.Create[0]
	if p.Name != "web-0" || p.Labels[LabelRevision] != rev1 || p.Spec.Containers[0].Image != "nginx:1" {
		t.Errorf("recreated %s at %s with %s, want web-0 at %s with nginx:1", p.Name, p.Labels[LabelRevision], p.Spec.Containers[0].Image, rev1)
	}
	if want := NewPod(s, 0, &testSet(1).Spec.Template, rev1); !reflect.DeepEqual(p, want) {
		t.Errorf("recreated pod differs from the original\n got %s\nwant %s", p.String(), want.String())
	}
	a, _ = Plan(s, []*corev1.Pod{upd(2, ready)}, claims("www-web-0"), now)
	if p := a.Create[0]; p.Labels[LabelRevision] != RevisionName(s) || p.Spec.Containers[0].Image != "nginx:2" {
		t.Errorf("no sibling: recreated at %s with %s, want the update revision", p.Labels[LabelRevision], p.Spec.Containers[0].Image)
	}
}

func TestClaimOwnersFollowWhenDeleted(t *testing.T) {
	s := testSet(1, whenDeletedDelete)
	a, _ := Plan(s, nil, nil, now)
	if len(a.CreateClaims) != 1 || len(a.CreateClaims[0].OwnerReferences) != 1 || a.CreateClaims[0].OwnerReferences[0].UID != s.UID {
		t.Fatalf("new claim not owned by the set under whenDeleted Delete: %+v", a.CreateClaims)
	}
	if ref := a.CreateClaims[0].OwnerReferences[0]; ref.Controller != nil && *ref.Controller {
		t.Error("the claim's owner reference is a controller reference")
	}
	// An existing claim gains the reference, and loses it under Retain.
	cs := claims("www-web-0")
	a, _ = Plan(s, []*corev1.Pod{old(0, ready)}, cs, now)
	if len(a.UpdateClaims) != 1 || len(a.UpdateClaims[0].OwnerReferences) != 1 || len(cs[0].OwnerReferences) != 0 {
		t.Fatalf("update %+v (input %+v)", a.UpdateClaims, cs[0].OwnerReferences)
	}
	a, _ = Plan(testSet(1), []*corev1.Pod{old(0, ready)}, []*corev1.PersistentVolumeClaim{a.UpdateClaims[0]}, now)
	if len(a.UpdateClaims) != 1 || len(a.UpdateClaims[0].OwnerReferences) != 0 {
		t.Fatalf("retain: update %+v", a.UpdateClaims)
	}
	// A claim from Git is never touched.
	git := claims("www-web-0")
	git[0].Annotations = map[string]string{schema.AnnotationManagedBy: schema.ManagedByGit}
	if a, _ = Plan(s, []*corev1.Pod{old(0, ready)}, git, now); len(a.UpdateClaims) != 0 {
		t.Errorf("a claim from Git was changed")
	}
	if a, _ = Plan(testSet(0, whenScaledDelete), nil, git, now); len(a.DeleteClaims) != 0 {
		t.Errorf("a claim from Git was deleted")
	}
}

func TestNewPodAndClaim(t *testing.T) {
	s := testSet(3)
	s.Spec.Template.Spec.Volumes = []corev1.Volume{
		{Name: "www", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
		{Name: "conf", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{}}},
	}
	s.Spec.VolumeClaimTemplates = append(s.Spec.VolumeClaimTemplates, corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: "logs", Labels: map[string]string{"tier": "logs"}}})
	p := NewPod(s, 2, &s.Spec.Template, "web-abc")
	if p.Name != "web-2" || p.Namespace != "default" || p.Spec.Hostname != "web-2" || p.Spec.Subdomain != "nginx" {
		t.Errorf("identity: %s/%s hostname %q subdomain %q", p.Namespace, p.Name, p.Spec.Hostname, p.Spec.Subdomain)
	}
	for k, v := range map[string]string{"app": "nginx", LabelPodName: "web-2", LabelPodIndex: "2", LabelRevision: "web-abc"} {
		if p.Labels[k] != v {
			t.Errorf("label %s = %q, want %q", k, p.Labels[k], v)
		}
	}
	ref := metav1.GetControllerOf(p)
	if ref == nil || ref.UID != s.UID || ref.Kind != "StatefulSet" || ref.APIVersion != "apps/v1" || ref.Name != "web" {
		t.Errorf("owner %+v", p.OwnerReferences)
	}
	var vols []string
	for _, v := range p.Spec.Volumes {
		switch {
		case v.PersistentVolumeClaim != nil:
			vols = append(vols, v.Name+"=pvc:"+v.PersistentVolumeClaim.ClaimName)
		default:
			vols = append(vols, v.Name)
		}
	}
	if got := strings.Join(vols, " "); got != "www=pvc:www-web-2 conf logs=pvc:logs-web-2" {
		t.Errorf("volumes %s", got)
	}
	if s.Spec.Template.Spec.Volumes[0].EmptyDir == nil || s.Spec.Template.Labels[LabelPodName] != "" {
		t.Error("NewPod changed the template")
	}

	c := NewClaim(s, &s.Spec.VolumeClaimTemplates[1], 2)
	if c.Name != "logs-web-2" || c.Namespace != "default" || c.Labels["app"] != "nginx" || c.Labels["tier"] != "logs" || len(c.OwnerReferences) != 0 {
		t.Errorf("claim %s/%s labels %v owners %v", c.Namespace, c.Name, c.Labels, c.OwnerReferences)
	}
	if c.APIVersion != "v1" || c.Kind != "PersistentVolumeClaim" {
		t.Errorf("claim type %s %s", c.APIVersion, c.Kind)
	}
}

func TestOrdinal(t *testing.T) {
	s := testSet(1)
	for name, want := range map[string]int{"web-0": 0, "web-12": 12, "web-": -1, "web-01": -1, "web--1": -1, "web-1-0": -1, "webx-1": -1, "web-a": -1} {
		got, ok := Ordinal(s, name)
		if (want < 0 && ok) || (want >= 0 && (!ok || got != want)) {
			t.Errorf("Ordinal(%q) = %d %v, want %d", name, got, ok, want)
		}
	}
}

// world is a tiny cluster for running Plan step by step: pods by name, a
// kubelet that makes pods Running and Ready one step after they appear,
// and the trace of what was done.
type world struct {
	set    *appsv1.StatefulSet
	pods   map[string]*corev1.Pod
	claims map[string]*corev1.PersistentVolumeClaim
	trace  []string
	seq    int
}

func newWorld(set *appsv1.StatefulSet) *world {
	return &world{set: set, pods: map[string]*corev1.Pod{}, claims: map[string]*corev1.PersistentVolumeClaim{}}
}

// step plans once, applies the actions (failing on a second pod for one
// ordinal), writes the status, then lets the kubelet start pods.
func (w *world) step(t *testing.T) Actions {
	t.Helper()
	var pods []*corev1.Pod
	for _, p := range w.pods {
		pods = append(pods, p)
	}
	var cs []*corev1.PersistentVolumeClaim
	for _, c := range w.claims {
		cs = append(cs, c)
	}
	a, err := Plan(w.set, pods, cs, now)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range a.CreateClaims {
		if w.claims[c.Name] != nil {
			t.Fatalf("claim %s created twice", c.Name)
		}
		w.claims[c.Name] = c
		w.trace = append(w.trace, "+claim "+c.Name)
	}
	for _, p := range a.Create {
		if w.pods[p.Name] != nil {
			t.Fatalf("second pod %s created while one exists", p.Name)
		}
		for _, v := range p.Spec.Volumes {
			if v.PersistentVolumeClaim != nil && w.claims[v.PersistentVolumeClaim.ClaimName] == nil {
				t.Fatalf("pod %s created before its claim %s", p.Name, v.PersistentVolumeClaim.ClaimName)
			}
		}
		w.seq++
		p.UID = types.UID(fmt.Sprint("uid-", w.seq))
		w.pods[p.Name] = p
		w.trace = append(w.trace, "+"+p.Name+"@"+p.Spec.Containers[0].Image)
	}
	for _, d := range a.Delete {
		delete(w.pods, d.Pod.Name)
		w.trace = append(w.trace, "-"+d.Pod.Name)
	}
	for _, c := range a.DeleteClaims {
		delete(w.claims, c.Name)
		w.trace = append(w.trace, "-claim "+c.Name)
	}
	w.set.Status = a.Status
	var names []string
	for n := range w.pods {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if p := w.pods[n]; p.Status.Phase == "" {
			q := p.DeepCopy()
			ready(q)
			w.pods[n] = q
		}
	}
	return a
}

// run steps until nothing is left to do.
func (w *world) run(t *testing.T) {
	t.Helper()
	for i := 0; i < 100; i++ {
		a := w.step(t)
		if len(a.Create)+len(a.Delete)+len(a.CreateClaims)+len(a.DeleteClaims) == 0 && a.Waiting == "" {
			return
		}
	}
	t.Fatalf("did not settle: %v", w.trace)
}

func (w *world) take() string {
	s := strings.Join(w.trace, " ")
	w.trace = nil
	return s
}

// TestScenarios runs whole lifecycles through Plan: the order of every
// create and delete is the specification.
func TestScenarios(t *testing.T) {
	t.Run("ordered", func(t *testing.T) {
		w := newWorld(testSet(3))
		w.run(t)
		if got, want := w.take(), "+claim www-web-0 +web-0@nginx:1 +claim www-web-1 +web-1@nginx:1 +claim www-web-2 +web-2@nginx:1"; got != want {
			t.Errorf("create\n got %s\nwant %s", got, want)
		}
		w.set.Spec.Template.Spec.Containers[0].Image = "nginx:2"
		w.run(t)
		if got, want := w.take(), "-web-2 +web-2@nginx:2 -web-1 +web-1@nginx:2 -web-0 +web-0@nginx:2"; got != want {
			t.Errorf("rolling update\n got %s\nwant %s", got, want)
		}
		if st := w.set.Status; st.CurrentRevision != st.UpdateRevision || st.UpdatedReplicas != 3 || st.CurrentReplicas != 3 {
			t.Errorf("status after the rollout %+v", st)
		}
		n := int32(1)
		w.set.Spec.Replicas = &n
		w.run(t)
		if got, want := w.take(), "-web-2 -web-1"; got != want {
			t.Errorf("scale down\n got %s\nwant %s", got, want)
		}
		if len(w.claims) != 3 {
			t.Errorf("claims after scale down: %d, want 3 (Retain)", len(w.claims))
		}
		n = 3
		w.run(t)
		if got, want := w.take(), "+web-1@nginx:2 +web-2@nginx:2"; got != want {
			t.Errorf("scale up again: claims reused\n got %s\nwant %s", got, want)
		}
	})
	t.Run("partition", func(t *testing.T) {
		w := newWorld(testSet(4))
		w.run(t)
		w.take()
		w.set.Spec.Template.Spec.Containers[0].Image = "nginx:2"
		partition(2)(w.set)
		w.run(t)
		if got, want := w.take(), "-web-3 +web-3@nginx:2 -web-2 +web-2@nginx:2"; got != want {
			t.Errorf("update above the partition\n got %s\nwant %s", got, want)
		}
		delete(w.pods, "web-0") // lost
		w.run(t)
		if got, want := w.take(), "+web-0@nginx:1"; got != want {
			t.Errorf("below the partition, recreated at the old revision\n got %s\nwant %s", got, want)
		}
		partition(0)(w.set)
		w.run(t)
		if got, want := w.take(), "-web-1 +web-1@nginx:2 -web-0 +web-0@nginx:2"; got != want {
			t.Errorf("partition lowered\n got %s\nwant %s", got, want)
		}
	})
	t.Run("parallel", func(t *testing.T) {
		w := newWorld(testSet(3, parallel, whenScaledDelete))
		w.run(t)
		if got, want := w.take(), "+claim www-web-0 +claim www-web-1 +claim www-web-2 +web-0@nginx:1 +web-1@nginx:1 +web-2@nginx:1"; got != want {
			t.Errorf("create\n got %s\nwant %s", got, want)
		}
		n := int32(0)
		w.set.Spec.Replicas = &n
		w.run(t)
		if got, want := w.take(), "-web-2 -web-1 -web-0 -claim www-web-0 -claim www-web-1 -claim www-web-2"; got != want {
			t.Errorf("scale to zero, whenScaled Delete\n got %s\nwant %s", got, want)
		}
	})
	t.Run("on delete", func(t *testing.T) {
		w := newWorld(testSet(2, onDelete))
		w.run(t)
		w.take()
		w.set.Spec.Template.Spec.Containers[0].Image = "nginx:2"
		w.run(t)
		if got := w.take(); got != "" {
			t.Errorf("OnDelete replaced pods: %s", got)
		}
		delete(w.pods, "web-1")
		w.run(t)
		if got, want := w.take(), "+web-1@nginx:2"; got != want {
			t.Errorf("after a manual delete\n got %s\nwant %s", got, want)
		}
	})
}
