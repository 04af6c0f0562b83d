package events

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/strategicpatch"
	"k8s.io/client-go/tools/record"

	"github.com/flotilla-dev/flotilla/cluster/store"
)

// writeTimeout bounds one write of an Event.
const writeTimeout = 30 * time.Second

var eventsResource = schema.GroupResource{Resource: "events"}

// Sink is client-go's record.EventSink over a store.Interface. The recorder
// tells what to retry by the error's type: a *StatusError is final (the
// write was refused: do not retry), a NotFound on a Patch makes it create
// the Event afresh (it expired), anything else is retried later. Sink maps
// the store's errors to those.
type Sink struct {
	Store store.Interface
	Log   *slog.Logger
}

var _ record.EventSink = (*Sink)(nil)

// Create stores a new Event.
func (s *Sink) Create(ev *corev1.Event) (*corev1.Event, error) {
	ctx, cancel := context.WithTimeout(context.Background(), writeTimeout)
	defer cancel()
	out, err := s.Store.Create(ctx, ev)
	return s.result(ev, out, err)
}

// Update replaces an Event.
func (s *Sink) Update(ev *corev1.Event) (*corev1.Event, error) {
	ctx, cancel := context.WithTimeout(context.Background(), writeTimeout)
	defer cancel()
	out, err := s.Store.Update(ctx, ev)
	return s.result(ev, out, err)
}

// Patch applies the correlator's strategic merge patch (count,
// lastTimestamp, message) to old, the Event as this recorder last wrote
// it, and replaces the stored one. Only the recorder that made an Event
// writes it, so there is no read first: an agent, like the kubelet, may
// write Events but not read them. A deleted Event (expired) answers
// NotFound, and the recorder creates it again.
func (s *Sink) Patch(old *corev1.Event, data []byte) (*corev1.Event, error) {
	ctx, cancel := context.WithTimeout(context.Background(), writeTimeout)
	defer cancel()
	orig, err := json.Marshal(old)
	if err != nil {
		return nil, apierrors.NewInternalError(err)
	}
	patched, err := strategicpatch.StrategicMergePatch(orig, data, &corev1.Event{})
	if err != nil {
		return nil, apierrors.NewBadRequest(fmt.Sprintf("patch event %s/%s: %v", old.Namespace, old.Name, err))
	}
	ev := &corev1.Event{}
	if err := json.Unmarshal(patched, ev); err != nil {
		return nil, apierrors.NewBadRequest(fmt.Sprintf("patch event %s/%s: %v", old.Namespace, old.Name, err))
	}
	ev.ResourceVersion = "" // unconditional: see above
	out, err := s.Store.Update(ctx, ev)
	return s.result(ev, out, err)
}

// result maps a store write's outcome to what the recorder expects.
func (s *Sink) result(ev *corev1.Event, out any, err error) (*corev1.Event, error) {
	if err == nil {
		e, ok := out.(*corev1.Event)
		if !ok {
			return nil, apierrors.NewInternalError(fmt.Errorf("the store returned %T for an Event", out))
		}
		return e, nil
	}
	var status apierrors.APIStatus
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, apierrors.NewNotFound(eventsResource, ev.Name)
	case errors.Is(err, store.ErrExists):
		return nil, apierrors.NewAlreadyExists(eventsResource, ev.Name)
	case errors.As(err, &status):
		// Refused by the pipeline (invalid, forbidden): final.
		s.log().Warn("event refused", "event", ev.Namespace+"/"+ev.Name, "reason", ev.Reason, "err", err)
		return nil, &apierrors.StatusError{ErrStatus: status.Status()}
	case errors.Is(err, store.ErrInvalid), errors.Is(err, store.ErrTooLarge), errors.Is(err, store.ErrConflict):
		// A conflict: the Event changed under the patch; the correlator
		// starts a new one rather than retrying the stale patch.
		s.log().Warn("event not written", "event", ev.Namespace+"/"+ev.Name, "reason", ev.Reason, "err", err)
		return nil, apierrors.NewBadRequest(err.Error())
	}
	return nil, err // transient: retried
}

func (s *Sink) log() *slog.Logger {
	if s.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Log
}
