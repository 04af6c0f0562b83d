package node

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/internal/testkit"
	"github.com/flotilla-dev/flotilla/node/runtimeapi"
	"github.com/flotilla-dev/flotilla/schema"
)

var errServerDown = errors.New("dial tcp 192.0.2.1:6443: connect: connection refused")

// TestRunsLastKnownPodsWithoutTheStore: an agent that starts while the
// store does not answer runs the pods the node last knew of (their runtime
// pods exited, as a killed node leaves them), removes nothing, and once the
// store answers follows it: a pod deleted meanwhile goes, no pod is created
// twice.
func TestRunsLastKnownPodsWithoutTheStore(t *testing.T) {
	h := newHarness(t)
	kept := createPod(t, h.st, newPod("kept"))
	gone := createPod(t, h.st, newPod("gone"))
	_, stop := h.run(t)
	for _, name := range []string{"kept", "gone"} {
		testkit.EventuallyTrue(t, name+" Running", 0, func() bool { return phase(t, h.st, name) == corev1.PodRunning })
	}
	stop()

	// The node dies: its containers exit; every server is down.
	ctx := context.Background()
	pods, err := h.rt.ListPods(ctx)
	if err != nil || len(pods) != 2 {
		t.Fatalf("runtime pods %v, %v", pods, err)
	}
	for _, p := range pods {
		st, err := h.rt.PodStatus(ctx, p.ID)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range st.Containers {
			if err := h.rt.ExitContainer(c.ID, 137); err != nil {
				t.Fatal(err)
			}
		}
	}
	down := &failingStore{Interface: h.st}
	down.down.Store(true)
	h2 := *h
	h2.st = &countingStore{Interface: down}
	runs := h.rt.CountCalls("RunPod")
	h2.run(t)
	testkit.Eventually(t, "both pods' containers running again without the store", 0, func() error {
		return runningContainers(ctx, h.rt, 2)
	})
	if n := h.rt.CountCalls("RunPod"); n != runs {
		t.Fatalf("RunPod called %d more times: the runtime's pods must be adopted", n-runs)
	}

	// Meanwhile one of them was deleted; the store comes back.
	if _, err := h.st.Delete(ctx, "pods", "default", gone.Name, store.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	down.down.Store(false)
	testkit.Eventually(t, "the deleted pod's runtime pod removed", 0, func() error {
		pods, err := h.rt.ListPods(ctx)
		if err != nil {
			return err
		}
		if len(pods) != 1 || pods[0].UID != string(kept.UID) {
			return fmt.Errorf("runtime pods %+v, want only kept's", pods)
		}
		return nil
	})
	testkit.EventuallyTrue(t, "kept Running in the store", 0, func() bool { return phase(t, h.st, "kept") == corev1.PodRunning })
	if n := h.rt.CountCalls("RunPod"); n != runs {
		t.Fatalf("RunPod called %d more times after the store came back", n-runs)
	}
}

// failingStore fails every call while down is set.
type failingStore struct {
	store.Interface
	down atomic.Bool
}

func (f *failingStore) List(ctx context.Context, resource string, opts store.ListOptions) ([]schema.Object, int64, error) {
	if f.down.Load() {
		return nil, 0, errServerDown
	}
	return f.Interface.List(ctx, resource, opts)
}

func (f *failingStore) Get(ctx context.Context, resource, ns, name string) (schema.Object, error) {
	if f.down.Load() {
		return nil, errServerDown
	}
	return f.Interface.Get(ctx, resource, ns, name)
}

func (f *failingStore) Watch(ctx context.Context, resource string, opts store.ListOptions, rev int64) (<-chan store.Event, error) {
	if f.down.Load() {
		return nil, errServerDown
	}
	return f.Interface.Watch(ctx, resource, opts, rev)
}

func (f *failingStore) UpdateStatus(ctx context.Context, obj schema.Object) (schema.Object, error) {
	if f.down.Load() {
		return nil, errServerDown
	}
	return f.Interface.UpdateStatus(ctx, obj)
}

func (f *failingStore) Create(ctx context.Context, obj schema.Object) (schema.Object, error) {
	if f.down.Load() {
		return nil, errServerDown
	}
	return f.Interface.Create(ctx, obj)
}

func (f *failingStore) Update(ctx context.Context, obj schema.Object) (schema.Object, error) {
	if f.down.Load() {
		return nil, errServerDown
	}
	return f.Interface.Update(ctx, obj)
}

// runningContainers checks that the runtime runs n containers.
func runningContainers(ctx context.Context, rt *FakeRuntime, n int) error {
	pods, err := rt.ListPods(ctx)
	if err != nil {
		return err
	}
	running := 0
	for _, p := range pods {
		st, err := rt.PodStatus(ctx, p.ID)
		if err != nil {
			return err
		}
		for _, c := range st.Containers {
			if c.State == runtimeapi.ContainerRunning {
				running++
			}
		}
	}
	if running != n {
		return fmt.Errorf("%d containers running, want %d", running, n)
	}
	return nil
}

// TestStartFromLastKnownBeforeTheList: an agent told at start that no
// server answers (StartFromLastKnown) runs the node's last known pods while
// its first list of the store still hangs, as a list does against a server
// that accepts connections but cannot answer (one without a quorum).
func TestStartFromLastKnownBeforeTheList(t *testing.T) {
	h := newHarness(t)
	createPod(t, h.st, newPod("kept"))
	_, stop := h.run(t)
	testkit.EventuallyTrue(t, "kept Running", 0, func() bool { return phase(t, h.st, "kept") == corev1.PodRunning })
	stop()
	ctx := context.Background()
	pods, err := h.rt.ListPods(ctx)
	if err != nil || len(pods) != 1 {
		t.Fatalf("runtime pods %v, %v", pods, err)
	}
	st, err := h.rt.PodStatus(ctx, pods[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range st.Containers {
		if err := h.rt.ExitContainer(c.ID, 137); err != nil {
			t.Fatal(err)
		}
	}

	hung := &hangingStore{Interface: h.st, release: make(chan struct{})}
	defer close(hung.release)
	a, err := New(Config{NodeName: "n1", Store: hung, Runtime: h.rt, Network: h.net, PodDir: h.podDir, Mounter: h.mounter,
		SyncInterval: 50 * time.Millisecond, Logger: testkit.Logger(t), StartFromLastKnown: true})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { _ = a.Run(runCtx); close(done) }()
	defer func() { cancel(); <-done }()
	testkit.Eventually(t, "the pod's container running again while the list hangs", 0, func() error {
		return runningContainers(ctx, h.rt, 1)
	})
	if hung.lists.Load() == 0 {
		t.Fatal("the agent never listed the store: the test does not show the list hanging")
	}
}

// hangingStore holds every List, Get and Watch until release is closed or
// the call's context ends.
type hangingStore struct {
	store.Interface
	release chan struct{}
	lists   atomic.Int64
}

func (h *hangingStore) hang(ctx context.Context) error {
	select {
	case <-h.release:
		return errServerDown
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (h *hangingStore) List(ctx context.Context, resource string, opts store.ListOptions) ([]schema.Object, int64, error) {
	h.lists.Add(1)
	return nil, 0, h.hang(ctx)
}

func (h *hangingStore) Get(ctx context.Context, resource, ns, name string) (schema.Object, error) {
	return nil, h.hang(ctx)
}

func (h *hangingStore) Watch(ctx context.Context, resource string, opts store.ListOptions, rev int64) (<-chan store.Event, error) {
	return nil, h.hang(ctx)
}

func (h *hangingStore) UpdateStatus(ctx context.Context, obj schema.Object) (schema.Object, error) {
	return nil, h.hang(ctx)
}
