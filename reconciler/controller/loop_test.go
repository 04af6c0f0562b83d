package controller

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/clock"

	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/internal/testkit"
	"github.com/flotilla-dev/flotilla/reconciler/cache"
	"github.com/flotilla-dev/flotilla/schema"
)

// scripted is a controller whose reconcile of each key is given by a
// function of the key and the number of the call.
type scripted struct {
	mu      sync.Mutex
	calls   map[string]int
	active  map[string]bool
	overlap bool
	step    func(key string, n int) (Result, error)
}

func newScripted(step func(key string, n int) (Result, error)) *scripted {
	return &scripted{calls: map[string]int{}, active: map[string]bool{}, step: step}
}

func (s *scripted) count(key string) int { s.mu.Lock(); defer s.mu.Unlock(); return s.calls[key] }

func (s *scripted) Reconcile(_ context.Context, key string) (Result, error) {
	s.mu.Lock()
	if s.active[key] {
		s.overlap = true
	}
	s.active[key] = true
	s.calls[key]++
	n := s.calls[key]
	s.mu.Unlock()
	runtime.Gosched() // give another worker the chance to take the same key
	s.mu.Lock()
	s.active[key] = false
	s.mu.Unlock()
	return s.step(key, n)
}

// run runs a loop over ctrl until the test ends.
func run(t *testing.T, ctrl Controller, q *WorkQueue, subject SubjectFunc, status *StatusWriter) *Loop {
	t.Helper()
	l := NewLoop(LoopConfig{Name: "test", Controller: ctrl, Queue: q, Workers: 4, Subject: subject, Status: status, Log: testkit.Logger(t)})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { l.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return l
}

func TestLoopRetriesThenForgets(t *testing.T) {
	s := newScripted(func(key string, n int) (Result, error) {
		switch {
		case key == "sentinel":
			return Done(), nil
		case n <= 3:
			return Done(), errors.New("transient")
		case n == 4:
			return Requeue(20 * time.Millisecond), nil
		}
		return Done(), nil
	})
	q := NewQueue("test", time.Second)
	l := run(t, s, q, nil, nil)
	for range 20 {
		q.Add("a")
	}
	q.Add("b")
	// 3 failures, 1 success asking for a requeue, 1 more success, then quiet.
	testkit.EventuallyTrue(t, "five reconciles of a and b", 0, func() bool { return s.count("a") >= 5 && s.count("b") >= 5 })
	q.Add("sentinel")
	testkit.EventuallyTrue(t, "the sentinel reconciled", 0, func() bool { return s.count("sentinel") == 1 })
	if a, b := s.count("a"), s.count("b"); a != 5 || b != 5 {
		t.Errorf("calls a=%d b=%d, want 5 each", a, b)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.overlap {
		t.Error("one key reconciled by two workers at once")
	}
	if q.q.NumRequeues("a") != 0 {
		t.Error("back-off not forgotten after success")
	}
	if l.Reconciles() < 11 {
		t.Errorf("Reconciles() = %d, want at least 11", l.Reconciles())
	}
}

// env is a real (in-memory Badger) store with a cache and a status writer.
type env struct {
	st     store.Interface
	ca     *cache.Cache
	status *StatusWriter
}

func newEnv(t *testing.T, resources ...string) *env {
	t.Helper()
	st := store.MemoryFor(t)
	ca := cache.New(st, testkit.Logger(t), 0)
	for _, r := range resources {
		ca.Informer(r)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ca.Start(ctx)
	t.Cleanup(func() { cancel(); ca.Wait() })
	return &env{st: st, ca: ca, status: NewStatusWriter(st, ca, clock.RealClock{})}
}

func testDeployment(name string) *appsv1.Deployment {
	d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"}}
	d.APIVersion, d.Kind = "apps/v1", "Deployment"
	return d
}

func (e *env) create(t *testing.T, obj schema.Object) {
	t.Helper()
	if _, err := e.st.Create(context.Background(), obj); err != nil {
		t.Fatal(err)
	}
}

// stall returns the Stalled condition of deployment name, as stored.
func (e *env) stall(t *testing.T, name string) (Stall, bool) {
	t.Helper()
	o, err := e.st.Get(context.Background(), "deployments", "default", name)
	if err != nil {
		t.Fatal(err)
	}
	return StalledCondition(o)
}

// TestLoopRecoversPanicPerKey: a reconcile that panics on one object stalls
// that object (ReasonReconcilePanic, the panic as message), is retried
// with back-off, and never stops the other keys; once it stops panicking
// the condition goes away.
func TestLoopRecoversPanicPerKey(t *testing.T) {
	e := newEnv(t, "deployments")
	e.create(t, testDeployment("bad"))
	e.create(t, testDeployment("good"))
	var fixed atomic.Bool
	s := newScripted(func(key string, _ int) (Result, error) {
		if key == "default/bad" && !fixed.Load() {
			var sel []string
			_ = sel[3] // index out of range, as replicaset.Plan once did
		}
		return Done(), nil
	})
	q := NewQueue("test", 50*time.Millisecond)
	run(t, s, q, KeysOf("deployments"), e.status)
	q.Add("default/bad")
	q.Add("default/good")
	testkit.Eventually(t, "bad stalled with the panic", 0, func() error {
		c, ok := e.stall(t, "bad")
		if !ok || c.Reason != ReasonReconcilePanic || !strings.Contains(c.Message, "index out of range") {
			return fmt.Errorf("stalled=%v %+v", ok, c)
		}
		return nil
	})
	testkit.EventuallyTrue(t, "bad retried with back-off", 0, func() bool { return s.count("default/bad") >= 3 })
	if s.count("default/good") != 1 {
		t.Errorf("good reconciled %d times, want 1", s.count("default/good"))
	}
	if _, ok := e.stall(t, "good"); ok {
		t.Error("good carries a Stalled condition")
	}
	fixed.Store(true)
	testkit.EventuallyTrue(t, "the Stalled condition cleared", 0, func() bool { _, ok := e.stall(t, "bad"); return !ok })
}

// TestLoopStalledOutcomes: Stalled and a write the store refused
// (store.ErrInvalid) land in the Stalled condition, which a later success
// clears; a stalled key is not retried on its own.
func TestLoopStalledOutcomes(t *testing.T) {
	e := newEnv(t, "deployments")
	e.create(t, testDeployment("web"))
	var mode atomic.Int32 // 0 stalled, 1 refused, 2 done
	s := newScripted(func(string, int) (Result, error) {
		switch mode.Load() {
		case 0:
			return Stalled(ReasonInvalidSpec, "spec.replicas is -1, want 0 or more"), nil
		case 1:
			return Done(), fmt.Errorf("create pod web-abcde: %w", store.ErrInvalid)
		}
		return Done(), nil
	})
	q := NewQueue("test", 50*time.Millisecond)
	run(t, s, q, KeysOf("deployments"), e.status)
	want := func(reason string) func() error {
		return func() error {
			c, ok := e.stall(t, "web")
			if reason == "" && ok || reason != "" && (!ok || c.Reason != reason) {
				return fmt.Errorf("stalled=%v %+v, want reason %q", ok, c, reason)
			}
			return nil
		}
	}
	q.Add("default/web")
	testkit.Eventually(t, "InvalidSpec", 0, want(ReasonInvalidSpec))
	// The condition write is an event of its own: the key comes back once
	// (the test's queue has no handler, so add it by hand) and nothing is
	// written again.
	rv := func() string {
		o, _ := e.st.Get(context.Background(), "deployments", "default", "web")
		return o.GetResourceVersion()
	}
	before, calls := rv(), s.count("default/web")
	q.Add("default/web")
	testkit.EventuallyTrue(t, "a second reconcile", 0, func() bool { return s.count("default/web") > calls })
	q.Add("sentinel")
	testkit.EventuallyTrue(t, "the sentinel", 0, func() bool { return s.count("sentinel") == 1 })
	if after := rv(); after != before {
		t.Errorf("an unchanged stall was written again (%s → %s)", before, after)
	}
	mode.Store(1)
	q.Add("default/web")
	testkit.Eventually(t, "WriteRefused", 0, want(ReasonWriteRefused))
	mode.Store(2)
	q.Add("default/web")
	testkit.Eventually(t, "cleared", 0, want(""))
}

func TestSlowStart(t *testing.T) {
	var calls atomic.Int32
	made, err := SlowStart(10, func(i int) error {
		calls.Add(1)
		if i == 5 {
			return errors.New("refused")
		}
		return nil
	})
	// Batches {0} {1,2} {3,4,5,6}: the third fails, nothing after it.
	if made != 6 || err == nil || calls.Load() != 7 {
		t.Errorf("made %d, err %v, calls %d; want 6, an error, 7", made, err, calls.Load())
	}
	made, err = SlowStart(500, func(int) error { return nil })
	if made != 500 || err != nil {
		t.Errorf("made %d err %v, want 500 nil", made, err)
	}
	_, err = SlowStart(3, func(i int) error {
		if i == 2 {
			panic("boom")
		}
		return nil
	})
	var pe *PanicError
	if !errors.As(err, &pe) || pe.Value != "boom" {
		t.Errorf("a panic in a batch: err %v, want a *PanicError", err)
	}
}

// TestSetStalledEveryKind: every kind with conditions takes the Stalled
// condition, keeps it unchanged on the same stall, and loses it on clear;
// kinds without conditions are left alone.
func TestSetStalledEveryKind(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	long := strings.Repeat("é", MaxMessageBytes)
	for _, obj := range []schema.Object{
		&appsv1.Deployment{}, &appsv1.ReplicaSet{}, &appsv1.StatefulSet{}, &corev1.Pod{}, &corev1.Node{},
		&corev1.Service{}, &corev1.PersistentVolumeClaim{},
	} {
		name := fmt.Sprintf("%T", obj)
		if !HasConditions(obj) {
			t.Errorf("%s: HasConditions false", name)
		}
		if !SetStalled(obj, &Stall{Reason: ReasonInvalidSpec, Message: long}, now) {
			t.Errorf("%s: set changed nothing", name)
		}
		c, ok := StalledCondition(obj)
		if !ok || c.Reason != ReasonInvalidSpec || len(c.Message) > MaxMessageBytes || !strings.HasSuffix(c.Message, "…") {
			t.Errorf("%s: condition %v %q", name, ok, c.Reason)
		}
		if SetStalled(obj, &Stall{Reason: ReasonInvalidSpec, Message: long}, now.Add(time.Hour)) {
			t.Errorf("%s: the same stall changed the object", name)
		}
		if !SetStalled(obj, &Stall{Reason: ReasonReconcilePanic, Message: "x"}, now) {
			t.Errorf("%s: a new reason changed nothing", name)
		}
		if !SetStalled(obj, nil, now) || SetStalled(obj, nil, now) {
			t.Errorf("%s: clear did not change it exactly once", name)
		}
		if _, ok := StalledCondition(obj); ok {
			t.Errorf("%s: still stalled after clear", name)
		}
	}
	pv := &corev1.PersistentVolume{}
	if HasConditions(pv) || SetStalled(pv, &Stall{Reason: "x"}, now) {
		t.Error("a PersistentVolume (no conditions) took a Stalled condition")
	}
}
