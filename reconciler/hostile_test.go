package reconciler_test

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/flotilla-dev/flotilla/cluster/ipalloc"
	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/internal/testkit"
	"github.com/flotilla-dev/flotilla/reconciler"
	"github.com/flotilla-dev/flotilla/reconciler/controller"
	"github.com/flotilla-dev/flotilla/reconciler/endpointslice"
	"github.com/flotilla-dev/flotilla/reconciler/loadbalancer"
	"github.com/flotilla-dev/flotilla/reconciler/nodeipam"
	"github.com/flotilla-dev/flotilla/reconciler/replicaset"
	"github.com/flotilla-dev/flotilla/reconciler/scheduler"
	"github.com/flotilla-dev/flotilla/reconciler/volumebinding"
	"github.com/flotilla-dev/flotilla/schema"
)

// hostile is one object written past admission and what must become of it.
type hostile struct {
	obj schema.Object
	// stall is the Stalled reason the object must show ("" when its kind
	// shows the outcome otherwise, see unschedulable and the README).
	stall string
	// unschedulable: a pod that must show PodScheduled=False/Unschedulable.
	unschedulable bool
}

const hostileNS = "hostile"

func meta(name string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Name: name, Namespace: hostileNS}
}

func podTemplate(labels map[string]string) corev1.PodTemplateSpec {
	return corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}}
}

func i32(v int32) *int32 { return &v }

// hostileDeployments are Deployments that cannot be acted on.
func hostileDeployments() []hostile {
	mk := func(name string, fn func(d *appsv1.Deployment)) hostile {
		labels := map[string]string{"app": name}
		d := &appsv1.Deployment{ObjectMeta: meta(name), Spec: appsv1.DeploymentSpec{Replicas: i32(2),
			Selector: &metav1.LabelSelector{MatchLabels: labels}, Template: podTemplate(labels)}}
		fn(d)
		return hostile{obj: d, stall: controller.ReasonInvalidSpec}
	}
	lots := intstr.FromString("lots")
	return []hostile{
		mk("d-negative", func(d *appsv1.Deployment) { d.Spec.Replicas = i32(-1) }),
		mk("d-min", func(d *appsv1.Deployment) { d.Spec.Replicas = i32(math.MinInt32) }),
		mk("d-no-selector", func(d *appsv1.Deployment) { d.Spec.Selector = nil }),
		mk("d-empty-selector", func(d *appsv1.Deployment) { d.Spec.Selector = &metav1.LabelSelector{} }),
		mk("d-mismatch", func(d *appsv1.Deployment) { d.Spec.Template.Labels = map[string]string{"app": "other"} }),
		mk("d-no-containers", func(d *appsv1.Deployment) { d.Spec.Template.Spec.Containers = nil }),
		mk("d-bad-surge", func(d *appsv1.Deployment) {
			d.Spec.Strategy.RollingUpdate = &appsv1.RollingUpdateDeployment{MaxSurge: &lots}
		}),
		mk("d-negative-history", func(d *appsv1.Deployment) { d.Spec.RevisionHistoryLimit = i32(-4) }),
		mk("d-negative-deadline", func(d *appsv1.Deployment) { d.Spec.ProgressDeadlineSeconds = i32(-1) }),
		mk("d-"+strings.Repeat("long", 70), func(*appsv1.Deployment) {}),
	}
}

func hostileReplicaSets() []hostile {
	mk := func(name string, fn func(rs *appsv1.ReplicaSet)) hostile {
		labels := map[string]string{"app": name}
		rs := &appsv1.ReplicaSet{ObjectMeta: meta(name), Spec: appsv1.ReplicaSetSpec{Replicas: i32(1),
			Selector: &metav1.LabelSelector{MatchLabels: labels}, Template: podTemplate(labels)}}
		fn(rs)
		return hostile{obj: rs, stall: controller.ReasonInvalidSpec}
	}
	return []hostile{
		mk("rs-negative", func(rs *appsv1.ReplicaSet) { rs.Spec.Replicas = i32(-1) }),
		mk("rs-no-selector", func(rs *appsv1.ReplicaSet) { rs.Spec.Selector = nil }),
		mk("rs-mismatch", func(rs *appsv1.ReplicaSet) { rs.Spec.Selector.MatchLabels = map[string]string{"app": "x"} }),
		mk("rs-no-containers", func(rs *appsv1.ReplicaSet) { rs.Spec.Template.Spec.Containers = []corev1.Container{} }),
		mk("rs-no-image", func(rs *appsv1.ReplicaSet) { rs.Spec.Template.Spec.Containers[0].Image = "" }),
		mk("rs-enormous-label", func(rs *appsv1.ReplicaSet) {
			rs.Spec.Selector.MatchLabels["big"] = strings.Repeat("v", 64<<10)
			rs.Spec.Template.Labels["big"] = strings.Repeat("v", 64<<10)
		}),
	}
}

func hostileStatefulSets() []hostile {
	mk := func(name string, fn func(s *appsv1.StatefulSet)) hostile {
		labels := map[string]string{"app": name}
		s := &appsv1.StatefulSet{ObjectMeta: meta(name), Spec: appsv1.StatefulSetSpec{Replicas: i32(1), ServiceName: name,
			Selector: &metav1.LabelSelector{MatchLabels: labels}, Template: podTemplate(labels)}}
		fn(s)
		return hostile{obj: s, stall: controller.ReasonInvalidSpec}
	}
	claim := corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: "data"}}
	return []hostile{
		mk("s-negative", func(s *appsv1.StatefulSet) { s.Spec.Replicas = i32(-3) }),
		mk("s-no-selector", func(s *appsv1.StatefulSet) { s.Spec.Selector = nil }),
		mk("s-negative-ordinals", func(s *appsv1.StatefulSet) { s.Spec.Ordinals = &appsv1.StatefulSetOrdinals{Start: -1} }),
		mk("s-duplicate-claims", func(s *appsv1.StatefulSet) {
			s.Spec.VolumeClaimTemplates = []corev1.PersistentVolumeClaim{claim, claim}
		}),
		mk("s-sideways", func(s *appsv1.StatefulSet) { s.Spec.PodManagementPolicy = "Sideways" }),
		mk("s-no-containers", func(s *appsv1.StatefulSet) { s.Spec.Template.Spec.Containers = nil }),
		mk("s-"+strings.Repeat("x", 80), func(*appsv1.StatefulSet) {}),
	}
}

// hostilePods are pods the scheduler, the node lifecycle controller and
// the garbage collector read.
func hostilePods() []hostile {
	pod := func(name string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: meta(name), Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}}
	}
	huge := pod("p-huge-requests")
	huge.Spec.Containers[0].Resources.Requests = corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1e9"), corev1.ResourceMemory: resource.MustParse("1Ei")}
	missingClaim := pod("p-missing-claim")
	missingClaim.Spec.Volumes = []corev1.Volume{{Name: "v", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "nope"}}}}
	selector := pod("p-selector")
	selector.Spec.NodeSelector = map[string]string{strings.Repeat("k", 300): "v"}
	tolerations := pod("p-tolerations")
	tolerations.Spec.Tolerations = []corev1.Toleration{{Operator: "Sometimes"}}
	tolerations.Spec.NodeSelector = map[string]string{"never": "matches"}
	negative := pod("p-negative-requests")
	negative.Spec.Containers[0].Resources.Requests = corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("-1000")}
	negative.Spec.NodeSelector = map[string]string{"never": "matches"}
	enormous := pod("p-enormous")
	enormous.Annotations = map[string]string{"blob": strings.Repeat("a", 512<<10)}
	enormous.Spec.NodeSelector = map[string]string{"never": "matches"}
	return []hostile{
		{obj: huge, unschedulable: true},
		{obj: missingClaim, unschedulable: true},
		{obj: selector, unschedulable: true},
		{obj: tolerations, unschedulable: true},
		{obj: negative, unschedulable: true},
		{obj: enormous, unschedulable: true},
	}
}

// hostileOthers are pods whose outcome is collection or nothing, and
// objects of kinds without conditions; they must only not break anything.
func hostileOthers() []schema.Object {
	yes := true
	orphan := &corev1.Pod{ObjectMeta: meta("p-orphan"), Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "x"}}}}
	orphan.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "gone", UID: "no-such-uid", Controller: &yes}}
	cycleA := &corev1.Pod{ObjectMeta: meta("p-cycle-a"), Spec: corev1.PodSpec{NodeSelector: map[string]string{"never": "matches"}, Containers: []corev1.Container{{Name: "c", Image: "x"}}}}
	cycleA.OwnerReferences = []metav1.OwnerReference{{APIVersion: "v1", Kind: "Pod", Name: "p-cycle-a", UID: "self"}, {APIVersion: "widgets/v9", Kind: "Widget", Name: "", UID: ""}}
	ghost := &corev1.Pod{ObjectMeta: meta("p-on-ghost-node"), Spec: corev1.PodSpec{NodeName: "ghost-node", Containers: []corev1.Container{{Name: "c", Image: "x"}}}}
	ghost.Status.Phase = corev1.PodRunning
	noContainers := &corev1.Pod{ObjectMeta: meta("p-no-containers"), Spec: corev1.PodSpec{NodeSelector: map[string]string{"never": "matches"}}}

	svc := func(name string, fn func(s *corev1.Service)) *corev1.Service {
		s := &corev1.Service{ObjectMeta: meta(name), Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "web"},
			Ports: []corev1.ServicePort{{Port: 80}}}}
		fn(s)
		return s
	}
	pv := func(name string, fn func(p *corev1.PersistentVolume)) *corev1.PersistentVolume {
		p := &corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.PersistentVolumeSpec{
			PersistentVolumeSource: corev1.PersistentVolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/nowhere"}}}}
		fn(p)
		return p
	}
	node := func(name string, fn func(n *corev1.Node)) *corev1.Node {
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
		fn(n)
		return n
	}
	ready := func(n *corev1.Node, heartbeat time.Time) {
		n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue,
			LastHeartbeatTime: metav1.NewTime(heartbeat), LastTransitionTime: metav1.NewTime(heartbeat)}}
	}
	str := func(s string) *string { return &s }
	return []schema.Object{
		orphan, cycleA, ghost, noContainers,
		svc("svc-bad-ports", func(s *corev1.Service) {
			s.Spec.Ports = []corev1.ServicePort{{Port: 70000, TargetPort: intstr.FromString("no-such-port")}, {Port: -1, Protocol: "CARRIER-PIGEON"}}
			s.Spec.ClusterIP = "not-an-ip"
		}),
		svc("svc-bad-selector", func(s *corev1.Service) { s.Spec.Selector = map[string]string{"!!!": strings.Repeat("v", 1000)} }),
		svc("svc-external", func(s *corev1.Service) { s.Spec.Type = corev1.ServiceTypeExternalName; s.Spec.ExternalName = "" }),
		&corev1.PersistentVolumeClaim{ObjectMeta: meta("c-missing-volume"), Spec: corev1.PersistentVolumeClaimSpec{VolumeName: "no-such-volume",
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources:   corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}}}},
		pv("pv-negative", func(p *corev1.PersistentVolume) {
			p.Spec.Capacity = corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("-5Gi")}
		}),
		pv("pv-dangling", func(p *corev1.PersistentVolume) {
			p.Spec.ClaimRef = &corev1.ObjectReference{Namespace: hostileNS, Name: "gone", UID: "gone-uid"}
			p.Spec.PersistentVolumeReclaimPolicy = "Shred"
		}),
		&storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: "sc-odd"}, Provisioner: "",
			VolumeBindingMode: func() *storagev1.VolumeBindingMode { m := storagev1.VolumeBindingMode("Sometimes"); return &m }()},
		&discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Name: "slice-orphan", Namespace: hostileNS,
			Labels: map[string]string{endpointslice.LabelManagedBy: endpointslice.ManagedBy, endpointslice.LabelServiceName: "no-such-service"}},
			AddressType: "IPv9", Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"garbage"}}}},
		&discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Name: "slice-foreign", Namespace: hostileNS,
			Labels: map[string]string{endpointslice.LabelServiceName: "svc-bad-ports"}}, AddressType: discoveryv1.AddressTypeIPv4,
			Ports: []discoveryv1.EndpointPort{{Name: str(""), Port: i32(-9)}}},
		node("n-negative", func(n *corev1.Node) {
			ready(n, time.Now())
			n.Spec.PodCIDR = "10.244.200.0/24"
			n.Status.Allocatable = corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("-4"), corev1.ResourcePods: resource.MustParse("-1")}
		}),
		node("n-future", func(n *corev1.Node) {
			ready(n, time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC))
			n.Spec.PodCIDR = "10.244.201.0/24"
			n.Status.Allocatable = corev1.ResourceList{corev1.ResourcePods: resource.MustParse("0")}
		}),
	}
}

// hostileStalled are the objects of kinds with conditions that must show
// a Stalled condition, besides the workloads.
func hostileStalled() []hostile {
	claim := func(name string, fn func(c *corev1.PersistentVolumeClaim)) hostile {
		c := &corev1.PersistentVolumeClaim{ObjectMeta: meta(name), Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources:   corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}}}}
		fn(c)
		return hostile{obj: c, stall: volumebinding.ReasonInvalidClaim}
	}
	return []hostile{
		claim("c-no-size", func(c *corev1.PersistentVolumeClaim) { c.Spec.Resources.Requests = nil }),
		claim("c-negative", func(c *corev1.PersistentVolumeClaim) {
			c.Spec.Resources.Requests[corev1.ResourceStorage] = resource.MustParse("-1Gi")
		}),
		claim("c-no-modes", func(c *corev1.PersistentVolumeClaim) { c.Spec.AccessModes = nil }),
		{obj: &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n-garbage-cidr"}, Spec: corev1.NodeSpec{PodCIDR: "300.1.2.3/77"}},
			stall: nodeipam.ReasonInvalidPodCIDR},
		{obj: &corev1.Service{ObjectMeta: meta("svc-bad-lb-ip"), Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer,
			LoadBalancerIP: "999.1.1.1", Ports: []corev1.ServicePort{{Port: 80}}}}, stall: loadbalancer.ReasonLoadBalancerIP},
		{obj: &corev1.Service{ObjectMeta: meta("svc-" + strings.Repeat("n", 200)), Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "web"},
			Ports: []corev1.ServicePort{{Port: 80}}}}, stall: controller.ReasonInvalidSpec},
	}
}

// enormous are workloads of 2^31-1 replicas: they must make progress in
// bounded batches, never loop two billion times or allocate that much.
func enormous() []schema.Object {
	labels := func(n string) map[string]string { return map[string]string{"app": n} }
	max := i32(math.MaxInt32)
	return []schema.Object{
		&appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "huge-d", Namespace: "huge"}, Spec: appsv1.DeploymentSpec{Replicas: max,
			Selector: &metav1.LabelSelector{MatchLabels: labels("huge-d")}, Template: podTemplate(labels("huge-d"))}},
		&appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Name: "huge-rs", Namespace: "huge"}, Spec: appsv1.ReplicaSetSpec{Replicas: max,
			Selector: &metav1.LabelSelector{MatchLabels: labels("huge-rs")}, Template: podTemplate(labels("huge-rs"))}},
		&appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Name: "huge-s", Namespace: "huge"}, Spec: appsv1.StatefulSetSpec{Replicas: max,
			PodManagementPolicy: appsv1.ParallelPodManagement,
			Selector:            &metav1.LabelSelector{MatchLabels: labels("huge-s")}, Template: podTemplate(labels("huge-s"))}},
	}
}

// panicCounter passes records on and counts the recovered panics.
type panicCounter struct {
	slog.Handler
	n *atomic.Int32
}

func (h panicCounter) Handle(ctx context.Context, r slog.Record) error {
	if strings.Contains(r.Message, "panicked") {
		h.n.Add(1)
	}
	return h.Handler.Handle(ctx, r)
}
func (h panicCounter) WithAttrs(as []slog.Attr) slog.Handler {
	return panicCounter{h.Handler.WithAttrs(as), h.n}
}
func (h panicCounter) WithGroup(g string) slog.Handler {
	return panicCounter{h.Handler.WithGroup(g), h.n}
}

// kubelets runs simulated agents for names until the returned stop.
func kubelets(t *testing.T, st store.Interface, names ...string) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, name := range names {
		k := &reconciler.SimKubelet{Store: st, NodeName: name, Logger: testLogger(t)}
		if err := k.Register(ctx); err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = k.Run(ctx)
		}()
	}
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); wg.Wait() }) }
	t.Cleanup(stop)
	return stop
}

func mustWrite(t *testing.T, st store.Interface, obj schema.Object) {
	t.Helper()
	k, err := schema.KindOf(obj)
	if err != nil {
		t.Fatal(err)
	}
	schema.SetTypeMeta(obj, k)
	out, err := st.Create(context.Background(), obj)
	if err != nil {
		t.Fatalf("write %s %s past admission: %v", k.Kind, obj.GetName(), err)
	}
	// Statuses of the hostile objects too (a Create keeps none).
	if !controller.HasConditions(obj) {
		return
	}
	if _, err := st.UpdateStatus(context.Background(), withStatusOf(out, obj)); err != nil {
		t.Fatalf("write the status of %s %s: %v", k.Kind, obj.GetName(), err)
	}
}

// withStatusOf returns stored with the status of src.
func withStatusOf(stored, src schema.Object) schema.Object {
	switch s := src.(type) {
	case *corev1.Node:
		n := stored.(*corev1.Node)
		n.Status = s.Status
	case *corev1.Pod:
		p := stored.(*corev1.Pod)
		p.Status = s.Status
	}
	return stored
}

func stalledReason(t *testing.T, st store.Interface, obj schema.Object) (string, bool) {
	t.Helper()
	k, _ := schema.KindOf(obj)
	o, err := st.Get(context.Background(), k.Resource, obj.GetNamespace(), obj.GetName())
	if err != nil {
		t.Fatalf("%s %s: %v", k.Kind, obj.GetName(), err)
	}
	c, ok := controller.StalledCondition(o)
	return c.Reason, ok
}

func countPods(t *testing.T, st store.Interface, ns string) int {
	t.Helper()
	objs, _, err := st.List(context.Background(), "pods", store.ListOptions{Namespace: ns})
	if err != nil {
		t.Fatal(err)
	}
	return len(objs)
}

// TestHostileObjects is the crash-isolation acceptance: hostile objects of
// every kind the controllers read, written straight into a Badger store on
// disk past admission, beside a well-formed Deployment, StatefulSet and
// Service, under the Manager with every controller and simulated agents.
// No panic, the hostile objects show a Stalled condition (pods:
// PodScheduled=False/Unschedulable; kinds without conditions: only the
// log), workloads of 2^31-1 replicas progress in bounded batches, the
// well-formed objects converge; then the process restarts on the same
// store, starts, and converges again.
func TestHostileObjects(t *testing.T) {
	dir := t.TempDir()
	open := func() *store.Badger {
		st, err := store.Open(store.Config{Dir: dir, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	st := open()
	var panics atomic.Int32
	logger := slog.New(panicCounter{testkit.Logger(t).Handler(), &panics})
	pool, err := ipalloc.ParsePool("192.0.2.10-192.0.2.20")
	if err != nil {
		t.Fatal(err)
	}
	config := func(st store.Interface) reconciler.Config {
		return reconciler.Config{Store: st, Logger: logger, ResyncPeriod: time.Second, MaxBackoff: time.Second,
			LoadBalancerPool: pool, SchedulingSettle: time.Second}
	}
	nodes := []string{"node-0", "node-1", "node-2"}

	// Everything is in the store before the first manager starts, as after
	// a crash: it must start whatever the store holds.
	var stalls []hostile
	stalls = append(stalls, hostileDeployments()...)
	stalls = append(stalls, hostileReplicaSets()...)
	stalls = append(stalls, hostileStatefulSets()...)
	stalls = append(stalls, hostileStalled()...)
	pods := hostilePods()
	for _, h := range append(append([]hostile(nil), stalls...), pods...) {
		mustWrite(t, st, h.obj)
	}
	for _, o := range hostileOthers() {
		mustWrite(t, st, o)
	}
	for _, o := range enormous() {
		mustWrite(t, st, o)
	}
	web := newDeployment("web", 3, "nginx:1")
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "web"}, Ports: []corev1.ServicePort{{Port: 80}}}}
	set := &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Name: "db", Namespace: "default"}, Spec: appsv1.StatefulSetSpec{
		Replicas: i32(2), ServiceName: "db", Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "db"}},
		Template: podTemplate(map[string]string{"app": "db"})}}
	for _, o := range []schema.Object{web, svc, set} {
		mustWrite(t, st, o)
	}

	stopKubelets := kubelets(t, st, nodes...)
	m := startManagerWith(t, config(st))

	// The enormous workloads progress, a burst at a time; then they go.
	testkit.Eventually(t, "the enormous workloads under way", 2*time.Minute, func() error {
		if n := countPods(t, st, "huge"); n < replicaset.BurstReplicas {
			return fmt.Errorf("%d pods", n)
		}
		return nil
	})
	t.Logf("the enormous workloads made %d pods so far", countPods(t, st, "huge"))
	for _, o := range enormous() {
		k, _ := schema.KindOf(o)
		if _, err := st.Delete(context.Background(), k.Resource, "huge", o.GetName(), store.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	checkHostile(t, st, stalls, pods)
	checkConverged(t, st, 3)
	testkit.Eventually(t, "the enormous workloads' pods collected", 2*time.Minute, func() error {
		if n := countPods(t, st, "huge"); n != 0 {
			return fmt.Errorf("%d pods left", n)
		}
		return nil
	})
	if _, err := st.Get(context.Background(), "pods", hostileNS, "p-orphan"); err == nil {
		t.Error("a pod whose owner does not exist was not collected")
	}
	if _, err := st.Get(context.Background(), "pods", hostileNS, "p-cycle-a"); err != nil {
		t.Errorf("a pod whose owners exist (itself) or are of an unknown kind was collected: %v", err)
	}

	// A restart: the process stops, the store is closed and opened again,
	// and a new manager starts on whatever it holds.
	m.stop()
	stopKubelets()
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	st = open()
	t.Cleanup(func() { _ = st.Close() })
	kubelets(t, st, nodes...)
	startManagerWith(t, config(st))
	mutate(t, st, "web", func(d *appsv1.Deployment) { *d.Spec.Replicas = 4 })
	checkConverged(t, st, 4)
	checkHostile(t, st, stalls, pods)
	if n := panics.Load(); n != 0 {
		t.Errorf("%d reconciles panicked (recovered); the planners must take hostile input as data", n)
	}
}

// checkHostile waits for every hostile object's condition.
func checkHostile(t *testing.T, st store.Interface, stalls, pods []hostile) {
	t.Helper()
	for _, h := range stalls {
		testkit.Eventually(t, fmt.Sprintf("%T %s stalled", h.obj, clipName(h.obj.GetName())), time.Minute, func() error {
			reason, ok := stalledReason(t, st, h.obj)
			if !ok || reason != h.stall {
				return fmt.Errorf("stalled=%v reason %q, want %q", ok, reason, h.stall)
			}
			return nil
		})
	}
	for _, h := range pods {
		testkit.Eventually(t, "pod "+h.obj.GetName()+" unschedulable", time.Minute, func() error {
			o, err := st.Get(context.Background(), "pods", hostileNS, h.obj.GetName())
			if err != nil {
				return err
			}
			c := podCondition(o.(*corev1.Pod), corev1.PodScheduled)
			if c.Status != corev1.ConditionFalse || c.Reason != scheduler.ReasonUnschedulable || c.Message == "" {
				return fmt.Errorf("PodScheduled %+v", c)
			}
			return nil
		})
	}
}

// checkConverged waits for the well-formed Deployment (want replicas),
// StatefulSet and Service.
func checkConverged(t *testing.T, st store.Interface, want int32) {
	t.Helper()
	testkit.Eventually(t, "the well-formed deployment converged", 2*time.Minute, func() error {
		if why := converged(t, st, "web", want); why != "" {
			return fmt.Errorf("%s", why)
		}
		return nil
	})
	testkit.Eventually(t, "the well-formed statefulset converged", time.Minute, func() error {
		for _, name := range []string{"db-0", "db-1"} {
			o, err := st.Get(context.Background(), "pods", "default", name)
			if err != nil {
				return err
			}
			if !ready(o.(*corev1.Pod)) {
				return fmt.Errorf("%s not running", name)
			}
		}
		return nil
	})
	testkit.Eventually(t, "the well-formed service's endpoints", time.Minute, func() error {
		eps := endpointsReady(t, st, "web")
		n := 0
		for _, ok := range eps {
			if ok {
				n++
			}
		}
		if n != int(want) {
			return fmt.Errorf("%d ready endpoints %v, want %d", n, eps, want)
		}
		return nil
	})
}

func clipName(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}
