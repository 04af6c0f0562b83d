// Package controller is the one vocabulary of Flotilla's controllers: what a
// controller is built from (Deps), what a reconcile returns (Result: done,
// requeue, waiting, stalled — or an error, transient), the one status writer
// (StatusWriter, with the Stalled condition), and Loop, the rate-limited
// work queue with workers that drives a controller, recovers a panic per
// key and puts every outcome where a user sees it: in the object's
// conditions, not only in the log (the kubernetes/sample-controller loop,
// with Flux's classes of outcome).
package controller

import (
	"context"
	"log/slog"
	"time"

	"k8s.io/utils/clock"

	"github.com/flotilla-dev/flotilla/cluster/events"
	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/reconciler/cache"
)

// Controller is one control loop. Its constructor (New(Deps, …) in each
// controller's package) registers event handlers on Deps.Cache that turn
// objects into keys on Deps.Queue; the Loop then calls Reconcile from its
// workers, never for one key on two workers at once.
type Controller interface {
	// Reconcile re-reads the current desired and observed state of key from
	// the cache (and, where it must be exact, from the store) and makes them
	// match. A nil error means the Result says what comes next; an error is
	// transient: the key is retried with per-key exponential back-off
	// (except an error that wraps store.ErrInvalid: the store refused a
	// write, which only a change of the object can fix — stalled). A panic
	// is recovered by the Loop and stalls the key the same way, with
	// back-off.
	Reconcile(ctx context.Context, key string) (Result, error)
}

// Starter is an optional ability of a Controller with event sources outside
// the cache (gossip membership) or work to do once it runs. The manager
// calls Start once, on its own goroutine, after the cache has synced and
// alongside the workers; Start returns when ctx ends (or at once when it
// has nothing to follow).
type Starter interface {
	Start(ctx context.Context)
}

// Queue is the part of the work queue that event handlers see.
type Queue interface {
	// Add enqueues key; a key already waiting is not added twice.
	Add(key string)
	// AddAfter enqueues key after d.
	AddAfter(key string, d time.Duration)
}

// Deps is what every controller is built from. The manager makes one per
// controller; every field is set.
type Deps struct {
	// Name is the controller's name in the registry ("deployment").
	Name string
	// Store is where the controller reads what must be exact and writes.
	// In a server it is the admission layer over the store: every write is
	// validated (a refused write wraps store.ErrInvalid).
	Store store.Interface
	// Cache is the shared watch cache; objects from it are shared: copy
	// them (schema.Copy) before changing them.
	Cache *cache.Cache
	// Queue is this controller's own work queue.
	Queue Queue
	// Clock is the time the controller and its planners are given
	// (k8s.io/utils/clock; tests give testkit.NewFakeClock).
	Clock clock.Clock
	// Log is the controller's logger, with "controller" set to Name.
	Log *slog.Logger
	// Status writes statuses and the Stalled condition.
	Status *StatusWriter
	// Events records Kubernetes Events about the controller's objects
	// (reason ScalingReplicaSet, SuccessfulCreate, Scheduled, …); never
	// blocks. The manager gives events.Nop when it has no recorder.
	Events events.Recorder
}

// Ref names the object a key stands for: the object whose conditions
// carry the key's outcome.
type Ref struct {
	Resource  string // plural, "deployments"
	Namespace string // "" for cluster-scoped kinds
	Name      string
}

// String is "resource/namespace/name" (or "resource/name").
func (r Ref) String() string { return r.Resource + "/" + cache.KeyOf(r.Namespace, r.Name) }

// SubjectFunc maps a queue key to the object it stands for; false when the
// key names no object (the scheduler's pass).
type SubjectFunc func(key string) (Ref, bool)

// KeysOf is the SubjectFunc of a controller whose keys are
// "namespace/name" (or "name") of resource.
func KeysOf(resource string) SubjectFunc {
	return func(key string) (Ref, bool) {
		ns, name := cache.SplitKey(key)
		return Ref{Resource: resource, Namespace: ns, Name: name}, name != ""
	}
}

// OrNop is r, or events.Nop when r is nil (Deps made by hand in tests).
func OrNop(r events.Recorder) events.Recorder {
	if r == nil {
		return events.Nop
	}
	return r
}
