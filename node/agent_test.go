package node

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/internal/testkit"
	"github.com/flotilla-dev/flotilla/node/podnet"
	"github.com/flotilla-dev/flotilla/node/runtimeapi"
	"github.com/flotilla-dev/flotilla/schema"
	"github.com/flotilla-dev/flotilla/volumes"
)

const testImage = "localhost/busybox:latest"

// countingStore counts status writes of pods.
type countingStore struct {
	store.Interface
	podStatusWrites atomic.Int64
}

func (c *countingStore) UpdateStatus(ctx context.Context, obj schema.Object) (schema.Object, error) {
	if _, ok := obj.(*corev1.Pod); ok {
		c.podStatusWrites.Add(1)
	}
	return c.Interface.UpdateStatus(ctx, obj)
}

func newPod(name string, containers ...corev1.Container) *corev1.Pod {
	if len(containers) == 0 {
		containers = []corev1.Container{{Name: "main", Image: testImage, ImagePullPolicy: corev1.PullIfNotPresent}}
	}
	grace := int64(1)
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec:       corev1.PodSpec{NodeName: "n1", Containers: containers, TerminationGracePeriodSeconds: &grace},
	}
}

func createPod(t *testing.T, st store.Interface, p *corev1.Pod) *corev1.Pod {
	t.Helper()
	obj, err := st.Create(context.Background(), p)
	if err != nil {
		t.Fatalf("create pod: %v", err)
	}
	return obj.(*corev1.Pod)
}

func getPod(t *testing.T, st store.Interface, name string) *corev1.Pod {
	t.Helper()
	obj, err := st.Get(context.Background(), "pods", "default", name)
	if err != nil {
		t.Fatalf("get pod %s: %v", name, err)
	}
	return obj.(*corev1.Pod)
}

type harness struct {
	st      *countingStore
	rt      *FakeRuntime
	net     *FakeNetwork
	podDir  string
	mounter *volumes.FakeMounter
}

func newHarness(t *testing.T) *harness {
	rt := NewFakeRuntime(nil)
	rt.AddImage(testImage)
	return &harness{st: &countingStore{Interface: store.MemoryFor(t)}, rt: rt, net: NewFakeNetwork(),
		podDir: t.TempDir(), mounter: volumes.NewFakeMounter()}
}

// run starts an agent; the returned stop cancels it and waits.
func (h *harness) run(t *testing.T) (*Agent, func()) {
	t.Helper()
	a, err := New(Config{NodeName: "n1", Store: h.st, Runtime: h.rt, Network: h.net, PodDir: h.podDir, Mounter: h.mounter,
		SyncInterval: 50 * time.Millisecond, OrphanGracePeriod: time.Millisecond, Logger: testkit.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = a.Run(ctx); close(done) }()
	stop := func() { cancel(); <-done }
	t.Cleanup(stop)
	return a, stop
}

// waitSyncs waits until the agent's pod workers read the runtime's pod
// status n more times. Each sync of a pod reads it first, so n-1 whole syncs
// at least ran since the call: a check that nothing happened comes after
// the agent did its work, not after a guessed time.
func (h *harness) waitSyncs(t *testing.T, n int) {
	t.Helper()
	before := h.rt.CountCalls("PodStatus")
	testkit.EventuallyTrue(t, fmt.Sprintf("%d more pod syncs", n), 0, func() bool {
		return h.rt.CountCalls("PodStatus") >= before+n
	})
}

func phase(t *testing.T, st store.Interface, name string) corev1.PodPhase {
	return getPod(t, st, name).Status.Phase
}

func TestPodRunsStatusAndNode(t *testing.T) {
	h := newHarness(t)
	p := newPod("web")
	p.Spec.Containers[0].Resources.Limits = corev1.ResourceList{
		corev1.ResourceCPU: resource.MustParse("500m"), corev1.ResourceMemory: resource.MustParse("64Mi")}
	createPod(t, h.st, p)
	createPod(t, h.st, func() *corev1.Pod { o := newPod("elsewhere"); o.Spec.NodeName = "n2"; return o }())
	h.run(t)
	testkit.EventuallyTrue(t, "pod Running and Ready", 0, func() bool {
		p := getPod(t, h.st, "web")
		return p.Status.Phase == corev1.PodRunning && len(p.Status.Conditions) == 4 && p.Status.Conditions[3].Status == corev1.ConditionTrue
	})
	got := getPod(t, h.st, "web")
	cs := got.Status.ContainerStatuses[0]
	if got.Status.PodIP == "" || got.Status.StartTime == nil || cs.State.Running == nil || !cs.Ready || !strings.HasPrefix(cs.ContainerID, "podman://") {
		t.Fatalf("status = %+v", got.Status)
	}
	if n := h.rt.CountCalls("RunPod"); n != 1 {
		t.Fatalf("RunPod calls = %d, want 1 (pod on another node must be ignored)", n)
	}
	pods, _ := h.rt.ListPods(context.Background())
	spec, _ := h.rt.Spec(pods[0].ID)
	if c := spec.Containers[0]; c.CPUMillis != 500 || c.MemoryBytes != 64<<20 || spec.Hostname != "web" || spec.NetNSPath == "" {
		t.Fatalf("sandbox = %+v", spec)
	}
	// Ready, and DiskPressure=False once the disk was measured.
	testkit.EventuallyTrue(t, "node Ready without disk pressure", 0, func() bool {
		c := nodeCondition(t, h.st, corev1.NodeDiskPressure)
		return c != nil && c.Status == corev1.ConditionFalse
	})
	obj, err := h.st.Get(context.Background(), "nodes", "", "n1")
	if err != nil {
		t.Fatalf("node not registered: %v", err)
	}
	n := obj.(*corev1.Node)
	if n.Status.Capacity.Pods().Value() != MaxPods || n.Status.Capacity.Memory().IsZero() || len(n.Status.Conditions) != 2 ||
		n.Status.Conditions[0].Type != corev1.NodeReady || n.Status.Conditions[0].Status != corev1.ConditionTrue {
		t.Fatalf("node status = %+v", n.Status)
	}
	// nodeInfo as kubectl describe node shows it: the machine's kernel,
	// OS and boot, and the runtime's version.
	if info := n.Status.NodeInfo; info.KernelVersion == "" || info.OSImage == "" || info.BootID == "" ||
		info.ContainerRuntimeVersion != "fake://1.0" || info.OperatingSystem != "linux" {
		t.Fatalf("nodeInfo = %+v", info)
	}

	// Idle: many resyncs later, no pod status write and no node write.
	writes := h.st.podStatusWrites.Load()
	nodeRV := n.ResourceVersion
	h.waitSyncs(t, 6)
	if w := h.st.podStatusWrites.Load(); w != writes {
		t.Fatalf("idle pod got %d more status writes", w-writes)
	}
	obj, _ = h.st.Get(context.Background(), "nodes", "", "n1")
	if obj.(*corev1.Node).ResourceVersion != nodeRV {
		t.Fatalf("idle node was rewritten")
	}
}

func TestDeletionStopsRemovesTearsDown(t *testing.T) {
	h := newHarness(t)
	p := createPod(t, h.st, newPod("gone"))
	h.run(t)
	testkit.EventuallyTrue(t, "running", 0, func() bool { return phase(t, h.st, "gone") == corev1.PodRunning })
	if _, err := h.st.Delete(context.Background(), "pods", "default", "gone", store.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	testkit.EventuallyTrue(t, "pod removed", 0, func() bool {
		pods, _ := h.rt.ListPods(context.Background())
		return len(pods) == 0 && h.net.TornDown(string(p.UID)) > 0
	})
	var stop string
	for _, c := range h.rt.Calls() {
		if strings.HasPrefix(c, "StopPod") {
			stop = c
		}
	}
	if !strings.HasSuffix(stop, " 1s") {
		t.Fatalf("StopPod call %q, want grace 1s from terminationGracePeriodSeconds", stop)
	}
}

// TestIncompleteRuntimePodIsRecreated: an agent killed between creating the
// runtime pod and its last container leaves a pod that adoption cannot
// finish; the next agent removes it and creates the pod whole.
func TestIncompleteRuntimePodIsRecreated(t *testing.T) {
	h := newHarness(t)
	pod := newPod("half")
	pod.Spec.Containers = append(pod.Spec.Containers, corev1.Container{Name: "side", Image: testImage})
	p := createPod(t, h.st, pod)
	half := h.rt.InjectPod(runtimeapi.PodSandbox{UID: string(p.UID), Namespace: "default", Name: "half",
		Containers: []runtimeapi.ContainerSpec{{Name: pod.Spec.Containers[0].Name, Image: testImage}}})
	h.run(t)
	testkit.EventuallyTrue(t, "the pod Running with both containers", 0, func() bool {
		obj, err := h.st.Get(context.Background(), "pods", "default", "half")
		if err != nil {
			return false
		}
		running := 0
		for _, cs := range obj.(*corev1.Pod).Status.ContainerStatuses {
			if cs.State.Running != nil {
				running++
			}
		}
		return running == 2
	})
	if _, err := h.rt.PodStatus(context.Background(), half); !errors.Is(err, runtimeapi.ErrNotFound) {
		t.Errorf("the incomplete runtime pod is still there (err %v)", err)
	}
	if n := h.rt.CountCalls("RunPod"); n != 1 {
		t.Errorf("RunPod called %d times, want 1 (the pod created whole once)", n)
	}
}

func TestAdoptionAndOrphans(t *testing.T) {
	h := newHarness(t)
	p := createPod(t, h.st, newPod("kept"))
	adopted := h.rt.InjectPod(runtimeapi.PodSandbox{UID: string(p.UID), Namespace: "default", Name: "kept",
		Containers: []runtimeapi.ContainerSpec{{Name: "main", Image: testImage}}})
	orphan := h.rt.InjectPod(runtimeapi.PodSandbox{UID: "no-such-uid", Namespace: "default", Name: "old",
		Containers: []runtimeapi.ContainerSpec{{Name: "main", Image: testImage}}})
	_, _ = h.net.Setup(context.Background(), podnet.PodRef{UID: "stale-net"})
	_, stop := h.run(t)
	testkit.EventuallyTrue(t, "adopted pod Running", 0, func() bool { return phase(t, h.st, "kept") == corev1.PodRunning })
	testkit.EventuallyTrue(t, "orphan removed", 0, func() bool {
		_, err := h.rt.PodStatus(context.Background(), orphan)
		return errors.Is(err, runtimeapi.ErrNotFound)
	})
	if n := h.rt.CountCalls("RunPod"); n != 0 {
		t.Fatalf("RunPod called %d times; the running pod must be adopted", n)
	}
	if _, err := h.rt.PodStatus(context.Background(), adopted); err != nil {
		t.Fatalf("adopted pod gone: %v", err)
	}
	if h.net.TornDown("stale-net") == 0 {
		t.Fatal("network of unknown pod not torn down")
	}

	// A second agent after this one stops adopts again.
	stop()
	h.run(t)
	h.waitSyncs(t, 4)
	if n := h.rt.CountCalls("RunPod"); n != 0 {
		t.Fatalf("RunPod called after restart")
	}
}

func TestEnvFromConfigMapAndSecret(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	c := corev1.Container{Name: "main", Image: testImage,
		Command: []string{"sh", "-c", "echo $(GREETING)"},
		EnvFrom: []corev1.EnvFromSource{{Prefix: "CM_", ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}}}},
		Env: []corev1.EnvVar{
			{Name: "GREETING", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}, Key: "greeting"}}},
			{Name: "PASSWORD", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "sec"}, Key: "password"}}},
			{Name: "OPT", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}, Key: "nope", Optional: ptr(true)}}},
			{Name: "POD", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
			{Name: "MSG", Value: "say $(GREETING) $$(X)"},
		}}
	createPod(t, h.st, newPod("envy", c))
	if _, err := h.st.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "cfg", Namespace: "default"}, Data: map[string]string{"color": "blue"}}); err != nil {
		t.Fatal(err)
	}
	h.run(t)
	testkit.EventuallyTrue(t, "CreateContainerConfigError", 0, func() bool {
		s := getPod(t, h.st, "envy").Status
		return len(s.ContainerStatuses) == 1 && s.ContainerStatuses[0].State.Waiting != nil &&
			s.ContainerStatuses[0].State.Waiting.Reason == "CreateContainerConfigError" && s.Phase == corev1.PodPending
	})
	msg := getPod(t, h.st, "envy").Status.ContainerStatuses[0].State.Waiting.Message
	if !strings.Contains(msg, "greeting") {
		t.Fatalf("message %q does not name the missing key", msg)
	}
	// Fix the config: the pod starts on a later retry.
	cm, _ := h.st.Get(ctx, "configmaps", "default", "cfg")
	cm.(*corev1.ConfigMap).Data["greeting"] = "hello"
	if _, err := h.st.Update(ctx, cm); err != nil {
		t.Fatal(err)
	}
	if _, err := h.st.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "sec", Namespace: "default"}, Data: map[string][]byte{"password": []byte("s3cret")}}); err != nil {
		t.Fatal(err)
	}
	testkit.EventuallyTrue(t, "Running once the keys exist", 0, func() bool { return phase(t, h.st, "envy") == corev1.PodRunning })
	pods, _ := h.rt.ListPods(ctx)
	sb, _ := h.rt.Spec(pods[0].ID)
	if got := sb.Containers[0].Env["GREETING"]; got != "hello" {
		t.Fatalf("runtime got GREETING=%q", got)
	}
	pod := getPod(t, h.st, "envy")
	env, err := newEnvResolver(h.st, "default").resolve(ctx, pod, &pod.Spec.Containers[0], "10.0.0.5", "192.168.1.1")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"CM_color": "blue", "CM_greeting": "hello", "GREETING": "hello", "PASSWORD": "s3cret", "POD": "envy", "MSG": "say hello $(X)"}
	for k, v := range want {
		if env[k] != v {
			t.Errorf("env[%s] = %q, want %q (env %v)", k, env[k], v, env)
		}
	}
	if _, ok := env["OPT"]; ok {
		t.Errorf("optional missing key set")
	}
	if cs := containerSpec(&pod.Spec.Containers[0], env); cs.Command[2] != "echo hello" {
		t.Errorf("command not expanded: %q", cs.Command)
	}
}

func TestMissingSecretIsConfigError(t *testing.T) {
	st := store.MemoryFor(t)
	pod := newPod("p", corev1.Container{Name: "c", Env: []corev1.EnvVar{{Name: "X", ValueFrom: &corev1.EnvVarSource{
		SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "missing"}, Key: "k"}}}}})
	_, err := newEnvResolver(st, "default").resolve(context.Background(), pod, &pod.Spec.Containers[0], "", "")
	var ce *configError
	if !errors.As(err, &ce) {
		t.Fatalf("err = %v, want configError", err)
	}
}

func ptr[T any](v T) *T { return &v }

// syncHarness drives one pod worker by hand on a fake clock.
type syncHarness struct {
	*harness
	clk *clocktesting.FakeClock
	a   *Agent
	w   *podWorker
	pod *corev1.Pod
}

func newSyncHarness(t *testing.T, pod *corev1.Pod) *syncHarness {
	h := newHarness(t)
	clk := clocktesting.NewFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	h.rt.Clock = clk
	a, err := New(Config{NodeName: "n1", Store: h.st, Runtime: h.rt, Network: h.net, Clock: clk, Logger: testkit.Logger(t),
		PodDir: h.podDir, Mounter: h.mounter, SyncInterval: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	p := createPod(t, h.st, pod)
	a.pods[string(p.UID)] = p
	a.runtimeListed = true // as after the agent's first resync
	return &syncHarness{harness: h, clk: clk, a: a, w: newPodWorker(a, p), pod: p}
}

func (s *syncHarness) sync(t *testing.T) corev1.PodStatus {
	t.Helper()
	s.w.sync(context.Background())
	return getPod(t, s.st, s.pod.Name).Status
}

func TestCrashLoopBackOff(t *testing.T) {
	s := newSyncHarness(t, newPod("crash"))
	s.rt.SetBehavior("main", FakeBehavior{ExitAfter: time.Second, ExitCode: 2})
	st := s.sync(t)
	if st.Phase != corev1.PodRunning {
		t.Fatalf("phase = %s", st.Phase)
	}
	wantDelays := []time.Duration{10 * time.Second, 20 * time.Second, 40 * time.Second, 80 * time.Second, 160 * time.Second, 300 * time.Second, 300 * time.Second}
	for i, d := range wantDelays {
		s.clk.Step(time.Second) // the container exits
		st = s.sync(t)
		cs := st.ContainerStatuses[0]
		if cs.State.Waiting == nil || cs.State.Waiting.Reason != "CrashLoopBackOff" || !strings.Contains(cs.State.Waiting.Message, d.String()) {
			t.Fatalf("round %d: state = %+v, want CrashLoopBackOff %s", i, cs.State, d)
		}
		if cs.LastTerminationState.Terminated == nil || cs.LastTerminationState.Terminated.ExitCode != 2 {
			t.Fatalf("round %d: lastState = %+v", i, cs.LastTerminationState)
		}
		s.clk.Step(d - time.Millisecond)
		s.sync(t)
		if got := s.rt.CountCalls("StartContainer"); got != i {
			t.Fatalf("round %d: restarted before back-off ended (%d starts)", i, got)
		}
		s.clk.Step(time.Millisecond)
		st = s.sync(t)
		if got := s.rt.CountCalls("StartContainer"); got != i+1 {
			t.Fatalf("round %d: not restarted when back-off ended (%d starts)", i, got)
		}
		if cs := st.ContainerStatuses[0]; cs.RestartCount != int32(i+1) || cs.State.Running == nil {
			t.Fatalf("round %d: status %+v", i, cs)
		}
	}
	// A run of 10 minutes resets the back-off to 10s.
	s.rt.SetBehavior("main", FakeBehavior{ExitAfter: 11 * time.Minute, ExitCode: 1})
	st = s.sync(t)
	s.clk.Step(11 * time.Minute)
	st = s.sync(t)
	if m := st.ContainerStatuses[0].State.Waiting.Message; !strings.Contains(m, "back-off 10s") {
		t.Fatalf("back-off not reset: %q", m)
	}
}

func TestRestartPolicies(t *testing.T) {
	for _, tc := range []struct {
		policy corev1.RestartPolicy
		code   int32
		phase  corev1.PodPhase
	}{
		{corev1.RestartPolicyNever, 1, corev1.PodFailed},
		{corev1.RestartPolicyNever, 0, corev1.PodSucceeded},
		{corev1.RestartPolicyOnFailure, 0, corev1.PodSucceeded},
		{corev1.RestartPolicyOnFailure, 1, corev1.PodRunning},
		{corev1.RestartPolicyAlways, 0, corev1.PodRunning},
	} {
		t.Run(string(tc.policy)+strconv.Itoa(int(tc.code)), func(t *testing.T) {
			p := newPod("job")
			p.Spec.RestartPolicy = tc.policy
			s := newSyncHarness(t, p)
			s.rt.SetBehavior("main", FakeBehavior{ExitAfter: time.Second, ExitCode: tc.code})
			s.sync(t)
			s.clk.Step(2 * time.Second)
			st := s.sync(t)
			if st.Phase != tc.phase {
				t.Fatalf("phase = %s, want %s (%+v)", st.Phase, tc.phase, st.ContainerStatuses)
			}
			if tc.phase == corev1.PodSucceeded || tc.phase == corev1.PodFailed {
				if term := st.ContainerStatuses[0].State.Terminated; term == nil || term.ExitCode != tc.code {
					t.Fatalf("terminated = %+v", term)
				}
			}
		})
	}
}

func TestImagePullPolicies(t *testing.T) {
	never := newPod("never", corev1.Container{Name: "main", Image: "localhost/absent:1", ImagePullPolicy: corev1.PullNever})
	s := newSyncHarness(t, never)
	st := s.sync(t)
	if w := st.ContainerStatuses[0].State.Waiting; w == nil || w.Reason != "ErrImageNeverPull" || st.Phase != corev1.PodPending {
		t.Fatalf("status = %+v", st)
	}
	if s.rt.CountCalls("PullImage") != 0 {
		t.Fatal("pulled despite Never")
	}

	s = newSyncHarness(t, newPod("pull", corev1.Container{Name: "main", Image: "registry.example/absent:1"}))
	s.rt.SetPullError(errors.New("no registry"))
	st = s.sync(t)
	if w := st.ContainerStatuses[0].State.Waiting; w == nil || w.Reason != "ErrImagePull" {
		t.Fatalf("status = %+v", st)
	}
	s.clk.Step(10 * time.Second)
	st = s.sync(t)
	if w := st.ContainerStatuses[0].State.Waiting; w == nil || w.Reason != "ImagePullBackOff" {
		t.Fatalf("status = %+v", st)
	}
	s.rt.SetPullError(nil)
	s.clk.Step(20 * time.Second)
	if st = s.sync(t); st.Phase != corev1.PodRunning {
		t.Fatalf("not running after the image arrived: %+v", st)
	}
}

// TestLocalhostImagesAreNeverPulled: an image under localhost/ names this
// node's storage. Present, it runs without a pull even with policy Always
// (a :latest tag); missing, the pod fails at once with ErrImageNeverPull
// and what to do, no pull is tried, and it starts once the image is loaded.
func TestLocalhostImagesAreNeverPulled(t *testing.T) {
	s := newSyncHarness(t, newPod("here", corev1.Container{Name: "main", Image: testImage, ImagePullPolicy: corev1.PullAlways}))
	if st := s.sync(t); st.Phase != corev1.PodRunning {
		t.Fatalf("phase %s, want Running: %+v", st.Phase, st.ContainerStatuses)
	}
	if n := s.rt.CountCalls("PullImage"); n != 0 {
		t.Fatalf("%d pulls of a local image", n)
	}

	const missing = "localhost/missing:latest"
	s = newSyncHarness(t, newPod("absent", corev1.Container{Name: "main", Image: missing}))
	st := s.sync(t)
	w := st.ContainerStatuses[0].State.Waiting
	if w == nil || w.Reason != "ErrImageNeverPull" || st.Phase != corev1.PodPending {
		t.Fatalf("status = %+v", st.ContainerStatuses[0].State)
	}
	for _, want := range []string{missing, "not in this node's storage", "podman load", "flotilla lab load"} {
		if !strings.Contains(w.Message, want) {
			t.Errorf("message %q does not say %q", w.Message, want)
		}
	}
	if n := s.rt.CountCalls("PullImage"); n != 0 {
		t.Fatalf("%d pulls of a localhost/ image", n)
	}
	// Loaded: found again at resync pace (10s here), not after a long back-off.
	s.rt.AddImage(missing)
	s.clk.Step(10 * time.Second)
	if st = s.sync(t); st.Phase != corev1.PodRunning {
		t.Fatalf("not Running after the image was loaded: %+v", st.ContainerStatuses[0].State)
	}
	if n := s.rt.CountCalls("PullImage"); n != 0 {
		t.Fatalf("%d pulls of a localhost/ image", n)
	}
}

// healthServer answers probes on 127.0.0.1:port: 200 while healthy is
// true, 500 after.
func healthServer(t *testing.T) (healthy *atomic.Bool, port int) {
	healthy = new(atomic.Bool)
	healthy.Store(true)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !healthy.Load() {
			w.WriteHeader(http.StatusInternalServerError)
		}
	}))
	t.Cleanup(srv.Close)
	return healthy, srv.Listener.Addr().(*net.TCPAddr).Port
}

func TestProbes(t *testing.T) {
	healthy, port := healthServer(t)

	c := corev1.Container{Name: "main", Image: testImage,
		Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: int32(port)}},
		ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromString("http")}},
			InitialDelaySeconds: 5, PeriodSeconds: 2},
		LivenessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromInt32(int32(port))}},
			PeriodSeconds: 3, FailureThreshold: 2},
	}
	s := newSyncHarness(t, newPod("probed", c))
	s.net.IP = net.IPv4(127, 0, 0, 1)
	st := s.sync(t)
	if st.Phase != corev1.PodRunning || st.ContainerStatuses[0].Ready || st.Conditions[3].Status != corev1.ConditionFalse {
		t.Fatalf("ready before initialDelaySeconds: %+v", st)
	}
	s.clk.Step(5 * time.Second)
	if st = s.sync(t); !st.ContainerStatuses[0].Ready || st.Conditions[3].Status != corev1.ConditionTrue {
		t.Fatalf("not ready after a passing probe: %+v", st.ContainerStatuses[0])
	}
	healthy.Store(false)
	s.clk.Step(3 * time.Second)
	s.sync(t)
	if s.rt.CountCalls("RestartContainer") != 0 {
		t.Fatal("restarted after one failure (threshold 2)")
	}
	s.clk.Step(3 * time.Second)
	st = s.sync(t)
	if s.rt.CountCalls("RestartContainer") != 1 || st.ContainerStatuses[0].RestartCount != 1 {
		t.Fatalf("liveness failure did not restart: calls %v, status %+v", s.rt.Calls(), st.ContainerStatuses[0])
	}
}

func TestNoStatusWriteWhenUnchanged(t *testing.T) {
	s := newSyncHarness(t, newPod("quiet"))
	s.sync(t)
	before := s.st.podStatusWrites.Load()
	for i := 0; i < 5; i++ {
		s.clk.Step(10 * time.Second)
		s.sync(t)
	}
	if n := s.st.podStatusWrites.Load() - before; n != 0 {
		t.Fatalf("%d status writes for an unchanged pod", n)
	}
}

func TestPodLogs(t *testing.T) {
	h := newHarness(t)
	h.rt.SetBehavior("main", FakeBehavior{Logs: "hello\n"})
	createPod(t, h.st, newPod("talk"))
	a, _ := h.run(t)
	testkit.EventuallyTrue(t, "running", 0, func() bool { return phase(t, h.st, "talk") == corev1.PodRunning })
	var buf bytes.Buffer
	if err := a.PodLogs(context.Background(), "default", "talk", corev1.PodLogOptions{}, &buf); err != nil || buf.String() != "hello\n" {
		t.Fatalf("PodLogs = %q, %v", buf.String(), err)
	}
	if err := a.PodLogs(context.Background(), "default", "nope", corev1.PodLogOptions{}, &buf); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("PodLogs of unknown pod: %v", err)
	}
	if err := a.PodLogs(context.Background(), "default", "talk", corev1.PodLogOptions{Container: "x"}, &buf); !errors.Is(err, runtimeapi.ErrNotFound) {
		t.Fatalf("PodLogs of unknown container: %v", err)
	}
}

func TestExpand(t *testing.T) {
	env := map[string]string{"A": "1"}
	for in, want := range map[string]string{"$(A)": "1", "$(B)": "$(B)", "$$(A)": "$(A)", "x$": "x$", "$(A": "$(A", fmt.Sprint("a$b"): "a$b"} {
		if got := expand(in, env); got != want {
			t.Errorf("expand(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestNodeHeartbeatWritesRarely(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	st := store.MemoryFor(t)
	a, err := New(Config{NodeName: "n1", Store: st, Runtime: NewFakeRuntime(clk), Network: NewFakeNetwork(), Clock: clk, Logger: testkit.Logger(t),
		PodDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	rv := func() string {
		obj, err := st.Get(ctx, "nodes", "", "n1")
		if err != nil {
			t.Fatal(err)
		}
		return obj.GetResourceVersion()
	}
	if err := a.syncNode(ctx); err != nil {
		t.Fatal(err)
	}
	first := rv()
	for i := 0; i < 3; i++ {
		clk.Step(10 * time.Second)
		if err := a.syncNode(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if rv() != first {
		t.Fatal("node written before the heartbeat interval")
	}
	clk.Step(10 * time.Second)
	if err := a.syncNode(ctx); err != nil {
		t.Fatal(err)
	}
	if rv() == first {
		t.Fatal("no heartbeat after 40s")
	}
}

// TestNodeLabelsAddedToARegisteredNode: a Node created without labels (by
// `flotilla agent`'s registration) gets kubernetes.io/hostname & co., which
// local volumes' node affinity matches on; then it is left alone.
func TestNodeLabelsAddedToARegisteredNode(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	st := store.MemoryFor(t)
	ctx := context.Background()
	if _, err := st.Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1", Labels: map[string]string{"zone": "a"}}}); err != nil {
		t.Fatal(err)
	}
	a, err := New(Config{NodeName: "n1", Store: st, Runtime: NewFakeRuntime(clk), Network: NewFakeNetwork(), Clock: clk, Logger: testkit.Logger(t),
		PodDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.syncNode(ctx); err != nil {
		t.Fatal(err)
	}
	obj, _ := st.Get(ctx, "nodes", "", "n1")
	labels := obj.GetLabels()
	if labels[corev1.LabelHostname] != "n1" || labels[corev1.LabelOSStable] != "linux" || labels["zone"] != "a" {
		t.Fatalf("labels = %v", labels)
	}
	rv := obj.GetResourceVersion()
	if err := a.syncNode(ctx); err != nil {
		t.Fatal(err)
	}
	if obj, _ := st.Get(ctx, "nodes", "", "n1"); obj.GetResourceVersion() != rv {
		t.Error("labels written again")
	}
}
