package node

import (
	"context"
	"fmt"
	"io"
	"sort"
	"sync"
	"time"

	"k8s.io/utils/clock"

	"github.com/flotilla-dev/flotilla/node/runtimeapi"
)

// FakeBehavior scripts what a fake container does once started.
type FakeBehavior struct {
	// StartErr makes every start of the container fail with this error.
	StartErr error
	// ExitAfter makes the container exit that long after each start; 0 runs
	// it until stopped.
	ExitAfter time.Duration
	// ExitCode is the code of those exits.
	ExitCode int32
	// Logs is what ContainerLogs returns.
	Logs string
}

// FakeRuntime is an in-memory Runtime for tests of the agent and of anything
// that drives it. Time comes from Clock, so exits are deterministic with a
// fake clock. Behaviors are looked up by container name. It records every
// call (see Calls). Safe for concurrent use, setters included. It can also
// stream events, answer pings, go down, hang and lose pods
// (fakeruntime_events.go).
type FakeRuntime struct {
	Clock clock.PassiveClock

	mu        sync.Mutex
	behaviors map[string]FakeBehavior
	images    map[string]bool
	pullErr   error
	pods      map[string]*fakePod
	calls     []string
	nextID    int

	// optional abilities (fakeruntime_events.go)
	events  bool                           // WatchEvents streams (EnableEvents)
	subs    []chan runtimeapi.RuntimeEvent // live WatchEvents streams
	downErr error                          // every call fails with it (SetDown)
	downCh  chan struct{}                  // closed when the runtime goes down: streams end
	hang    bool                           // every call blocks until its ctx ends (SetHang)
	users   map[string]string              // images' users (SetImageUser); root if unset

	usage map[[2]string]fakeUsage // pods' usage (SetUsage, fakeruntime_stats.go)
}

type fakePod struct {
	sum        runtimeapi.PodSummary
	spec       runtimeapi.PodSandbox
	containers []*fakeContainer
}

type fakeContainer struct {
	uid    string // the pod's
	spec   runtimeapi.ContainerSpec
	status runtimeapi.ContainerStatus
}

var _ runtimeapi.Runtime = (*FakeRuntime)(nil)

// NewFakeRuntime returns an empty fake runtime on the given clock (the real
// one if nil).
func NewFakeRuntime(clk clock.PassiveClock) *FakeRuntime {
	if clk == nil {
		clk = clock.RealClock{}
	}
	return &FakeRuntime{
		Clock:     clk,
		behaviors: map[string]FakeBehavior{},
		images:    map[string]bool{},
		pods:      map[string]*fakePod{},
		downCh:    make(chan struct{}),
	}
}

// SetBehavior scripts the container of that name (in every pod).
func (f *FakeRuntime) SetBehavior(container string, b FakeBehavior) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.behaviors[container] = b
}

// AddImage marks an image as present locally.
func (f *FakeRuntime) AddImage(image string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.images[image] = true
}

// SetPullError makes PullImage fail (nil: pulls succeed).
func (f *FakeRuntime) SetPullError(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.pullErr = err
}

// Calls returns a copy of the calls made so far, as "Method arg".
func (f *FakeRuntime) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

// CountCalls counts the calls whose method is name.
func (f *FakeRuntime) CountCalls(name string) int {
	n := 0
	for _, c := range f.Calls() {
		if c == name || len(c) > len(name) && c[:len(name)+1] == name+" " {
			n++
		}
	}
	return n
}

// ExitContainer makes a running container exit now with code (a crash).
func (f *FakeRuntime) ExitContainer(containerID string, code int32) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.findLocked(containerID)
	if c == nil {
		return fmt.Errorf("fake exit %s: %w", containerID, runtimeapi.ErrNotFound)
	}
	f.refreshLocked(c)
	if c.status.State == runtimeapi.ContainerRunning {
		c.status.State = runtimeapi.ContainerExited
		c.status.ExitCode = code
		c.status.FinishedAt = f.Clock.Now()
		f.emitLocked("died", c)
	}
	return nil
}

func (f *FakeRuntime) record(format string, args ...any) {
	f.calls = append(f.calls, fmt.Sprintf(format, args...))
}

func (f *FakeRuntime) findLocked(containerID string) *fakeContainer {
	for _, p := range f.pods {
		for _, c := range p.containers {
			if c.status.ID == containerID {
				return c
			}
		}
	}
	return nil
}

// refreshLocked applies ExitAfter: a container past its run time has exited.
func (f *FakeRuntime) refreshLocked(c *fakeContainer) {
	b := f.behaviors[c.spec.Name]
	if c.status.State != runtimeapi.ContainerRunning || b.ExitAfter <= 0 {
		return
	}
	end := c.status.StartedAt.Add(b.ExitAfter)
	if !f.Clock.Now().Before(end) {
		c.status.State = runtimeapi.ContainerExited
		c.status.ExitCode = b.ExitCode
		c.status.FinishedAt = end
	}
}

func (f *FakeRuntime) startLocked(c *fakeContainer) error {
	if err := f.behaviors[c.spec.Name].StartErr; err != nil {
		c.status.Error = err.Error()
		return fmt.Errorf("fake start %s: %w", c.spec.Name, err)
	}
	c.status.State = runtimeapi.ContainerRunning
	c.status.StartedAt = f.Clock.Now()
	c.status.FinishedAt = time.Time{}
	c.status.ExitCode = 0
	c.status.Error = ""
	f.emitLocked("start", c)
	return nil
}

// RunPod implements Runtime.
func (f *FakeRuntime) RunPod(ctx context.Context, spec runtimeapi.PodSandbox) (string, error) {
	if err := f.available(ctx); err != nil {
		return "", err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("RunPod %s/%s", spec.Namespace, spec.Name)
	spec.Containers = append([]runtimeapi.ContainerSpec(nil), spec.Containers...)
	f.nextID++
	p := &fakePod{
		sum:  runtimeapi.PodSummary{ID: fmt.Sprintf("pod%d", f.nextID), UID: spec.UID, Namespace: spec.Namespace, Name: spec.Name},
		spec: spec,
	}
	for _, cs := range spec.Containers {
		f.nextID++
		c := &fakeContainer{uid: spec.UID, spec: cs, status: runtimeapi.ContainerStatus{
			Name: cs.Name, ID: fmt.Sprintf("ctr%d", f.nextID), Image: cs.Image,
			ImageID: "sha256:" + cs.Image, State: runtimeapi.ContainerCreated,
		}}
		p.containers = append(p.containers, c)
	}
	for _, c := range p.containers {
		if err := f.startLocked(c); err != nil {
			return "", err // like Podman: the partial pod is removed
		}
	}
	f.pods[p.sum.ID] = p
	return p.sum.ID, nil
}

// InjectPod adds a pod as if an earlier agent had run it (for adoption and
// orphan tests); its containers are running.
func (f *FakeRuntime) InjectPod(spec runtimeapi.PodSandbox) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	spec.Containers = append([]runtimeapi.ContainerSpec(nil), spec.Containers...)
	f.nextID++
	p := &fakePod{sum: runtimeapi.PodSummary{ID: fmt.Sprintf("pod%d", f.nextID), UID: spec.UID, Namespace: spec.Namespace, Name: spec.Name}, spec: spec}
	for _, cs := range spec.Containers {
		f.nextID++
		p.containers = append(p.containers, &fakeContainer{uid: spec.UID, spec: cs, status: runtimeapi.ContainerStatus{
			Name: cs.Name, ID: fmt.Sprintf("ctr%d", f.nextID), Image: cs.Image, ImageID: "sha256:" + cs.Image,
			State: runtimeapi.ContainerRunning, StartedAt: f.Clock.Now(),
		}})
	}
	f.pods[p.sum.ID] = p
	return p.sum.ID
}

// CreateContainer implements Runtime.
func (f *FakeRuntime) CreateContainer(ctx context.Context, podID string, sb runtimeapi.PodSandbox, cs runtimeapi.ContainerSpec) (string, error) {
	if err := f.available(ctx); err != nil {
		return "", err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("CreateContainer %s", cs.Name)
	p, ok := f.pods[podID]
	if !ok {
		return "", fmt.Errorf("fake create %s: pod %s: %w", cs.Name, podID, runtimeapi.ErrNotFound)
	}
	for _, c := range p.containers {
		if c.spec.Name == cs.Name {
			return "", fmt.Errorf("fake create %s: the pod has a container of that name", cs.Name)
		}
	}
	f.nextID++
	c := &fakeContainer{uid: p.sum.UID, spec: cs, status: runtimeapi.ContainerStatus{
		Name: cs.Name, ID: fmt.Sprintf("ctr%d", f.nextID), Image: cs.Image,
		ImageID: "sha256:" + cs.Image, State: runtimeapi.ContainerCreated,
	}}
	p.containers = append(p.containers, c)
	p.spec.Containers = append(p.spec.Containers, cs)
	return c.status.ID, nil
}

// Spec returns the sandbox a pod was run with (to check env, limits,
// mounts…); its Containers include those added by CreateContainer, in
// creation order.
func (f *FakeRuntime) Spec(podID string) (runtimeapi.PodSandbox, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p, ok := f.pods[podID]
	if !ok {
		return runtimeapi.PodSandbox{}, false
	}
	sb := p.spec
	sb.Containers = append([]runtimeapi.ContainerSpec(nil), p.spec.Containers...)
	return sb, true
}

// ListPods implements Runtime.
func (f *FakeRuntime) ListPods(ctx context.Context) ([]runtimeapi.PodSummary, error) {
	if err := f.available(ctx); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("ListPods")
	out := make([]runtimeapi.PodSummary, 0, len(f.pods))
	for _, p := range f.pods {
		out = append(out, p.sum)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// PodStatus implements Runtime.
func (f *FakeRuntime) PodStatus(ctx context.Context, podID string) (runtimeapi.PodStatus, error) {
	if err := f.available(ctx); err != nil {
		return runtimeapi.PodStatus{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("PodStatus %s", podID)
	p, ok := f.pods[podID]
	if !ok {
		return runtimeapi.PodStatus{}, fmt.Errorf("fake pod %s: %w", podID, runtimeapi.ErrNotFound)
	}
	st := runtimeapi.PodStatus{PodSummary: p.sum}
	for _, c := range p.containers {
		f.refreshLocked(c)
		st.Containers = append(st.Containers, c.status)
	}
	return st, nil
}

// StartContainer implements Runtime.
func (f *FakeRuntime) StartContainer(ctx context.Context, containerID string) error {
	if err := f.available(ctx); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("StartContainer %s", containerID)
	c := f.findLocked(containerID)
	if c == nil {
		return fmt.Errorf("fake start %s: %w", containerID, runtimeapi.ErrNotFound)
	}
	f.refreshLocked(c)
	if c.status.State == runtimeapi.ContainerRunning {
		return nil
	}
	return f.startLocked(c)
}

// RestartContainer implements Runtime.
func (f *FakeRuntime) RestartContainer(ctx context.Context, containerID string, grace time.Duration) error {
	if err := f.available(ctx); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("RestartContainer %s", containerID)
	c := f.findLocked(containerID)
	if c == nil {
		return fmt.Errorf("fake restart %s: %w", containerID, runtimeapi.ErrNotFound)
	}
	return f.startLocked(c)
}

// StopPod implements Runtime.
func (f *FakeRuntime) StopPod(ctx context.Context, podID string, grace time.Duration) error {
	if err := f.available(ctx); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("StopPod %s %s", podID, grace)
	p, ok := f.pods[podID]
	if !ok {
		return fmt.Errorf("fake stop %s: %w", podID, runtimeapi.ErrNotFound)
	}
	for _, c := range p.containers {
		f.refreshLocked(c)
		if c.status.State == runtimeapi.ContainerRunning {
			c.status.State = runtimeapi.ContainerExited
			c.status.ExitCode = 143
			c.status.FinishedAt = f.Clock.Now()
			f.emitLocked("died", c)
		}
	}
	return nil
}

// RemovePod implements Runtime.
func (f *FakeRuntime) RemovePod(ctx context.Context, podID string) error {
	if err := f.available(ctx); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("RemovePod %s", podID)
	if p, ok := f.pods[podID]; ok {
		for _, c := range p.containers {
			f.emitLocked("remove", c)
		}
	}
	delete(f.pods, podID)
	return nil
}

// ContainerLogs implements Runtime.
func (f *FakeRuntime) ContainerLogs(ctx context.Context, containerID string, req runtimeapi.LogRequest, w io.Writer) error {
	if err := f.available(ctx); err != nil {
		return err
	}
	f.mu.Lock()
	c := f.findLocked(containerID)
	var logs string
	if c != nil {
		logs = f.behaviors[c.spec.Name].Logs
	}
	f.mu.Unlock()
	if c == nil {
		return fmt.Errorf("fake logs %s: %w", containerID, runtimeapi.ErrNotFound)
	}
	_, err := io.WriteString(w, logs)
	return err
}

// ImageExists implements Runtime.
func (f *FakeRuntime) ImageExists(ctx context.Context, image string) (bool, error) {
	if err := f.available(ctx); err != nil {
		return false, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.images[image], nil
}

// PullImage implements Runtime.
func (f *FakeRuntime) PullImage(ctx context.Context, image string) error {
	if err := f.available(ctx); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("PullImage %s", image)
	if f.pullErr != nil {
		return fmt.Errorf("fake pull %s: %w", image, f.pullErr)
	}
	f.images[image] = true
	return nil
}
