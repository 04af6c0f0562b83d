package controller

import (
	"context"
	"errors"
	"fmt"
	"reflect"

	apiequality "k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/utils/clock"

	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/reconciler/cache"
	"github.com/flotilla-dev/flotilla/schema"
)

// StatusWriter is the one status writer of the controllers: a status is
// written only when it changed, an object deleted meanwhile is not an
// error, and the Stalled condition is set and cleared here. Safe for
// concurrent use.
type StatusWriter struct {
	store store.Interface
	cache *cache.Cache
	clock clock.PassiveClock
}

// NewStatusWriter returns the writer over st; ca is read to skip writes
// that would change nothing (nil: always read the store).
func NewStatusWriter(st store.Interface, ca *cache.Cache, clk clock.PassiveClock) *StatusWriter {
	return &StatusWriter{store: st, cache: ca, clock: clk}
}

// conflictRetries is how often a Stalled write is retried when the object
// changed between its read and its write.
const conflictRetries = 3

// Update writes obj's status when it differs semantically (apiequality:
// nil and empty are equal) from the status of before, the object obj was
// copied from (nil: write). obj carries before's resourceVersion, so a
// change made meanwhile fails with store.ErrConflict, which the caller
// returns (its event brings another reconcile). It returns the stored
// object, or obj when nothing was written or the object is gone.
func (w *StatusWriter) Update(ctx context.Context, before, obj schema.Object) (schema.Object, error) {
	if before != nil && apiequality.Semantic.DeepEqual(statusField(before), statusField(obj)) {
		return obj, nil
	}
	out, err := w.store.UpdateStatus(ctx, obj)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return obj, nil
	case err != nil:
		return obj, fmt.Errorf("update the status of %s %s: %w", kindOf(obj), cache.Key(obj), err)
	}
	return out, nil
}

// statusField is obj's Status field (nil when it has none).
func statusField(obj schema.Object) any {
	v := reflect.ValueOf(obj)
	if v.Kind() != reflect.Pointer || v.IsNil() {
		return nil
	}
	f := v.Elem().FieldByName("Status")
	if !f.IsValid() {
		return nil
	}
	return f.Interface()
}

func kindOf(obj schema.Object) string {
	if k, err := schema.KindOf(obj); err == nil {
		return k.Resource
	}
	return fmt.Sprintf("%T", obj)
}

// SetStalled writes the Stalled condition (reason, message) on the object
// ref names, reading it from the store first; nothing is written when the
// condition is already so. It reports false, and writes nothing, when the
// object is gone or its kind has no status conditions (a PersistentVolume,
// an EndpointSlice): the log is then the only place the outcome shows.
func (w *StatusWriter) SetStalled(ctx context.Context, ref Ref, reason, message string) (bool, error) {
	return w.stall(ctx, ref, &Stall{Reason: reason, Message: message})
}

// ClearStalled removes the Stalled condition from the object ref names,
// when it has one. The cached object is looked at first, so that a
// reconcile that succeeds costs no store read.
func (w *StatusWriter) ClearStalled(ctx context.Context, ref Ref) error {
	if w.cache != nil {
		inf, ok := w.cache.Lookup(ref.Resource)
		if !ok {
			return nil
		}
		obj, ok := inf.Get(ref.Namespace, ref.Name)
		if !ok {
			return nil
		}
		if _, stalled := StalledCondition(obj); !stalled {
			return nil
		}
	}
	_, err := w.stall(ctx, ref, nil)
	return err
}

func (w *StatusWriter) stall(ctx context.Context, ref Ref, s *Stall) (bool, error) {
	var err error
	for range conflictRetries {
		var obj schema.Object
		obj, err = w.store.Get(ctx, ref.Resource, ref.Namespace, ref.Name)
		if errors.Is(err, store.ErrNotFound) {
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("read %s to update its %s condition: %w", ref, ConditionStalled, err)
		}
		if !HasConditions(obj) {
			return false, nil
		}
		if !SetStalled(obj, s, w.clock.Now()) {
			return true, nil
		}
		_, err = w.store.UpdateStatus(ctx, obj)
		switch {
		case err == nil:
			return true, nil
		case errors.Is(err, store.ErrNotFound):
			return false, nil
		case !errors.Is(err, store.ErrConflict):
			return false, fmt.Errorf("write the %s condition of %s: %w", ConditionStalled, ref, err)
		}
	}
	return false, fmt.Errorf("write the %s condition of %s: %w", ConditionStalled, ref, err)
}
