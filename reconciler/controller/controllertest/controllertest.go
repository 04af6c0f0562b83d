// Package controllertest runs one controller as the manager does — a watch
// cache, its own queue, a Loop with workers, the status writer — for the
// tests of the controller packages, which cannot import the manager (it
// imports them). Only tests import it.
package controllertest

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"k8s.io/utils/clock"

	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/internal/testkit"
	"github.com/flotilla-dev/flotilla/reconciler/cache"
	"github.com/flotilla-dev/flotilla/reconciler/controller"
)

// MaxBackoff is the back-off cap of the harness's queue: short, so that a
// retried key comes back within a test.
const MaxBackoff = 100 * time.Millisecond

// Harness is one controller's surroundings. Make it with New, build the
// controller from Deps, then Run it.
type Harness struct {
	Store  store.Interface
	Cache  *cache.Cache
	Queue  *controller.WorkQueue
	Status *controller.StatusWriter
	Log    *slog.Logger
	Clock  clock.Clock
	name   string
	loop   *controller.Loop
}

// Options tune a Harness. Zero values mean the defaults.
type Options struct {
	// Clock is the controller's clock. Default: the wall clock.
	Clock clock.Clock
	// Resync is the cache's resync period. Default 0: none.
	Resync time.Duration
}

// New returns the surroundings of the controller called name over st.
func New(tb testing.TB, name string, st store.Interface, o Options) *Harness {
	clk := o.Clock
	if clk == nil {
		clk = clock.RealClock{}
	}
	log := testkit.Logger(tb).With("controller", name)
	ca := cache.New(st, log, o.Resync)
	return &Harness{Store: st, Cache: ca, Queue: controller.NewQueue(name, MaxBackoff), Status: controller.NewStatusWriter(st, ca, clk),
		Log: log, Clock: clk, name: name}
}

// Deps is what the controller is built from.
func (h *Harness) Deps() controller.Deps {
	return controller.Deps{Name: h.name, Store: h.Store, Cache: h.Cache, Queue: h.Queue, Clock: h.Clock, Log: h.Log, Status: h.Status}
}

// Run starts the cache, waits for its first list, and runs c with two
// workers until the returned stop is called or the test ends. subject may
// be nil.
func (h *Harness) Run(tb testing.TB, c controller.Controller, subject controller.SubjectFunc) (stop func()) {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	h.Cache.Start(ctx)
	if !h.Cache.WaitForSync(ctx) {
		tb.Fatal("the cache did not sync")
	}
	h.loop = controller.NewLoop(controller.LoopConfig{Name: h.name, Controller: c, Queue: h.Queue, Workers: 2,
		Subject: subject, Status: h.Status, Log: h.Log})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		h.loop.Run(ctx)
	}()
	if s, ok := c.(controller.Starter); ok {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.Start(ctx)
		}()
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			wg.Wait()
			h.Cache.Wait()
		})
	}
	tb.Cleanup(stop)
	return stop
}

// Reconciles is how many reconciles the loop has finished.
func (h *Harness) Reconciles() uint64 {
	if h.loop == nil {
		return 0
	}
	return h.loop.Reconciles()
}

// Quiesce waits until the loop is idle: no key queued, none being
// reconciled (keys waiting out a delay do not count). Tests call it before
// asserting that nothing more is written.
func (h *Harness) Quiesce(tb testing.TB) {
	tb.Helper()
	testkit.EventuallyTrue(tb, h.name+" idle", 0, func() bool { return h.loop != nil && h.loop.Idle() })
}

// WaitReconciles waits until the loop has finished n more reconciles than
// it had at the call (each periodic resync brings one per key).
func (h *Harness) WaitReconciles(tb testing.TB, n uint64) {
	tb.Helper()
	target := h.Reconciles() + n
	testkit.EventuallyTrue(tb, h.name+" reconciles", 0, func() bool { return h.Reconciles() >= target })
}
