package reconciler_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/internal/testkit"
	"github.com/flotilla-dev/flotilla/reconciler"
	"github.com/flotilla-dev/flotilla/reconciler/deployment"
	"github.com/flotilla-dev/flotilla/reconciler/internal/memstore"
	"github.com/flotilla-dev/flotilla/schema"
)

// eachStore runs the test against the Badger store and the test double.
func eachStore(t *testing.T, fn func(t *testing.T, st store.Interface)) {
	t.Run("badger", func(t *testing.T) { fn(t, store.MemoryFor(t)) })
	t.Run("memstore", func(t *testing.T) {
		st := memstore.New()
		t.Cleanup(st.Close)
		fn(t, st)
	})
}

func testLogger(t *testing.T) *slog.Logger { return testkit.Logger(t) }

// testSettle is the scheduler's settle time in these tests: long enough
// to be exercised, short enough for a test whose nodes never all become
// Ready.
const testSettle = 500 * time.Millisecond

// running is a Manager running in a test.
type running struct {
	*reconciler.Manager
	stop func()
}

// startManager runs a Manager with every controller until its stop is
// called (or the test ends); stop waits for it to return.
func startManager(t *testing.T, st store.Interface) *running {
	t.Helper()
	return startManagerWith(t, reconciler.Config{Store: st, Logger: testLogger(t), ResyncPeriod: 2 * time.Second, MaxBackoff: time.Second})
}

func startManagerWith(t *testing.T, cfg reconciler.Config) *running {
	t.Helper()
	if cfg.SchedulingSettle == 0 {
		cfg.SchedulingSettle = testSettle
	}
	m, err := reconciler.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("manager: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return &running{Manager: m, stop: stop}
}

// quiet waits until the manager is idle, has then finished n more
// reconciles of controller name (resyncs and requeues bring them), and is
// idle again: the deterministic form of "let it run a while" before
// asserting that nothing more was written.
func (r *running) quiet(t *testing.T, name string, n uint64) {
	t.Helper()
	testkit.EventuallyTrue(t, "the controllers idle", 0, r.Idle)
	target := r.Reconciles(name) + n
	testkit.EventuallyTrue(t, fmt.Sprintf("%d more reconciles of %s", n, name), 0, func() bool { return r.Reconciles(name) >= target })
	testkit.EventuallyTrue(t, "the controllers idle", 0, r.Idle)
}

func startKubelets(t *testing.T, st store.Interface, n int) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	for i := 0; i < n; i++ {
		k := &reconciler.SimKubelet{Store: st, NodeName: fmt.Sprintf("node-%d", i), Logger: testLogger(t)}
		if err := k.Register(ctx); err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := k.Run(ctx); err != nil && ctx.Err() == nil {
				t.Errorf("simkubelet: %v", err)
			}
		}()
	}
}

func newDeployment(name string, replicas int32, image string) *appsv1.Deployment {
	labels := map[string]string{"app": name}
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{
					Name: "web", Image: image,
				}}},
			},
		},
	}
	d.APIVersion, d.Kind = "apps/v1", "Deployment"
	return d
}

func pods(t *testing.T, st store.Interface) []*corev1.Pod {
	t.Helper()
	objs, _, err := st.List(context.Background(), "pods", store.ListOptions{Namespace: "default"})
	if err != nil {
		t.Fatal(err)
	}
	out := make([]*corev1.Pod, 0, len(objs))
	for _, o := range objs {
		out = append(out, o.(*corev1.Pod))
	}
	return out
}

func replicaSets(t *testing.T, st store.Interface) []*appsv1.ReplicaSet {
	t.Helper()
	objs, _, err := st.List(context.Background(), "replicasets", store.ListOptions{Namespace: "default"})
	if err != nil {
		t.Fatal(err)
	}
	out := make([]*appsv1.ReplicaSet, 0, len(objs))
	for _, o := range objs {
		out = append(out, o.(*appsv1.ReplicaSet))
	}
	return out
}

func getDeployment(t *testing.T, st store.Interface, name string) *appsv1.Deployment {
	t.Helper()
	o, err := st.Get(context.Background(), "deployments", "default", name)
	if err != nil {
		t.Fatal(err)
	}
	return o.(*appsv1.Deployment)
}

func ready(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue && p.Status.Phase == corev1.PodRunning
		}
	}
	return false
}

// converged checks that d has exactly want Running+Ready pods, all of the
// current template's ReplicaSet, every older ReplicaSet at 0, and a status
// that says so.
func converged(t *testing.T, st store.Interface, name string, want int32) string {
	d := getDeployment(t, st, name)
	hash := deployment.TemplateHash(&d.Spec.Template)
	newName := name + "-" + hash
	var bad []string
	for _, rs := range replicaSets(t, st) {
		if rs.Name != newName && *rs.Spec.Replicas != 0 {
			bad = append(bad, fmt.Sprintf("old rs %s at %d", rs.Name, *rs.Spec.Replicas))
		}
	}
	n := int32(0)
	for _, p := range pods(t, st) {
		ref := metav1.GetControllerOf(p)
		if ref == nil || !strings.HasPrefix(p.Name, name+"-") {
			continue
		}
		n++
		if ref.Name != newName {
			bad = append(bad, "pod of old rs "+p.Name)
		}
		if !ready(p) || p.Spec.NodeName == "" || p.Status.PodIP == "" {
			bad = append(bad, "pod not running "+p.Name)
		}
		if p.Labels[deployment.HashLabel] != hash {
			bad = append(bad, "pod without hash label "+p.Name)
		}
	}
	if n != want {
		bad = append(bad, fmt.Sprintf("%d pods, want %d", n, want))
	}
	s := d.Status
	if s.ObservedGeneration != d.Generation || s.Replicas != want || s.UpdatedReplicas != want ||
		s.ReadyReplicas != want || s.AvailableReplicas != want || s.UnavailableReplicas != 0 {
		bad = append(bad, fmt.Sprintf("status %+v (generation %d)", s, d.Generation))
	}
	if !hasCondition(d, appsv1.DeploymentProgressing, deployment.ReasonNewReplicaSetAvailable) ||
		!hasCondition(d, appsv1.DeploymentAvailable, deployment.ReasonMinimumReplicasAvailable) {
		bad = append(bad, fmt.Sprintf("conditions %+v", s.Conditions))
	}
	return strings.Join(bad, "; ")
}

func hasCondition(d *appsv1.Deployment, typ appsv1.DeploymentConditionType, reason string) bool {
	for _, c := range d.Status.Conditions {
		if c.Type == typ {
			return c.Status == corev1.ConditionTrue && c.Reason == reason
		}
	}
	return false
}

func mutate(t *testing.T, st store.Interface, name string, fn func(d *appsv1.Deployment)) {
	t.Helper()
	for {
		d := getDeployment(t, st, name)
		fn(d)
		_, err := st.Update(context.Background(), d)
		if errors.Is(err, store.ErrConflict) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		return
	}
}

func create(t *testing.T, st store.Interface, obj schema.Object) {
	t.Helper()
	if _, err := st.Create(context.Background(), obj); err != nil {
		t.Fatal(err)
	}
}

func TestDeploymentLifecycle(t *testing.T) {
	eachStore(t, func(t *testing.T, st store.Interface) {
		startKubelets(t, st, 3)
		startManager(t, st)
		create(t, st, newDeployment("web", 3, "nginx:1"))
		testkit.EventuallyWhy(t, "3 running pods", time.Minute, func() string { return converged(t, st, "web", 3) })
		if got := deployment.Revision(getDeployment(t, st, "web")); got != 1 {
			t.Errorf("revision = %d, want 1", got)
		}
		// Pods are spread over the nodes.
		nodes := map[string]int{}
		for _, p := range pods(t, st) {
			nodes[p.Spec.NodeName]++
		}
		if len(nodes) != 3 {
			t.Errorf("pods on nodes %v, want one on each of 3", nodes)
		}

		mutate(t, st, "web", func(d *appsv1.Deployment) { *d.Spec.Replicas = 5 })
		testkit.EventuallyWhy(t, "scale up to 5", time.Minute, func() string { return converged(t, st, "web", 5) })
		mutate(t, st, "web", func(d *appsv1.Deployment) { *d.Spec.Replicas = 2 })
		testkit.EventuallyWhy(t, "scale down to 2", time.Minute, func() string { return converged(t, st, "web", 2) })

		mutate(t, st, "web", func(d *appsv1.Deployment) {
			*d.Spec.Replicas = 4
			d.Spec.Template.Spec.Containers[0].Image = "nginx:2"
		})
		testkit.EventuallyWhy(t, "rolling update to nginx:2", time.Minute, func() string { return converged(t, st, "web", 4) })
		for _, p := range pods(t, st) {
			if img := p.Spec.Containers[0].Image; img != "nginx:2" {
				t.Errorf("pod %s runs %s", p.Name, img)
			}
		}
		if rss := replicaSets(t, st); len(rss) != 2 {
			t.Errorf("%d replicasets, want 2 (new and one kept at 0)", len(rss))
		}
		if got := deployment.Revision(getDeployment(t, st, "web")); got != 2 {
			t.Errorf("revision = %d, want 2", got)
		}

		// A bare pod is left alone by the garbage collector.
		bare := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "bare", Namespace: "default"},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}}
		create(t, st, bare)

		if _, err := st.Delete(context.Background(), "deployments", "default", "web", store.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		testkit.EventuallyWhy(t, "replicasets and pods collected", time.Minute, func() string {
			rss, ps := replicaSets(t, st), pods(t, st)
			if len(rss) != 0 || len(ps) != 1 || ps[0].Name != "bare" {
				return fmt.Sprintf("%d replicasets, pods %v", len(rss), podNames(ps))
			}
			return ""
		})
		testkit.EventuallyWhy(t, "bare pod scheduled and running", time.Minute, func() string {
			ps := pods(t, st)
			if len(ps) != 1 || !ready(ps[0]) {
				return fmt.Sprintf("pods %v", podNames(ps))
			}
			return ""
		})
	})
}

func podNames(ps []*corev1.Pod) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.Name)
	}
	sort.Strings(out)
	return out
}

func TestRecreate(t *testing.T) {
	eachStore(t, func(t *testing.T, st store.Interface) {
		startKubelets(t, st, 2)
		startManager(t, st)
		d := newDeployment("db", 2, "postgres:15")
		d.Spec.Strategy.Type = appsv1.RecreateDeploymentStrategyType
		create(t, st, d)
		testkit.EventuallyWhy(t, "2 running pods", time.Minute, func() string { return converged(t, st, "db", 2) })
		mutate(t, st, "db", func(d *appsv1.Deployment) { d.Spec.Template.Spec.Containers[0].Image = "postgres:16" })
		testkit.EventuallyWhy(t, "recreated on postgres:16", time.Minute, func() string { return converged(t, st, "db", 2) })
	})
}

// TestRestartMidRollout stops the manager in the middle of a rolling
// update (as kill -9 would: no cleanup beyond what was written) and starts
// a new one, which must converge without duplicate pods.
func TestRestartMidRollout(t *testing.T) {
	eachStore(t, func(t *testing.T, st store.Interface) {
		startKubelets(t, st, 3)
		m := startManager(t, st)
		d := newDeployment("api", 6, "api:1")
		one := intstr.FromInt32(1)
		d.Spec.Strategy.RollingUpdate = &appsv1.RollingUpdateDeployment{MaxSurge: &one, MaxUnavailable: &one}
		create(t, st, d)
		testkit.EventuallyWhy(t, "6 running pods", time.Minute, func() string { return converged(t, st, "api", 6) })

		mutate(t, st, "api", func(d *appsv1.Deployment) { d.Spec.Template.Spec.Containers[0].Image = "api:2" })
		testkit.EventuallyWhy(t, "rollout started", time.Minute, func() string {
			if len(replicaSets(t, st)) < 2 {
				return "no new replicaset yet"
			}
			return ""
		})
		m.stop()
		t.Logf("manager stopped mid-rollout with %d pods", len(pods(t, st)))

		m = startManager(t, st)
		testkit.EventuallyWhy(t, "rollout finished after restart", time.Minute, func() string { return converged(t, st, "api", 6) })
		// And it stays so: no late duplicates from a second manager's resyncs.
		m.quiet(t, reconciler.ReplicaSet, 3)
		if msg := converged(t, st, "api", 6); msg != "" {
			t.Fatalf("after settling: %s", msg)
		}
	})
}

// TestRapidResyncNoDuplicates resyncs every few milliseconds while a large
// ReplicaSet scales up, through two managers in turn: the pod count must
// never go above spec.replicas.
func TestRapidResyncNoDuplicates(t *testing.T) {
	eachStore(t, func(t *testing.T, st store.Interface) {
		const want = 40
		n := int32(want)
		labels := map[string]string{"app": "burst"}
		rs := &appsv1.ReplicaSet{
			ObjectMeta: metav1.ObjectMeta{Name: "burst", Namespace: "default"},
			Spec: appsv1.ReplicaSetSpec{Replicas: &n, Selector: &metav1.LabelSelector{MatchLabels: labels},
				Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels},
					Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}}},
		}
		create(t, st, rs)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		ch, err := st.Watch(ctx, "pods", store.ListOptions{}, st.Revision())
		if err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		count, peak := 0, 0
		go func() {
			for ev := range ch {
				mu.Lock()
				switch ev.Type {
				case store.Added:
					count++
				case store.Deleted:
					count--
				}
				peak = max(peak, count)
				mu.Unlock()
			}
		}()
		cfg := reconciler.Config{Store: st, Logger: testLogger(t), ResyncPeriod: 3 * time.Millisecond, Workers: 4,
			Controllers: []string{reconciler.ReplicaSet}}
		m := startManagerWith(t, cfg)
		testkit.EventuallyWhy(t, "the scale-up under way", time.Minute, func() string {
			if len(pods(t, st)) == 0 {
				return "no pod yet"
			}
			return ""
		})
		m.stop()
		m = startManagerWith(t, cfg)
		testkit.EventuallyWhy(t, "40 pods", time.Minute, func() string {
			if got := len(pods(t, st)); got != want {
				return fmt.Sprintf("%d pods", got)
			}
			return ""
		})
		m.quiet(t, reconciler.ReplicaSet, 100) // many resyncs
		mu.Lock()
		defer mu.Unlock()
		if got := len(pods(t, st)); peak != want || got != want {
			t.Fatalf("peak %d pods, now %d, want %d", peak, got, want)
		}
	})
}

// TestIdleWritesNothing: once converged, resyncs find nothing to do and
// write nothing (an idle cluster must not wear out an edge node's disk).
func TestIdleWritesNothing(t *testing.T) {
	eachStore(t, func(t *testing.T, st store.Interface) {
		startKubelets(t, st, 2)
		m := startManagerWith(t, reconciler.Config{Store: st, Logger: testLogger(t), ResyncPeriod: 50 * time.Millisecond})
		create(t, st, newDeployment("idle", 3, "nginx:1"))
		testkit.EventuallyWhy(t, "3 running pods", time.Minute, func() string { return converged(t, st, "idle", 3) })
		testkit.EventuallyTrue(t, "idle", 0, m.Idle) // the last status writes landed
		before := st.Revision()
		m.quiet(t, reconciler.ReplicaSet, 20) // 20 resyncs
		if after := st.Revision(); after != before {
			t.Errorf("store revision went from %d to %d while idle", before, after)
		}
	})
}

// TestUnschedulablePod: a pod that fits nowhere stays Pending with
// PodScheduled=False/Unschedulable, written once, and is bound as soon as
// a node that fits registers.
func TestUnschedulablePod(t *testing.T) {
	eachStore(t, func(t *testing.T, st store.Interface) {
		startKubelets(t, st, 2) // 4 cpu each
		m := startManagerWith(t, reconciler.Config{Store: st, Logger: testLogger(t), ResyncPeriod: 50 * time.Millisecond})
		big := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "big", Namespace: "default"},
			Spec: corev1.PodSpec{NodeSelector: map[string]string{"disk": "ssd"}, Containers: []corev1.Container{{Name: "c", Image: "x",
				Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("6")}}}}}}
		create(t, st, big)
		want := "0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector."
		var rv string
		testkit.EventuallyWhy(t, "unschedulable condition", time.Minute, func() string {
			o, err := st.Get(context.Background(), "pods", "default", "big")
			if err != nil {
				return err.Error()
			}
			p := o.(*corev1.Pod)
			for _, c := range p.Status.Conditions {
				if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Reason == "Unschedulable" && c.Message == want {
					rv = p.ResourceVersion
					return ""
				}
			}
			return fmt.Sprintf("conditions %+v", p.Status.Conditions)
		})
		m.quiet(t, reconciler.Scheduler, 10) // many resyncs and retries
		o, _ := st.Get(context.Background(), "pods", "default", "big")
		if o.GetResourceVersion() != rv {
			t.Errorf("unchanged Unschedulable status was rewritten (%s → %s)", rv, o.GetResourceVersion())
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		k := &reconciler.SimKubelet{Store: st, NodeName: "big-node", CPU: "8", Labels: map[string]string{"disk": "ssd"}}
		go func() { _ = k.Run(ctx) }()
		testkit.EventuallyWhy(t, "bound to the new node and running", time.Minute, func() string {
			o, _ := st.Get(context.Background(), "pods", "default", "big")
			p := o.(*corev1.Pod)
			if p.Spec.NodeName != "big-node" || !ready(p) {
				return fmt.Sprintf("node %q phase %s", p.Spec.NodeName, p.Status.Phase)
			}
			return ""
		})
	})
}

// TestNotReadyNodeGetsNoPods: the scheduler skips a node whose kubelet
// reports NotReady.
func TestNotReadyNodeGetsNoPods(t *testing.T) {
	st := store.MemoryFor(t)
	startKubelets(t, st, 2)
	k := &reconciler.SimKubelet{Store: st, NodeName: "node-1"}
	if err := k.SetReady(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	startManager(t, st)
	create(t, st, newDeployment("web", 4, "nginx:1"))
	testkit.EventuallyWhy(t, "4 running pods", time.Minute, func() string { return converged(t, st, "web", 4) })
	for _, p := range pods(t, st) {
		if p.Spec.NodeName != "node-0" {
			t.Errorf("pod %s on %s, want node-0 (node-1 is NotReady)", p.Name, p.Spec.NodeName)
		}
	}
}
