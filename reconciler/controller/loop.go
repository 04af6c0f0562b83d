package controller

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"k8s.io/client-go/util/workqueue"
)

// Loop runs one Controller: a rate-limited queue of keys and Workers
// goroutines that reconcile them.
type Loop struct {
	ctrl    Controller
	log     *slog.Logger
	workers int
	queue   workqueue.TypedRateLimitingInterface[string]
}

// NewLoop returns a loop for ctrl with the given number of workers (at
// least 1). Per-key back-off starts at 5ms and is capped at maxBackoff
// (30s when zero).
func NewLoop(ctrl Controller, log *slog.Logger, workers int, maxBackoff time.Duration) *Loop {
	if workers < 1 {
		workers = 1
	}
	if maxBackoff <= 0 {
		maxBackoff = 30 * time.Second
	}
	rl := workqueue.NewTypedItemExponentialFailureRateLimiter[string](5*time.Millisecond, maxBackoff)
	q := workqueue.NewTypedRateLimitingQueueWithConfig(rl, workqueue.TypedRateLimitingQueueConfig[string]{Name: ctrl.Name()})
	return &Loop{ctrl: ctrl, log: log.With("controller", ctrl.Name()), workers: workers, queue: q}
}

// Queue is the loop's queue, for the controller's Setup.
func (l *Loop) Queue() Queue { return queueAdapter{l.queue} }

// Len is the number of keys waiting (for tests and metrics).
func (l *Loop) Len() int { return l.queue.Len() }

// Run starts the workers and blocks until ctx ends, then shuts the queue
// down and waits for in-flight reconciles to return.
func (l *Loop) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for i := 0; i < l.workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for l.next(ctx) {
			}
		}()
	}
	<-ctx.Done()
	l.queue.ShutDown()
	wg.Wait()
}

func (l *Loop) next(ctx context.Context) bool {
	key, quit := l.queue.Get()
	if quit {
		return false
	}
	defer l.queue.Done(key)
	res, err := l.ctrl.Reconcile(ctx, key)
	switch {
	case err != nil:
		if ctx.Err() != nil {
			return true
		}
		n := l.queue.NumRequeues(key)
		lvl := slog.LevelDebug
		if n >= 5 {
			lvl = slog.LevelWarn
		}
		l.log.Log(ctx, lvl, "reconcile failed, requeued", "key", key, "attempt", n+1, "err", err)
		l.queue.AddRateLimited(key)
	default:
		l.queue.Forget(key)
		if res.RequeueAfter > 0 {
			l.queue.AddAfter(key, res.RequeueAfter)
		}
	}
	return true
}

type queueAdapter struct {
	q workqueue.TypedRateLimitingInterface[string]
}

func (a queueAdapter) Add(key string)                       { a.q.Add(key) }
func (a queueAdapter) AddAfter(key string, d time.Duration) { a.q.AddAfter(key, d) }
