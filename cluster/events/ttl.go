package events

import (
	"context"
	"errors"
	"log/slog"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/clock"

	"github.com/flotilla-dev/flotilla/cluster/store"
)

// DefaultTTL is how long an Event is kept after it was last seen
// (kube-apiserver's --event-ttl).
const DefaultTTL = time.Hour

// Collector deletes expired Events, as etcd's leases do for kube-apiserver.
// It deletes them through the store, not with Badger's own per-entry TTL:
// an entry that Badger drops by itself changes no revision and tells no
// watcher (kubectl get events -w, a watch cache would keep it forever), and
// replicas of the store would each drop it at their own time. A Delete is
// an ordinary, replicated write with a DELETED watch event. An idle cluster
// writes nothing: a pass that finds nothing expired only reads.
type Collector struct {
	// Store is where the Events are listed and deleted. Required.
	Store store.Interface
	// TTL is how long after it was last seen an Event is deleted.
	// Default DefaultTTL.
	TTL time.Duration
	// Interval is the time between passes. Default TTL/60 (a minute):
	// an Event lives at most TTL+Interval.
	Interval time.Duration
	// Clock is the time the collector judges by. Default: the wall clock.
	Clock clock.Clock
	// Log receives the passes that failed. Default: discard.
	Log *slog.Logger
}

func (c *Collector) defaults() {
	if c.TTL <= 0 {
		c.TTL = DefaultTTL
	}
	if c.Interval <= 0 {
		c.Interval = c.TTL / 60
	}
	if c.Clock == nil {
		c.Clock = clock.RealClock{}
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
}

// Run collects every Interval until ctx ends.
func (c *Collector) Run(ctx context.Context) {
	c.defaults()
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.Clock.After(c.Interval):
			if _, err := c.Collect(ctx); err != nil && ctx.Err() == nil {
				c.Log.Warn("expiring events", "err", err)
			}
		}
	}
}

// Collect deletes every Event last seen more than TTL ago and says how many
// it deleted. An Event written again since it was listed is kept (the
// delete's resourceVersion precondition fails).
func (c *Collector) Collect(ctx context.Context) (int, error) {
	c.defaults()
	objs, _, err := c.Store.List(ctx, "events", store.ListOptions{})
	if err != nil {
		return 0, err
	}
	now := c.Clock.Now()
	n := 0
	var errs []error
	for _, o := range objs {
		ev, ok := o.(*corev1.Event)
		if !ok || now.Sub(LastSeen(ev, now)) < c.TTL {
			continue
		}
		_, err := c.Store.Delete(ctx, "events", ev.Namespace, ev.Name, store.DeleteOptions{ResourceVersion: ev.ResourceVersion})
		switch {
		case err == nil:
			n++
		case errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrConflict):
		default:
			errs = append(errs, err)
		}
	}
	return n, errors.Join(errs...)
}

// LastSeen is when ev was last seen: the latest of its creation, its
// lastTimestamp, its eventTime and its series' lastObservedTime, leaving
// out times after now (a writer's clock ahead, or a made-up time, must not
// keep an Event forever).
func LastSeen(ev *corev1.Event, now time.Time) time.Time {
	t := ev.CreationTimestamp.Time
	for _, c := range []time.Time{ev.LastTimestamp.Time, ev.EventTime.Time, seriesTime(ev)} {
		if c.After(t) && !c.After(now) {
			t = c
		}
	}
	return t
}

func seriesTime(ev *corev1.Event) time.Time {
	if ev.Series == nil {
		return time.Time{}
	}
	return ev.Series.LastObservedTime.Time
}
