package controller

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/flotilla-dev/flotilla/reconciler/cache"
)

type flaky struct {
	mu       sync.Mutex
	calls    map[string]int
	failures int // fail the first N calls of each key
	requeue  time.Duration
	active   map[string]bool
	overlap  bool
}

func (f *flaky) Name() string              { return "flaky" }
func (f *flaky) Setup(*cache.Cache, Queue) {}
func (f *flaky) count(key string) int      { f.mu.Lock(); defer f.mu.Unlock(); return f.calls[key] }
func (f *flaky) Reconcile(_ context.Context, key string) (Result, error) {
	f.mu.Lock()
	if f.active[key] {
		f.overlap = true
	}
	f.active[key] = true
	f.calls[key]++
	n := f.calls[key]
	f.mu.Unlock()
	time.Sleep(time.Millisecond)
	f.mu.Lock()
	f.active[key] = false
	f.mu.Unlock()
	if n <= f.failures {
		return Result{}, errors.New("transient")
	}
	if n == f.failures+1 {
		return Result{RequeueAfter: f.requeue}, nil
	}
	return Result{}, nil
}

func TestLoopRetriesThenForgets(t *testing.T) {
	f := &flaky{calls: map[string]int{}, active: map[string]bool{}, failures: 3, requeue: 20 * time.Millisecond}
	l := NewLoop(f, slog.New(slog.DiscardHandler), 4, time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { l.Run(ctx); close(done) }()
	for i := 0; i < 20; i++ {
		l.Queue().Add("a")
	}
	l.Queue().Add("b")
	end := time.Now().Add(5 * time.Second)
	for (f.count("a") < 5 || f.count("b") < 5) && time.Now().Before(end) {
		time.Sleep(5 * time.Millisecond)
	}
	// 3 failures, 1 success asking for a requeue, 1 more success, then quiet.
	time.Sleep(100 * time.Millisecond)
	cancel()
	<-done
	if a, b := f.count("a"), f.count("b"); a != 5 || b != 5 {
		t.Errorf("calls a=%d b=%d, want 5 each", a, b)
	}
	if f.overlap {
		t.Error("one key reconciled by two workers at once")
	}
	if l.queue.NumRequeues("a") != 0 {
		t.Error("back-off not forgotten after success")
	}
}
