package node

import (
	"context"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/flotilla-dev/flotilla/internal/testkit"
	"github.com/flotilla-dev/flotilla/node/runtimeapi"
	corev1 "k8s.io/api/core/v1"
)

func initPod(name string, policy corev1.RestartPolicy, inits ...string) *corev1.Pod {
	p := newPod(name)
	p.Spec.RestartPolicy = policy
	for _, n := range inits {
		p.Spec.InitContainers = append(p.Spec.InitContainers, corev1.Container{Name: n, Image: testImage})
	}
	return p
}

func condition(st corev1.PodStatus, t corev1.PodConditionType) corev1.PodCondition {
	for _, c := range st.Conditions {
		if c.Type == t {
			return c
		}
	}
	return corev1.PodCondition{}
}

// creations lists the CreateContainer and StartContainer calls in order,
// with container IDs replaced by names.
func creations(rt *FakeRuntime) []string {
	var out []string
	for _, c := range rt.Calls() {
		if strings.HasPrefix(c, "CreateContainer ") || strings.HasPrefix(c, "StartContainer ") {
			out = append(out, c)
		}
	}
	return out
}

// TestInitContainersRunInOrder: each init container runs to completion
// before the next is even created; the app containers come after, with
// the pod Pending and Initialized=False until then.
func TestInitContainersRunInOrder(t *testing.T) {
	p := initPod("ordered", corev1.RestartPolicyAlways, "first", "second")
	p.Spec.Volumes = []corev1.Volume{volume("work", corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}})}
	for _, c := range []*corev1.Container{&p.Spec.InitContainers[0], &p.Spec.Containers[0]} {
		c.VolumeMounts = []corev1.VolumeMount{{Name: "work", MountPath: "/work"}}
	}
	s := newSyncHarness(t, p)
	s.rt.SetBehavior("first", FakeBehavior{ExitAfter: 3 * time.Second})
	s.rt.SetBehavior("second", FakeBehavior{ExitAfter: 2 * time.Second})

	st := s.sync(t)
	if st.Phase != corev1.PodPending || len(st.InitContainerStatuses) != 2 {
		t.Fatalf("status = %+v", st)
	}
	if st.InitContainerStatuses[0].State.Running == nil || st.InitContainerStatuses[1].State.Waiting.Reason != "PodInitializing" ||
		st.ContainerStatuses[0].State.Waiting.Reason != "PodInitializing" {
		t.Fatalf("while first runs: init %+v, app %+v", st.InitContainerStatuses, st.ContainerStatuses)
	}
	if c := condition(st, corev1.PodInitialized); c.Status != corev1.ConditionFalse || c.Reason != "ContainersNotInitialized" ||
		c.Message != "containers with incomplete status: [first second]" {
		t.Fatalf("Initialized = %+v", c)
	}
	if got := creations(s.rt); !reflect.DeepEqual(got, []string{"CreateContainer first", "StartContainer ctr2"}) {
		t.Fatalf("calls = %v", got)
	}
	s.clk.Step(time.Second)
	s.sync(t)
	if got := len(creations(s.rt)); got != 2 {
		t.Fatalf("something else started while first runs: %v", creations(s.rt))
	}
	s.clk.Step(2 * time.Second) // first exits 0
	st = s.sync(t)
	if st.InitContainerStatuses[0].State.Terminated == nil || st.InitContainerStatuses[0].State.Terminated.Reason != "Completed" ||
		!st.InitContainerStatuses[0].Ready || st.InitContainerStatuses[1].State.Running == nil {
		t.Fatalf("after first: %+v", st.InitContainerStatuses)
	}
	if c := condition(st, corev1.PodInitialized); c.Message != "containers with incomplete status: [second]" {
		t.Fatalf("Initialized = %+v", c)
	}
	s.clk.Step(2 * time.Second) // second exits 0
	st = s.sync(t)
	want := []string{"CreateContainer first", "StartContainer ctr2", "CreateContainer second", "StartContainer ctr3",
		"CreateContainer main", "StartContainer ctr4"}
	if got := creations(s.rt); !reflect.DeepEqual(got, want) {
		t.Fatalf("calls = %v\nwant    %v", got, want)
	}
	if st.Phase != corev1.PodRunning || st.ContainerStatuses[0].State.Running == nil || condition(st, corev1.PodInitialized).Status != corev1.ConditionTrue {
		t.Fatalf("after init: %+v", st)
	}
	// the init container and the app container mount the same emptyDir
	sb := runtimeSpec(t, s.rt)
	if len(sb.Containers) != 3 || sb.Containers[0].Mounts[0].Source != sb.Containers[2].Mounts[0].Source ||
		sb.Containers[0].Mounts[0].Source != filepath.Join(s.podDir, string(s.pod.UID), "volumes/empty-dir/work") {
		t.Fatalf("containers = %+v", sb.Containers)
	}
	// Later syncs never run them again.
	s.clk.Step(time.Minute)
	s.sync(t)
	if got := creations(s.rt); len(got) != len(want) {
		t.Fatalf("calls after init = %v", got)
	}
}

func TestInitContainerFailureNever(t *testing.T) {
	s := newSyncHarness(t, initPod("once", corev1.RestartPolicyNever, "setup"))
	s.rt.SetBehavior("setup", FakeBehavior{ExitAfter: time.Second, ExitCode: 3})
	s.sync(t)
	s.clk.Step(time.Second)
	st := s.sync(t)
	if st.Phase != corev1.PodFailed {
		t.Fatalf("phase = %s", st.Phase)
	}
	if term := st.InitContainerStatuses[0].State.Terminated; term == nil || term.ExitCode != 3 || term.Reason != "Error" {
		t.Fatalf("init status = %+v", st.InitContainerStatuses[0])
	}
	if w := st.ContainerStatuses[0].State.Waiting; w == nil || w.Reason != "PodInitializing" {
		t.Fatalf("app status = %+v", st.ContainerStatuses[0])
	}
	s.clk.Step(time.Hour)
	s.sync(t)
	if n := s.rt.CountCalls("CreateContainer"); n != 1 || s.rt.CountCalls("StartContainer") != 1 {
		t.Fatalf("retried under Never: %v", s.rt.Calls())
	}
}

func TestInitContainerCrashLoopBackOff(t *testing.T) {
	s := newSyncHarness(t, initPod("retry", corev1.RestartPolicyAlways, "setup"))
	s.rt.SetBehavior("setup", FakeBehavior{ExitAfter: time.Second, ExitCode: 1})
	s.sync(t)
	for i, d := range []time.Duration{10 * time.Second, 20 * time.Second} {
		s.clk.Step(time.Second) // it fails
		st := s.sync(t)
		cs := st.InitContainerStatuses[0]
		if st.Phase != corev1.PodPending || cs.State.Waiting == nil || cs.State.Waiting.Reason != "CrashLoopBackOff" ||
			!strings.Contains(cs.State.Waiting.Message, "back-off "+d.String()) || cs.LastTerminationState.Terminated == nil {
			t.Fatalf("round %d: %+v", i, st)
		}
		s.clk.Step(d - time.Millisecond)
		s.sync(t)
		if n := s.rt.CountCalls("StartContainer"); n != i+1 {
			t.Fatalf("round %d: restarted before the back-off ended (%d starts)", i, n)
		}
		s.clk.Step(time.Millisecond)
		st = s.sync(t)
		if n := s.rt.CountCalls("StartContainer"); n != i+2 || st.InitContainerStatuses[0].RestartCount != int32(i+1) {
			t.Fatalf("round %d: %d starts, status %+v", i, n, st.InitContainerStatuses[0])
		}
	}
	// it succeeds at last: the app runs
	s.rt.SetBehavior("setup", FakeBehavior{ExitAfter: time.Second})
	s.clk.Step(time.Second)
	st := s.sync(t)
	if st.Phase != corev1.PodRunning || st.ContainerStatuses[0].State.Running == nil || !st.InitContainerStatuses[0].Ready ||
		st.InitContainerStatuses[0].RestartCount != 2 {
		t.Fatalf("app not running after the init container succeeded: %+v", st)
	}
}

// TestInitContainersNotRerunAfterAgentRestart: a new agent adopts a pod
// whose app containers run and does not run its init containers again.
func TestInitContainersNotRerunAfterAgentRestart(t *testing.T) {
	h := newHarness(t)
	h.rt.SetBehavior("setup", FakeBehavior{ExitAfter: time.Millisecond})
	createPod(t, h.st, initPod("adopt", corev1.RestartPolicyAlways, "setup"))
	_, stop := h.run(t)
	testkit.EventuallyTrue(t, "running", 0, func() bool {
		p := getPod(t, h.st, "adopt")
		return p.Status.Phase == corev1.PodRunning && len(p.Status.InitContainerStatuses) == 1 && p.Status.InitContainerStatuses[0].State.Terminated != nil
	})
	stop()
	before := len(creations(h.rt))
	h.run(t)
	h.waitSyncs(t, 4)
	if got := creations(h.rt); len(got) != before {
		t.Fatalf("the new agent created or started containers: %v", got[before:])
	}
	p := getPod(t, h.st, "adopt")
	if p.Status.Phase != corev1.PodRunning || condition(p.Status, corev1.PodInitialized).Status != corev1.ConditionTrue ||
		p.Status.InitContainerStatuses[0].State.Terminated == nil {
		t.Fatalf("status after restart: %+v", p.Status)
	}
}

// TestAdoptMidInit: an agent that stopped while an init container ran
// leaves it to the next one, which waits for it and goes on.
func TestAdoptMidInit(t *testing.T) {
	h := newHarness(t)
	h.rt.SetBehavior("setup", FakeBehavior{ExitAfter: 200 * time.Millisecond})
	p := createPod(t, h.st, initPod("mid", corev1.RestartPolicyAlways, "setup"))
	h.rt.InjectPod(runtimeapi.PodSandbox{UID: string(p.UID), Namespace: "default", Name: "mid",
		Containers: []runtimeapi.ContainerSpec{{Name: "setup", Image: testImage}}})
	h.run(t)
	testkit.EventuallyTrue(t, "running", 0, func() bool { return phase(t, h.st, "mid") == corev1.PodRunning })
	if got := creations(h.rt); len(got) != 2 || got[0] != "CreateContainer main" {
		t.Fatalf("calls = %v, want only main created and started", got)
	}
}

// TestInitContainerConfigError: a missing ConfigMap of an init container
// shows on it (Init:CreateContainerConfigError) and is retried.
func TestInitContainerConfigError(t *testing.T) {
	p := initPod("cfg", corev1.RestartPolicyAlways, "setup")
	p.Spec.InitContainers[0].EnvFrom = []corev1.EnvFromSource{{ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "absent"}}}}
	s := newSyncHarness(t, p)
	st := s.sync(t)
	if w := st.InitContainerStatuses[0].State.Waiting; w == nil || w.Reason != "CreateContainerConfigError" || !strings.Contains(w.Message, "absent") {
		t.Fatalf("init status = %+v", st.InitContainerStatuses[0])
	}
	if s.rt.CountCalls("CreateContainer") != 0 {
		t.Fatal("created despite the config error")
	}
	if _, err := s.st.Create(context.Background(), configMap("absent", nil)); err != nil {
		t.Fatal(err)
	}
	s.clk.Step(10 * time.Second)
	if st = s.sync(t); st.InitContainerStatuses[0].State.Running == nil {
		t.Fatalf("init not started once the ConfigMap exists: %+v", st.InitContainerStatuses[0])
	}
}

func configMap(name string, data map[string]string) *corev1.ConfigMap {
	cm := &corev1.ConfigMap{Data: data}
	cm.Name, cm.Namespace = name, "default"
	return cm
}
