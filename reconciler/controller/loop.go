package controller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/client-go/util/workqueue"

	"github.com/flotilla-dev/flotilla/cluster/store"
)

// Back-off of a key whose reconcile failed or panicked: 5ms doubling up to
// the cap (DefaultMaxBackoff when not given).
const (
	baseBackoff       = 5 * time.Millisecond
	DefaultMaxBackoff = 30 * time.Second
)

// WorkQueue is a controller's rate-limited queue of keys.
type WorkQueue struct {
	q workqueue.TypedRateLimitingInterface[string]
}

var _ Queue = (*WorkQueue)(nil)

// NewQueue returns the queue of the controller called name, with per-key
// exponential back-off capped at maxBackoff (<= 0: DefaultMaxBackoff).
func NewQueue(name string, maxBackoff time.Duration) *WorkQueue {
	return NewMeteredQueue(name, maxBackoff, nil)
}

// NewMeteredQueue is NewQueue with its workqueue_* series in m (nil: none).
func NewMeteredQueue(name string, maxBackoff time.Duration, m *Metrics) *WorkQueue {
	if maxBackoff <= 0 {
		maxBackoff = DefaultMaxBackoff
	}
	rl := workqueue.NewTypedItemExponentialFailureRateLimiter[string](baseBackoff, maxBackoff)
	return &WorkQueue{q: workqueue.NewTypedRateLimitingQueueWithConfig(rl, workqueue.TypedRateLimitingQueueConfig[string]{Name: name,
		MetricsProvider: m.provider()})}
}

// Add enqueues key.
func (w *WorkQueue) Add(key string) { w.q.Add(key) }

// AddAfter enqueues key after d.
func (w *WorkQueue) AddAfter(key string, d time.Duration) { w.q.AddAfter(key, d) }

// Len is the number of keys waiting.
func (w *WorkQueue) Len() int { return w.q.Len() }

// maxRememberedStalls bounds the memory of which stalls were logged.
const maxRememberedStalls = 4096

// LoopConfig configures a Loop.
type LoopConfig struct {
	// Name is the controller's name, for logs. Required.
	Name string
	// Controller is what the workers call. Required.
	Controller Controller
	// Queue is the controller's queue (the one its Deps had). Required.
	Queue *WorkQueue
	// Workers is the number of concurrent reconciles (at least 1).
	Workers int
	// Subject maps a key to the object whose conditions carry its
	// outcome; nil: keys name no object, outcomes are only logged.
	Subject SubjectFunc
	// Status writes the Stalled condition; nil: outcomes are only logged.
	Status *StatusWriter
	// Log receives the loop's logs. Default: discard.
	Log *slog.Logger
	// Metrics times each reconcile; nil: not timed.
	Metrics *Metrics
}

// Loop runs one Controller: Workers goroutines take keys from its queue
// and reconcile them, one key never on two workers at once. Each reconcile
// runs under recover: a panic is logged with its stack, stalls the key's
// object (ReasonReconcilePanic) and backs the key off; other keys go on.
// Outcomes land on the object: Stalled sets the Stalled condition, any
// success removes it.
type Loop struct {
	cfg    LoopConfig
	log    *slog.Logger
	count  atomic.Uint64
	active atomic.Int64

	mu     sync.Mutex
	stalls map[string]string // key → the stall last logged (logged once per change)
}

// NewLoop returns the loop of cfg.
func NewLoop(cfg LoopConfig) *Loop {
	if cfg.Workers < 1 {
		cfg.Workers = 1
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	return &Loop{cfg: cfg, log: cfg.Log, stalls: map[string]string{}}
}

// Reconciles is the number of reconciles finished so far (for tests that
// wait for a number of passes instead of sleeping, and for metrics).
func (l *Loop) Reconciles() uint64 { return l.count.Load() }

// Idle reports whether no key waits in the queue and none is being
// reconciled (keys waiting out a delay or a back-off do not count).
func (l *Loop) Idle() bool { return l.cfg.Queue.Len() == 0 && l.active.Load() == 0 }

// Run starts the workers and blocks until ctx ends, then shuts the queue
// down and waits for in-flight reconciles to return.
func (l *Loop) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for range l.cfg.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for l.next(ctx) {
			}
		}()
	}
	<-ctx.Done()
	l.cfg.Queue.q.ShutDown()
	wg.Wait()
}

// PanicError is a panic recovered from a reconcile.
type PanicError struct {
	Value any
	Stack []byte
}

func (p *PanicError) Error() string { return fmt.Sprintf("panic: %v", p.Value) }

// Safely calls fn and turns a panic into a *PanicError.
func Safely(fn func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = &PanicError{Value: r, Stack: debug.Stack()}
		}
	}()
	return fn()
}

func (l *Loop) next(ctx context.Context) bool {
	q := l.cfg.Queue.q
	key, quit := q.Get()
	if quit {
		return false
	}
	l.active.Add(1)
	defer q.Done(key)
	defer l.active.Add(-1)
	defer l.count.Add(1)
	var res Result
	start := time.Now()
	err := Safely(func() (err error) {
		res, err = l.cfg.Controller.Reconcile(ctx, key)
		return err
	})
	l.cfg.Metrics.observe(l.cfg.Name, resultLabel(res, err), time.Since(start))
	if ctx.Err() != nil {
		return true // shutting down: whatever failed is retried by the next manager
	}
	var pe *PanicError
	switch {
	case errors.As(err, &pe):
		l.stalled(ctx, key, ReasonReconcilePanic, fmt.Sprint(pe.Value), pe.Stack)
		q.AddRateLimited(key)
	case errors.Is(err, store.ErrInvalid):
		l.stalled(ctx, key, ReasonWriteRefused, err.Error(), nil)
		q.Forget(key)
	case err != nil:
		n := q.NumRequeues(key)
		lvl := slog.LevelDebug
		if n >= 5 {
			lvl = slog.LevelWarn
		}
		l.log.Log(ctx, lvl, "reconcile failed, requeued", "key", key, "attempt", n+1, "err", err)
		q.AddRateLimited(key)
	case res.Outcome == OutcomeStalled:
		l.stalled(ctx, key, res.Reason, res.Message, nil)
		q.Forget(key)
	default:
		q.Forget(key)
		l.succeeded(ctx, key)
		if res.Outcome == OutcomeWaiting {
			l.log.Debug("waiting", "key", key, "for", res.Reason, "retry", res.After)
		}
		if res.After > 0 {
			q.AddAfter(key, res.After)
		}
	}
	return true
}

// stalled logs a stall (once per key and reason; a panic's stack the
// first time) and writes it on the key's object.
func (l *Loop) stalled(ctx context.Context, key, reason, message string, stack []byte) {
	l.mu.Lock()
	seen := l.stalls[key] == reason+": "+message
	if len(l.stalls) >= maxRememberedStalls {
		clear(l.stalls) // keys of deleted objects: only costs a repeated log line
	}
	l.stalls[key] = reason + ": " + message
	l.mu.Unlock()
	switch {
	case stack != nil && !seen:
		l.log.Error("reconcile panicked; the key is backed off, the others go on", "key", key, "panic", clip(message), "stack", string(stack))
	case !seen:
		l.log.Warn("reconcile stalled: the object must change to progress", "key", key, "reason", reason, "message", clip(message))
	}
	ref, ok := l.subject(key)
	if !ok || l.cfg.Status == nil {
		return
	}
	if _, err := l.cfg.Status.SetStalled(ctx, ref, reason, message); err != nil && ctx.Err() == nil {
		l.log.Warn("could not record the stall on the object", "key", key, "err", err)
	}
}

// succeeded forgets a key's stall and removes its object's Stalled
// condition.
func (l *Loop) succeeded(ctx context.Context, key string) {
	l.mu.Lock()
	delete(l.stalls, key)
	l.mu.Unlock()
	ref, ok := l.subject(key)
	if !ok || l.cfg.Status == nil {
		return
	}
	if err := l.cfg.Status.ClearStalled(ctx, ref); err != nil && ctx.Err() == nil {
		l.log.Debug("could not clear the Stalled condition", "key", key, "err", err)
	}
}

func (l *Loop) subject(key string) (ref Ref, ok bool) {
	if l.cfg.Subject == nil {
		return Ref{}, false
	}
	if err := Safely(func() error { ref, ok = l.cfg.Subject(key); return nil }); err != nil {
		return Ref{}, false
	}
	return ref, ok
}

// resultLabel is a reconcile's outcome as its metrics label it.
func resultLabel(res Result, err error) string {
	var pe *PanicError
	switch {
	case errors.As(err, &pe):
		return "panic"
	case err != nil:
		return "error"
	case res.Outcome == OutcomeStalled:
		return "stalled"
	}
	return "success"
}
