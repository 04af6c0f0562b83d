// Package controller is the contract between the controller manager and the
// controllers it runs: a Controller turns cache events into keys and
// reconciles one key at a time; Loop is the rate-limited work queue with
// workers that drives it (the kubernetes/sample-controller pattern).
package controller

import (
	"context"
	"time"

	"github.com/flotilla-dev/flotilla/reconciler/cache"
)

// Controller is one control loop. The manager calls Setup once before the
// cache starts, then calls Reconcile from its workers; one key is never
// reconciled by two workers at once.
type Controller interface {
	// Name is the controller's stable name, used in logs ("deployment").
	Name() string
	// Setup registers event handlers on the cache's informers. Handlers must
	// only turn objects into keys and call q.Add; they run on the informer's
	// goroutine and must not block.
	Setup(c *cache.Cache, q Queue)
	// Reconcile re-reads the current desired and observed state of key from
	// the cache (and, where it must be exact, from the store) and makes them
	// match. A nil error forgets the key's back-off; an error requeues it
	// with per-key exponential back-off. Result.RequeueAfter > 0 asks for
	// another pass later even on success (waiting, not failing).
	Reconcile(ctx context.Context, key string) (Result, error)
}

// Starter is an optional ability of a Controller with event sources outside
// the cache (gossip membership). The manager calls Start once, on its own
// goroutine, after the cache has synced and alongside the workers; Start
// turns those events into keys on the queue given to Setup and returns when
// ctx ends.
type Starter interface {
	Start(ctx context.Context)
}

// Result is what a successful Reconcile asks for next.
type Result struct {
	// RequeueAfter, when > 0, reconciles the key again after this delay.
	RequeueAfter time.Duration
}

// Queue is the part of the work queue that event handlers see.
type Queue interface {
	// Add enqueues key; a key already waiting is not added twice.
	Add(key string)
	// AddAfter enqueues key after d.
	AddAfter(key string, d time.Duration)
}

// Clock is the time source controllers read; tests pass a fixed one.
type Clock interface {
	Now() time.Time
}

// RealClock is the wall clock.
type RealClock struct{}

// Now returns time.Now().
func (RealClock) Now() time.Time { return time.Now() }
