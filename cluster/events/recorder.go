// Package events is how Flotilla's components record Kubernetes Events:
// client-go's own recorder (k8s.io/client-go/tools/record: its
// EventCorrelator aggregates repeats into one Event whose count and
// lastTimestamp advance, and rate-limits each source+object with a token
// bucket) writing through a Sink to Flotilla's store — in a server, the
// admission layer over it; in an agent, the API — plus the collector that
// deletes Events an hour after they were last seen, and the conversion to
// the events.k8s.io/v1 form the API also serves.
//
// Recording never blocks the caller: the recorder queues (up to 1000
// events, then drops) and one goroutine writes, so Events are not a load on
// the write path that a reconcile or a pod start waits on.
package events

import (
	"context"
	"log/slog"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/clock"

	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/schema"
)

// Recorder is what a component records Events with: client-go's
// EventRecorder (Event, Eventf, AnnotatedEventf on any API object from the
// store, or an *corev1.ObjectReference).
type Recorder = record.EventRecorder

// Nop is a Recorder that drops every Event (tests, and components built
// without one).
var Nop Recorder = &record.FakeRecorder{}

// Config configures a Broadcaster. Zero values mean the defaults.
type Config struct {
	// Store is where the Events are written: in a server, the admission
	// layer over the store (the one write pipeline); in an agent, the API
	// client. Required.
	Store store.Interface
	// Host is the reporting instance (the node's or the server's name);
	// it is the source.host and reportingInstance of every Event.
	Host string
	// Clock is the correlator's clock: when repeats count as repeats and
	// when the rate limit's tokens come back. Default: the wall clock.
	Clock clock.PassiveClock
	// QPS and Burst are the token bucket of each source+object (client-go's
	// defaults: 1/300 and 25: 25 Events at once, then one every 5 minutes).
	QPS   float32
	Burst int
	// RetryDelay is how long a write that failed for a transient reason
	// waits before it is tried again (client-go: 10s; up to 12 tries).
	RetryDelay time.Duration
	// Logger receives what could not be written. Default: discard.
	Logger *slog.Logger
}

// Broadcaster turns recorded Events into writes to the Store. Make it with
// New; Shutdown stops it.
type Broadcaster struct {
	cfg Config
	b   record.EventBroadcaster
}

// New starts a Broadcaster writing to cfg.Store until ctx ends or Shutdown.
func New(ctx context.Context, cfg Config) *Broadcaster {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.RetryDelay <= 0 {
		cfg.RetryDelay = 10 * time.Second
	}
	opts := record.CorrelatorOptions{Clock: cfg.Clock, QPS: cfg.QPS, BurstSize: cfg.Burst}
	b := record.NewBroadcaster(record.WithContext(ctx), record.WithCorrelatorOptions(opts), record.WithSleepDuration(cfg.RetryDelay))
	b.StartRecordingToSink(&Sink{Store: cfg.Store, Log: cfg.Logger})
	return &Broadcaster{cfg: cfg, b: b}
}

// Recorder is a Recorder for one component ("scheduler",
// "deployment-controller", "kubelet"): the source.component and
// reportingController of its Events.
func (b *Broadcaster) Recorder(component string) Recorder {
	return b.b.NewRecorder(Scheme, corev1.EventSource{Component: component, Host: b.cfg.Host})
}

// Shutdown stops writing; Events still queued are dropped.
func (b *Broadcaster) Shutdown() { b.b.Shutdown() }

// Scheme knows every kind of schema.Kinds, so that the recorder can name an
// object whose apiVersion and kind are not set (one built in code rather
// than read from the store).
var Scheme = func() *runtime.Scheme {
	s := runtime.NewScheme()
	for _, k := range schema.Kinds() {
		obj := k.New()
		s.AddKnownTypeWithName(obj.GetObjectKind().GroupVersionKind(), obj)
	}
	return s
}()
