package events_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/flotilla-dev/flotilla/cluster/events"
	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/internal/testkit"
)

func openStore(t *testing.T) *store.Badger {
	t.Helper()
	s, err := store.Open(store.Config{Logger: testkit.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func pod(name string) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", UID: types.UID("uid-" + name)}}
	p.APIVersion, p.Kind = "v1", "Pod"
	return p
}

func listEvents(t *testing.T, s store.Interface) []*corev1.Event {
	t.Helper()
	objs, _, err := s.List(context.Background(), "events", store.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	out := make([]*corev1.Event, len(objs))
	for i, o := range objs {
		out[i] = o.(*corev1.Event)
	}
	return out
}

// TestRepeatsAggregate: the same cause recorded again and again is one
// Event whose count and lastTimestamp advance.
func TestRepeatsAggregate(t *testing.T) {
	s := openStore(t)
	clk := testkit.NewFakeClock(time.Now())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b := events.New(ctx, events.Config{Store: s, Host: "node-1", Clock: clk, Logger: testkit.Logger(t)})
	defer b.Shutdown()
	rec := b.Recorder("kubelet")
	p := pod("web")
	for i := 0; i < 5; i++ {
		rec.Eventf(p, corev1.EventTypeWarning, "BackOff", "Back-off pulling image %q", "nope:1")
		clk.Step(time.Second)
	}
	var first time.Time
	testkit.EventuallyWhy(t, "one BackOff event with count 5", time.Minute, func() string {
		evs := listEvents(t, s)
		if len(evs) != 1 {
			return fmt.Sprintf("%d events", len(evs))
		}
		ev := evs[0]
		first = ev.FirstTimestamp.Time
		if ev.Count != 5 {
			return fmt.Sprintf("count %d", ev.Count)
		}
		if ev.Reason != "BackOff" || ev.InvolvedObject.Name != "web" || ev.InvolvedObject.UID != p.UID ||
			ev.InvolvedObject.Kind != "Pod" || ev.Source.Component != "kubelet" || ev.Source.Host != "node-1" || ev.ReportingController != "kubelet" {
			return fmt.Sprintf("wrong event %+v", ev)
		}
		if ev.LastTimestamp.Before(&ev.FirstTimestamp) {
			return fmt.Sprintf("lastTimestamp %s before firstTimestamp %s", ev.LastTimestamp, ev.FirstTimestamp)
		}
		return ""
	})
	if first.IsZero() {
		t.Fatal("no firstTimestamp")
	}
}

// TestRateLimitPerObject: past the burst, an object's source gets no more
// Events until tokens come back; another object is not affected.
func TestRateLimitPerObject(t *testing.T) {
	s := openStore(t)
	clk := testkit.NewFakeClock(time.Now())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b := events.New(ctx, events.Config{Store: s, Clock: clk, Burst: 3, QPS: 1.0 / 300, Logger: testkit.Logger(t)})
	defer b.Shutdown()
	rec := b.Recorder("kubelet")
	noisy := pod("noisy")
	for i := 0; i < 8; i++ {
		rec.Eventf(noisy, corev1.EventTypeNormal, fmt.Sprintf("Reason%d", i), "message %d", i)
	}
	// One writer, in order: once the marker is stored, every event
	// before it was written or dropped.
	rec.Event(pod("quiet"), corev1.EventTypeNormal, "Marker", "after the others")
	testkit.EventuallyWhy(t, "the marker", time.Minute, func() string {
		for _, ev := range listEvents(t, s) {
			if ev.Reason == "Marker" {
				return ""
			}
		}
		return "not yet"
	})
	n := 0
	for _, ev := range listEvents(t, s) {
		if ev.InvolvedObject.Name == "noisy" {
			n++
		}
	}
	if n != 3 {
		t.Fatalf("%d events of the noisy pod stored, want the burst of 3", n)
	}
}

// TestEventsExpire: an Event last seen more than the TTL ago is deleted,
// one seen since is kept; no sleeping, the clock is stepped.
func TestEventsExpire(t *testing.T) {
	s := openStore(t)
	ctx := context.Background()
	now := time.Now()
	clk := testkit.NewFakeClock(now)
	mk := func(name string, last time.Time) {
		ev := &corev1.Event{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
			InvolvedObject: corev1.ObjectReference{Kind: "Pod", Name: "web", Namespace: "default"},
			Reason:         "Started", Type: corev1.EventTypeNormal, Count: 1,
			FirstTimestamp: metav1.NewTime(now), LastTimestamp: metav1.NewTime(last)}
		ev.APIVersion, ev.Kind = "v1", "Event"
		if _, err := s.Create(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	mk("old", now)
	mk("renewed", now.Add(50*time.Minute))
	mk("future", now.Add(100*time.Hour)) // a made-up time does not keep it forever
	c := &events.Collector{Store: s, TTL: time.Hour, Clock: clk}
	if n, err := c.Collect(ctx); err != nil || n != 0 {
		t.Fatalf("fresh events: deleted %d, %v; want 0", n, err)
	}
	clk.Step(61 * time.Minute)
	if n, err := c.Collect(ctx); err != nil || n != 2 {
		t.Fatalf("after the TTL: deleted %d, %v; want 2", n, err)
	}
	evs := listEvents(t, s)
	if len(evs) != 1 || evs[0].Name != "renewed" {
		t.Fatalf("left %v, want only the renewed event", evs)
	}
	clk.Step(50 * time.Minute)
	if n, err := c.Collect(ctx); err != nil || n != 1 || len(listEvents(t, s)) != 0 {
		t.Fatalf("an hour after its renewal: deleted %d, %v", n, err)
	}
}

// TestCollectorRuns: Run collects on its ticker.
func TestCollectorRuns(t *testing.T) {
	s := openStore(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	clk := testkit.NewFakeClock(time.Now())
	ev := &corev1.Event{ObjectMeta: metav1.ObjectMeta{Name: "x", Namespace: "default"}, Reason: "Pulled", LastTimestamp: metav1.NewTime(clk.Now())}
	ev.APIVersion, ev.Kind = "v1", "Event"
	if _, err := s.Create(ctx, ev); err != nil {
		t.Fatal(err)
	}
	c := &events.Collector{Store: s, TTL: time.Hour, Interval: time.Minute, Clock: clk}
	go c.Run(ctx)
	testkit.EventuallyTrue(t, "the collector's ticker", time.Minute, func() bool { return clk.HasWaiters() })
	clk.Step(2 * time.Hour)
	testkit.EventuallyTrue(t, "the event expired", time.Minute, func() bool { return len(listEvents(t, s)) == 0 })
}

func TestV1RoundTrip(t *testing.T) {
	now := metav1.NewTime(time.Unix(1700000000, 0))
	ev := &corev1.Event{ObjectMeta: metav1.ObjectMeta{Name: "e", Namespace: "ns"},
		InvolvedObject: corev1.ObjectReference{Kind: "Pod", Name: "p", Namespace: "ns", UID: "u"},
		Reason:         "Failed", Message: "boom", Source: corev1.EventSource{Component: "kubelet", Host: "n"},
		FirstTimestamp: now, LastTimestamp: now, Count: 3, Type: corev1.EventTypeWarning,
		ReportingController: "kubelet", ReportingInstance: "n",
		Series: &corev1.EventSeries{Count: 2, LastObservedTime: metav1.NewMicroTime(now.Time)}}
	v1 := events.ToV1(ev)
	if v1.Note != "boom" || v1.Regarding.Name != "p" || v1.DeprecatedCount != 3 || v1.APIVersion != "events.k8s.io/v1" || v1.Series.Count != 2 {
		t.Fatalf("ToV1: %+v", v1)
	}
	back := events.FromV1(v1)
	back.TypeMeta = ev.TypeMeta
	if fmt.Sprint(back) != fmt.Sprint(ev) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", back, ev)
	}
}
