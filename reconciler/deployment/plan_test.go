package deployment

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

var now = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func testDeployment(replicas int32, image string) *appsv1.Deployment {
	labels := map[string]string{"app": "web"}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default", UID: "d-uid", Generation: 1},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: image}}},
			},
		},
	}
}

func TestRollingParams(t *testing.T) {
	i, s := intstr.FromInt32, intstr.FromString
	cases := []struct {
		replicas               int32
		surge, unavail         *intstr.IntOrString
		wantSurge, wantUnavail int32
	}{
		{10, nil, nil, 3, 2}, // 25%: surge 2.5 → 3, unavailable 2.5 → 2
		{4, nil, nil, 1, 1},
		{1, nil, nil, 1, 0},
		{3, ptr(i(0)), ptr(i(0)), 0, 1}, // both 0 → unavailable 1
		{10, ptr(s("50%")), ptr(s("10%")), 5, 1},
		{10, ptr(s("0%")), ptr(s("0%")), 0, 1},
		{5, ptr(i(2)), ptr(i(0)), 2, 0},
		{3, ptr(s("34%")), ptr(s("34%")), 2, 1},
	}
	for _, c := range cases {
		d := testDeployment(c.replicas, "a")
		d.Spec.Strategy.RollingUpdate = &appsv1.RollingUpdateDeployment{MaxSurge: c.surge, MaxUnavailable: c.unavail}
		gs, gu, err := RollingParams(d)
		if err != nil {
			t.Fatal(err)
		}
		if gs != c.wantSurge || gu != c.wantUnavail {
			t.Errorf("replicas=%d surge=%v unavail=%v: got %d/%d, want %d/%d", c.replicas, c.surge, c.unavail, gs, gu, c.wantSurge, c.wantUnavail)
		}
	}
}

func ptr[T any](v T) *T { return &v }

// world is a tiny simulation of a cluster for the planner: ReplicaSets
// whose pods appear at once and become available one tick later.
type world struct {
	rss  []*appsv1.ReplicaSet
	uid  int
	tick time.Time
}

func (w *world) apply(a Actions) []string {
	var log []string
	if a.Create != nil {
		rs := a.Create.DeepCopy()
		w.uid++
		rs.UID = types.UID(fmt.Sprintf("rs-%d", w.uid))
		rs.CreationTimestamp = metav1.NewTime(w.tick)
		w.rss = append(w.rss, rs)
		log = append(log, fmt.Sprintf("create %s=%d", short(rs), *rs.Spec.Replicas))
	}
	for _, u := range a.Updates {
		for i, rs := range w.rss {
			if rs.UID == u.UID {
				log = append(log, fmt.Sprintf("scale %s %d→%d", short(rs), *rs.Spec.Replicas, *u.Spec.Replicas))
				st := rs.Status
				w.rss[i] = u.DeepCopy()
				w.rss[i].Status = st
			}
		}
	}
	for _, del := range a.Deletes {
		for i, rs := range w.rss {
			if rs.UID == del.UID {
				log = append(log, "delete "+short(rs))
				w.rss = append(w.rss[:i], w.rss[i+1:]...)
				break
			}
		}
	}
	return log
}

// settle plays the ReplicaSet controller and the kubelet for one tick.
func (w *world) settle() {
	for _, rs := range w.rss {
		spec := *rs.Spec.Replicas
		prev := rs.Status.Replicas
		rs.Status.Replicas = spec
		rs.Status.ReadyReplicas = min(spec, prev)
		rs.Status.AvailableReplicas = min(spec, prev)
	}
	w.tick = w.tick.Add(time.Second)
}

func short(rs *appsv1.ReplicaSet) string {
	return "rs" + strings.TrimPrefix(string(rs.UID), "rs-")
}

func (w *world) state() string {
	var parts []string
	for _, rs := range w.rss {
		parts = append(parts, fmt.Sprintf("%s:%d/%d", short(rs), rs.Status.AvailableReplicas, *rs.Spec.Replicas))
	}
	return strings.Join(parts, " ")
}

// run drives d to convergence and returns the trace; it checks the
// strategy's invariants at every tick.
func run(t *testing.T, w *world, d *appsv1.Deployment, maxTicks int) []string {
	t.Helper()
	surge, unavail, _ := RollingParams(d)
	replicas := *d.Spec.Replicas
	var was int32
	for _, rs := range w.rss {
		was += rs.Status.AvailableReplicas
	}
	wasAvailable := was >= replicas
	var trace []string
	for tick := 0; tick < maxTicks; tick++ {
		a, err := Plan(d, w.rss, nil, w.tick)
		if err != nil {
			t.Fatal(err)
		}
		d.Status = a.Status
		if Revision(d) != a.Revision {
			setRevision(d, a.Revision)
		}
		acts := w.apply(a)
		if len(acts) == 0 && a.Waiting == "" && isProgressed(d) {
			trace = append(trace, fmt.Sprintf("done  [%s]", w.state()))
			return trace
		}
		if len(acts) > 0 {
			trace = append(trace, fmt.Sprintf("%-5d %s [%s]", tick, strings.Join(acts, ", "), w.state()))
		}
		w.settle()
		if d.Spec.Strategy.Type == appsv1.RecreateDeploymentStrategyType {
			continue
		}
		// RollingUpdate invariants: at most replicas+maxSurge pods wanted,
		// and, once the first rollout is done, at least
		// replicas-maxUnavailable available.
		var total, avail int32
		for _, rs := range w.rss {
			total += *rs.Spec.Replicas
			avail += rs.Status.AvailableReplicas
		}
		if total > replicas+surge {
			t.Errorf("tick %d: %d replicas exceed %d+%d [%s]", tick, total, replicas, surge, w.state())
		}
		if wasAvailable && avail < replicas-unavail {
			t.Errorf("tick %d: %d available, below %d-%d [%s]", tick, avail, replicas, unavail, w.state())
		}
	}
	t.Fatalf("not converged in %d ticks:\n%s", maxTicks, strings.Join(trace, "\n"))
	return nil
}

func isProgressed(d *appsv1.Deployment) bool {
	for _, c := range d.Status.Conditions {
		if c.Type == appsv1.DeploymentProgressing {
			return c.Reason == ReasonNewReplicaSetAvailable
		}
	}
	return false
}

// TestRolloutScenarios runs rollouts with several strategies through the
// simulated world and compares the traces with testdata/rollout.golden.
// Each line: tick, the actions, then [rsN:available/replicas ...].
func TestRolloutScenarios(t *testing.T) {
	i, s := intstr.FromInt32, intstr.FromString
	scenarios := []struct {
		name           string
		replicas       int32
		strategy       appsv1.DeploymentStrategyType
		surge, unavail *intstr.IntOrString
		history        *int32
	}{
		{name: "rolling default 25% of 4", replicas: 4},
		{name: "rolling default 25% of 10", replicas: 10},
		{name: "rolling surge 1 unavailable 0", replicas: 3, surge: ptr(i(1)), unavail: ptr(i(0))},
		{name: "rolling surge 0 unavailable 1", replicas: 3, surge: ptr(i(0)), unavail: ptr(i(1))},
		{name: "rolling surge 100% unavailable 0%", replicas: 4, surge: ptr(s("100%")), unavail: ptr(s("0%"))},
		{name: "rolling surge 0 unavailable 0 (unavailable becomes 1)", replicas: 2, surge: ptr(i(0)), unavail: ptr(i(0))},
		{name: "recreate", replicas: 3, strategy: appsv1.RecreateDeploymentStrategyType},
		{name: "history limit 1 after three rollouts", replicas: 2, history: ptr(int32(1))},
	}
	var out strings.Builder
	for _, sc := range scenarios {
		d := testDeployment(sc.replicas, "v1")
		if sc.strategy != "" {
			d.Spec.Strategy.Type = sc.strategy
		} else {
			d.Spec.Strategy.Type = appsv1.RollingUpdateDeploymentStrategyType
			d.Spec.Strategy.RollingUpdate = &appsv1.RollingUpdateDeployment{MaxSurge: sc.surge, MaxUnavailable: sc.unavail}
		}
		d.Spec.RevisionHistoryLimit = sc.history
		w := &world{tick: now}
		fmt.Fprintf(&out, "== %s\n", sc.name)
		fmt.Fprintf(&out, "-- create v1\n%s\n", strings.Join(run(t, w, d, 50), "\n"))
		for _, img := range []string{"v2", "v3"} {
			if img == "v3" && sc.history == nil {
				break
			}
			d.Spec.Template.Spec.Containers[0].Image = img
			d.Generation++
			fmt.Fprintf(&out, "-- update to %s\n%s\n", img, strings.Join(run(t, w, d, 50), "\n"))
		}
		if sc.history != nil {
			// Roll back to v1: its ReplicaSet was pruned, so it is made again.
			d.Spec.Template.Spec.Containers[0].Image = "v2"
			d.Generation++
			fmt.Fprintf(&out, "-- back to v2 (revision kept, bumped)\n%s\n", strings.Join(run(t, w, d, 50), "\n"))
			fmt.Fprintf(&out, "revision %d\n", Revision(d))
		}
	}
	golden(t, "rollout.golden", out.String())
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if string(want) != got {
		t.Errorf("%s differs (run with -update and review the diff):\n--- got\n%s", path, got)
	}
}

func TestScaleUpDown(t *testing.T) {
	d := testDeployment(3, "v1")
	w := &world{tick: now}
	run(t, w, d, 20)
	for _, n := range []int32{5, 1, 0, 2} {
		*d.Spec.Replicas = n
		d.Generation++
		run(t, w, d, 20)
		if len(w.rss) != 1 || *w.rss[0].Spec.Replicas != n || w.rss[0].Status.AvailableReplicas != n {
			t.Fatalf("scale to %d: %s", n, w.state())
		}
		if d.Status.ObservedGeneration != d.Generation || d.Status.AvailableReplicas != n || d.Status.UpdatedReplicas != n {
			t.Errorf("scale to %d: status %+v", n, d.Status)
		}
	}
}

func TestNewReplicaSetShape(t *testing.T) {
	d := testDeployment(3, "v1")
	a, err := Plan(d, nil, nil, now)
	if err != nil {
		t.Fatal(err)
	}
	rs := a.Create
	hash := TemplateHash(&d.Spec.Template)
	if rs == nil || rs.Name != "web-"+hash {
		t.Fatalf("create = %v, want web-%s", rs, hash)
	}
	if rs.Spec.Selector.MatchLabels[HashLabel] != hash || rs.Spec.Template.Labels[HashLabel] != hash || rs.Labels[HashLabel] != hash {
		t.Errorf("hash label missing: selector %v template %v labels %v", rs.Spec.Selector, rs.Spec.Template.Labels, rs.Labels)
	}
	ref := metav1.GetControllerOf(rs)
	if ref == nil || ref.UID != d.UID || ref.Kind != "Deployment" || ref.BlockOwnerDeletion == nil || !*ref.BlockOwnerDeletion {
		t.Errorf("owner reference %+v", rs.OwnerReferences)
	}
	if Revision(rs) != 1 || a.Revision != 1 {
		t.Errorf("revision rs=%d deployment=%d, want 1", Revision(rs), a.Revision)
	}
	if d.Spec.Template.Labels[HashLabel] != "" || d.Spec.Selector.MatchLabels[HashLabel] != "" {
		t.Error("Plan changed its input")
	}
	// The hash ignores the hash label and changes with the template.
	t2 := rs.Spec.Template.DeepCopy()
	if TemplateHash(t2) != hash {
		t.Error("hash depends on the pod-template-hash label")
	}
	t2.Spec.Containers[0].Image = "v2"
	if TemplateHash(t2) == hash {
		t.Error("hash ignores the image")
	}
}

func TestPausedDoesNotRollOut(t *testing.T) {
	d := testDeployment(2, "v1")
	w := &world{tick: now}
	run(t, w, d, 20)
	d.Spec.Paused = true
	d.Spec.Template.Spec.Containers[0].Image = "v2"
	*d.Spec.Replicas = 4
	for i := 0; i < 5; i++ {
		a, err := Plan(d, w.rss, nil, w.tick)
		if err != nil {
			t.Fatal(err)
		}
		if a.Create != nil {
			t.Fatal("paused deployment created a ReplicaSet")
		}
		w.apply(a)
		w.settle()
		d.Status = a.Status
	}
	if len(w.rss) != 1 || *w.rss[0].Spec.Replicas != 4 {
		t.Fatalf("paused scale: %s", w.state())
	}
	for _, c := range d.Status.Conditions {
		if c.Type == appsv1.DeploymentProgressing && c.Reason != ReasonDeploymentPaused {
			t.Errorf("progressing reason %s", c.Reason)
		}
	}
	d.Spec.Paused = false
	run(t, w, d, 30)
	if len(w.rss) != 2 {
		t.Fatalf("resumed: %s", w.state())
	}
}

func TestRecreateWaitsForOldPods(t *testing.T) {
	d := testDeployment(2, "v1")
	d.Spec.Strategy.Type = appsv1.RecreateDeploymentStrategyType
	w := &world{tick: now}
	run(t, w, d, 20)
	old := w.rss[0]
	d.Spec.Template.Spec.Containers[0].Image = "v2"
	a, _ := Plan(d, w.rss, nil, now)
	if len(a.Updates) != 1 || *a.Updates[0].Spec.Replicas != 0 || a.Create != nil {
		t.Fatalf("first step %+v, want old scaled to 0", a)
	}
	w.apply(a)
	yes := true
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "old-1", OwnerReferences: []metav1.OwnerReference{{Kind: "ReplicaSet", Name: old.Name, UID: old.UID, Controller: &yes}}}}
	a, _ = Plan(d, w.rss, []*corev1.Pod{pod}, now)
	if a.Create != nil || a.Waiting == "" {
		t.Fatalf("with an old pod left: %+v, want waiting", a)
	}
	a, _ = Plan(d, w.rss, nil, now)
	if a.Create == nil || *a.Create.Spec.Replicas != 2 {
		t.Fatalf("old pods gone: %+v, want new rs of 2", a)
	}
}

func TestStatusUnchangedIsEqual(t *testing.T) {
	d := testDeployment(2, "v1")
	w := &world{tick: now}
	run(t, w, d, 20)
	a1, _ := Plan(d, w.rss, nil, now)
	d.Status = a1.Status
	a2, _ := Plan(d, w.rss, nil, now.Add(time.Hour))
	if fmt.Sprint(a1.Status) != fmt.Sprint(a2.Status) {
		t.Errorf("status changed with time alone:\n%v\n%v", a1.Status, a2.Status)
	}
	if !isProgressed(d) {
		t.Errorf("conditions %v", d.Status.Conditions)
	}
	names := []string{}
	for _, c := range d.Status.Conditions {
		names = append(names, string(c.Type)+"="+string(c.Status)+"/"+c.Reason)
	}
	sort.Strings(names)
	if want := "Available=True/MinimumReplicasAvailable Progressing=True/NewReplicaSetAvailable"; strings.Join(names, " ") != want {
		t.Errorf("conditions %v, want %s", names, want)
	}
}

func progressing(st appsv1.DeploymentStatus) string {
	c := condition(st.Conditions, appsv1.DeploymentProgressing)
	if c == nil {
		return "none"
	}
	return string(c.Status) + "/" + c.Reason
}

// TestProgressDeadline: a rollout whose new pods never become available is
// reported as ProgressDeadlineExceeded after progressDeadlineSeconds, and
// recovers when it progresses again.
func TestProgressDeadline(t *testing.T) {
	d := testDeployment(2, "v1")
	d.Spec.ProgressDeadlineSeconds = ptr(int32(10))
	w := &world{tick: now}
	run(t, w, d, 20)
	d.Spec.Template.Spec.Containers[0].Image = "v2"
	d.Generation++
	t0 := w.tick
	step := func(at time.Duration) Actions {
		t.Helper()
		a, err := Plan(d, w.rss, nil, t0.Add(at))
		if err != nil {
			t.Fatal(err)
		}
		w.apply(a)
		d.Status = a.Status
		// Pods of the new ReplicaSet exist but never become ready.
		for _, rs := range w.rss {
			rs.Status.Replicas = *rs.Spec.Replicas
			rs.Status.AvailableReplicas = min(rs.Status.AvailableReplicas, *rs.Spec.Replicas)
			rs.Status.ReadyReplicas = rs.Status.AvailableReplicas
		}
		return a
	}
	step(0) // create the new ReplicaSet
	a := step(time.Second)
	if got := progressing(a.Status); got != "True/ReplicaSetUpdated" {
		t.Fatalf("after 1s: %s", got)
	}
	a = step(5 * time.Second)
	if got := progressing(a.Status); got != "True/ReplicaSetUpdated" || a.RequeueAfter <= 0 || a.RequeueAfter > 10*time.Second {
		t.Fatalf("after 5s: %s, requeue %v", got, a.RequeueAfter)
	}
	a = step(12 * time.Second)
	if got := progressing(a.Status); got != "False/ProgressDeadlineExceeded" {
		t.Fatalf("after 12s: %s", got)
	}
	a = step(20 * time.Second)
	if got := progressing(a.Status); got != "False/ProgressDeadlineExceeded" {
		t.Fatalf("after 20s: %s (stays failed)", got)
	}
	// The new pods become available: progress again, then complete.
	run(t, w, d, 30)
	if !isProgressed(d) {
		t.Fatalf("not recovered: %s", progressing(d.Status))
	}
}
