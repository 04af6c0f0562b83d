package node

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/internal/testkit"
	"github.com/flotilla-dev/flotilla/node/runtimeapi"
)

// runWith starts an agent on h with cfg changed by set; stopped at cleanup.
func (h *harness) runWith(t *testing.T, set func(*Config)) *Agent {
	t.Helper()
	cfg := Config{NodeName: "n1", Store: h.st, Runtime: h.rt, Network: h.net, PodDir: h.podDir, Mounter: h.mounter,
		SyncInterval: 50 * time.Millisecond, OrphanGracePeriod: time.Millisecond, Logger: testkit.Logger(t)}
	set(&cfg)
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = a.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return a
}

func nodeReady(t *testing.T, st store.Interface) corev1.NodeCondition {
	t.Helper()
	obj, err := st.Get(context.Background(), "nodes", "", "n1")
	if err != nil {
		return corev1.NodeCondition{}
	}
	for _, c := range obj.(*corev1.Node).Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c
		}
	}
	return corev1.NodeCondition{}
}

// onePodEach is nil when every store pod of names is Running with exactly
// one runtime pod.
func onePodEach(t *testing.T, h *harness, names ...string) error {
	pods, err := h.rt.ListPods(context.Background())
	if err != nil {
		return err
	}
	perUID := map[string]int{}
	for _, p := range pods {
		perUID[p.UID]++
	}
	for _, n := range names {
		p := getPod(t, h.st, n)
		if p.Status.Phase != corev1.PodRunning {
			return fmt.Errorf("pod %s is %q", n, p.Status.Phase)
		}
		if c := perUID[string(p.UID)]; c != 1 {
			return fmt.Errorf("pod %s has %d runtime pods", n, c)
		}
	}
	if len(pods) != len(names) {
		return fmt.Errorf("%d runtime pods for %d store pods", len(pods), len(names))
	}
	return nil
}

// TestRuntimeDownNodeNotReadyThenEveryPodRunsAgain: while the runtime does
// not answer the node is NotReady with the reason and the runtime's error;
// pods keep their last status. When it is back the node is Ready, a pod
// lost meanwhile is recreated, the others are adopted, none twice.
func TestRuntimeDownNodeNotReadyThenEveryPodRunsAgain(t *testing.T) {
	h := newHarness(t)
	h.rt.EnableEvents()
	names := []string{"a", "b", "c"}
	for _, n := range names {
		createPod(t, h.st, newPod(n))
	}
	h.runWith(t, func(c *Config) { c.SyncInterval = time.Hour; c.RuntimeCheckInterval = time.Hour })
	testkit.Eventually(t, "three pods Running", 0, func() error { return onePodEach(t, h, names...) })
	testkit.EventuallyTrue(t, "node Ready", 0, func() bool { return nodeReady(t, h.st).Status == corev1.ConditionTrue })
	runs := h.rt.CountCalls("RunPod")

	pods, _ := h.rt.ListPods(context.Background())
	h.rt.SetDown(errors.New("podman at unix:///run/x/podman.sock: dial unix /run/x/podman.sock: connect: connection refused"))
	testkit.Eventually(t, "node NotReady with the reason", 0, func() error {
		c := nodeReady(t, h.st)
		if c.Status != corev1.ConditionFalse || c.Reason != "ContainerRuntimeDown" {
			return fmt.Errorf("Ready %s %s", c.Status, c.Reason)
		}
		if !strings.Contains(c.Message, "container runtime is down") || !strings.Contains(c.Message, "/run/x/podman.sock") {
			return fmt.Errorf("message %q", c.Message)
		}
		return nil
	})
	for _, n := range names {
		if p := getPod(t, h.st, n); p.Status.Phase != corev1.PodRunning {
			t.Errorf("while the runtime is down pod %s became %s", n, p.Status.Phase)
		}
	}
	h.rt.LosePod(pods[0].ID) // conmon kept the others; this one is gone
	h.rt.SetDown(nil)

	testkit.EventuallyTrue(t, "node Ready again", 0, func() bool {
		c := nodeReady(t, h.st)
		return c.Status == corev1.ConditionTrue && c.Reason == "AgentReady"
	})
	testkit.Eventually(t, "every pod Running again, one runtime pod each", 0, func() error { return onePodEach(t, h, names...) })
	if n := h.rt.CountCalls("RunPod") - runs; n != 1 {
		t.Errorf("%d pods created after the outage, want 1 (the lost one)", n)
	}
}

// TestDuplicateRuntimePodsAreRemoved: two runtime pods for one store pod (a
// RunPod cut short by an outage, then a retry) end as one, adopted, none
// created.
func TestDuplicateRuntimePodsAreRemoved(t *testing.T) {
	h := newHarness(t)
	p := createPod(t, h.st, newPod("twice"))
	sb := runtimeapi.PodSandbox{UID: string(p.UID), Namespace: "default", Name: "twice", Containers: []runtimeapi.ContainerSpec{{Name: "main", Image: testImage}}}
	h.rt.InjectPod(sb)
	h.rt.InjectPod(sb)
	h.run(t)
	testkit.Eventually(t, "one runtime pod, Running", 0, func() error { return onePodEach(t, h, "twice") })
	if n := h.rt.CountCalls("RunPod"); n != 0 {
		t.Errorf("RunPod called %d times; a runtime pod was there to adopt", n)
	}
}

// TestRuntimeEventsDriveWorkers: with events, a container exit is seen at
// once although nothing polls (resyncs every hour).
func TestRuntimeEventsDriveWorkers(t *testing.T) {
	h := newHarness(t)
	h.rt.EnableEvents()
	pod := newPod("once")
	pod.Spec.RestartPolicy = corev1.RestartPolicyNever
	createPod(t, h.st, pod)
	a := h.runWith(t, func(c *Config) { c.SyncInterval = time.Hour; c.RuntimeResyncInterval = time.Hour })
	testkit.EventuallyTrue(t, "Running", 0, func() bool { return phase(t, h.st, "once") == corev1.PodRunning })
	testkit.EventuallyTrue(t, "events live", 0, a.eventsLive)
	pods, _ := h.rt.ListPods(context.Background())
	st, _ := h.rt.PodStatus(context.Background(), pods[0].ID)
	if err := h.rt.ExitContainer(st.Containers[0].ID, 3); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, "the exit seen (Failed)", 0, func() error {
		p := getPod(t, h.st, "once")
		if p.Status.Phase != corev1.PodFailed {
			return fmt.Errorf("phase %s", p.Status.Phase)
		}
		if term := p.Status.ContainerStatuses[0].State.Terminated; term == nil || term.ExitCode != 3 {
			return fmt.Errorf("container %+v", p.Status.ContainerStatuses[0].State)
		}
		return nil
	})
}

// TestIdlePodCostsNoRuntimeCalls: while events stream, a worker reads its
// pod from the runtime only after an event, an action, or once per
// RuntimeResyncInterval, not at every sync.
func TestIdlePodCostsNoRuntimeCalls(t *testing.T) {
	s := newSyncHarness(t, newPod("idle"))
	s.a.health.eventsLive = true
	s.sync(t) // creates and reads it
	reads := s.rt.CountCalls("PodStatus")
	for i := 0; i < 10; i++ {
		s.clk.Step(10 * time.Second)
		s.sync(t)
	}
	if n := s.rt.CountCalls("PodStatus") - reads; n != 0 {
		t.Fatalf("%d runtime reads of an idle pod in 100s", n)
	}
	s.w.markStale() // an event
	s.sync(t)
	if n := s.rt.CountCalls("PodStatus") - reads; n != 1 {
		t.Fatalf("%d runtime reads after an event, want 1", n)
	}
	s.clk.Step(s.a.cfg.RuntimeResyncInterval)
	s.sync(t)
	if n := s.rt.CountCalls("PodStatus") - reads; n != 2 {
		t.Fatalf("%d runtime reads after RuntimeResyncInterval, want 2", n)
	}
	s.a.health.eventsLive = false // polled: every sync reads
	s.sync(t)
	if n := s.rt.CountCalls("PodStatus") - reads; n != 3 {
		t.Fatalf("%d runtime reads without events, want 3", n)
	}
}

// TestHungRuntimeCallsEndAtTheirDeadline: a runtime that never answers
// fails each call after its deadline, with the operation named, and the
// node goes NotReady.
func TestHungRuntimeCallsEndAtTheirDeadline(t *testing.T) {
	rt := NewFakeRuntime(nil)
	rt.SetHang(true)
	d := deadlineRuntime{rt: rt, call: 20 * time.Millisecond, pull: 30 * time.Millisecond}
	ctx := context.Background()
	check := func(op string, err error) {
		t.Helper()
		if !errors.Is(err, runtimeapi.ErrTimeout) || !strings.Contains(err.Error(), op) {
			t.Errorf("%s: err = %v, want ErrTimeout naming the operation", op, err)
		}
	}
	_, err := d.RunPod(ctx, runtimeapi.PodSandbox{Namespace: "default", Name: "web"})
	check("run pod default/web", err)
	_, err = d.PodStatus(ctx, "p1")
	check("read the status of runtime pod p1", err)
	_, err = d.ListPods(ctx)
	check("list runtime pods", err)
	check("pull image x", d.PullImage(ctx, "x"))
	check("stop runtime pod p1", d.StopPod(ctx, "p1", 10*time.Millisecond))
	check("start container c1", d.StartContainer(ctx, "c1"))
	_, err = d.ImageExists(ctx, "x")
	check("look for image x", err)

	// A caller's own cancellation is not a timeout.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := d.StartContainer(cctx, "c1"); errors.Is(err, runtimeapi.ErrTimeout) {
		t.Errorf("a cancelled call reported as a timeout: %v", err)
	}

	h := newHarness(t)
	h.rt.SetHang(true)
	createPod(t, h.st, newPod("stuck"))
	h.runWith(t, func(c *Config) { c.RuntimeTimeout = 50 * time.Millisecond })
	testkit.Eventually(t, "node NotReady: the runtime does not answer", 0, func() error {
		c := nodeReady(t, h.st)
		if c.Status != corev1.ConditionFalse || !strings.Contains(c.Message, runtimeapi.ErrTimeout.Error()) {
			return fmt.Errorf("Ready %s: %s", c.Status, c.Message)
		}
		return nil
	})
	h.rt.SetHang(false)
	testkit.EventuallyTrue(t, "the pod runs once the runtime answers", 0, func() bool {
		return phase(t, h.st, "stuck") == corev1.PodRunning && nodeReady(t, h.st).Status == corev1.ConditionTrue
	})
}

// TestPanicInAPodSyncStopsOnlyThatPod: a pod whose sync panics gets a status
// that says so, is retried with a back-off, and the agent and the other
// pods go on; when it no longer panics it runs.
func TestPanicInAPodSyncStopsOnlyThatPod(t *testing.T) {
	bad := newPod("bad")
	bad.Annotations = map[string]string{"test/panic": "yes"}
	s := newSyncHarness(t, bad)
	s.a.syncHook = func(p *corev1.Pod) {
		if p.Annotations["test/panic"] == "yes" {
			var m map[string]int
			m["boom"]++ // a nil map write: a real runtime panic
		}
	}
	for i, want := range []time.Duration{10 * time.Second, 20 * time.Second} {
		next := s.w.syncSafely(context.Background())
		if got := next.Sub(s.clk.Now()); got != want {
			t.Fatalf("panic %d: retry in %s, want %s", i+1, got, want)
		}
		st := getPod(t, s.st, "bad").Status
		if st.Reason != "AgentPanic" || !strings.Contains(st.Message, "assignment to entry in nil map") || st.Phase != corev1.PodPending {
			t.Fatalf("panic %d: status %s %q %q", i+1, st.Phase, st.Reason, st.Message)
		}
		s.clk.Step(want)
	}
	s.a.syncHook = nil // fixed
	s.w.syncSafely(context.Background())
	if st := getPod(t, s.st, "bad").Status; st.Phase != corev1.PodRunning || st.Reason != "" {
		t.Fatalf("after the fix: %s %q", st.Phase, st.Reason)
	}

	// Through the agent: the other pods run, and the agent still serves
	// (a deletion is carried out).
	h := newHarness(t)
	createPod(t, h.st, bad.DeepCopy())
	createPod(t, h.st, newPod("good"))
	a, err := New(Config{NodeName: "n1", Store: h.st, Runtime: h.rt, Network: h.net, PodDir: h.podDir, Mounter: h.mounter,
		SyncInterval: 50 * time.Millisecond, Logger: testkit.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	a.syncHook = func(p *corev1.Pod) {
		if p.Annotations["test/panic"] == "yes" {
			panic("bad pod")
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = a.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	testkit.EventuallyTrue(t, "good Running, bad marked", 0, func() bool {
		return phase(t, h.st, "good") == corev1.PodRunning && getPod(t, h.st, "bad").Status.Reason == "AgentPanic"
	})
	if _, err := h.st.Delete(context.Background(), "pods", "default", "good", store.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	testkit.EventuallyTrue(t, "good removed from the runtime", 0, func() bool {
		pods, _ := h.rt.ListPods(context.Background())
		return len(pods) == 0
	})
}
