package testkit

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestWaitReturnsOnceTheConditionHolds(t *testing.T) {
	var n atomic.Int32
	err := Wait(context.Background(), time.Second, func() error {
		if n.Add(1) < 3 {
			return errors.New("not yet")
		}
		return nil
	})
	if err != nil || n.Load() != 3 {
		t.Fatalf("Wait = %v after %d checks, want nil after 3", err, n.Load())
	}
}

func TestWaitGivesTheLastReason(t *testing.T) {
	err := Wait(context.Background(), 30*time.Millisecond, func() error { return errors.New("pod web-1 is Pending") })
	if err == nil || !strings.Contains(err.Error(), "pod web-1 is Pending") {
		t.Fatalf("Wait = %v, want the condition's last error", err)
	}
}

func TestFakeClockSteps(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	c := NewFakeClock(start)
	c.Step(time.Minute)
	if got := c.Now().Sub(start); got != time.Minute {
		t.Fatalf("after Step(1m) the clock moved %s", got)
	}
}

// fatalRecorder is a test whose Fatalf only records, to check what
// Eventually fails with.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (f *fatalRecorder) Helper() {}

func (f *fatalRecorder) Fatalf(format string, args ...any) { f.msg = fmt.Sprintf(format, args...) }

func TestEventuallyWhyFailsWithWhatAndTheLastReason(t *testing.T) {
	rec := &fatalRecorder{TB: t}
	EventuallyWhy(rec, "web-1 to run", 30*time.Millisecond, func() string { return "web-1 is Pending" })
	if !strings.Contains(rec.msg, "web-1 to run") || !strings.Contains(rec.msg, "web-1 is Pending") {
		t.Fatalf("failed with %q, want what was awaited and the last reason", rec.msg)
	}
	rec.msg = ""
	EventuallyWhy(rec, "nothing", time.Second, func() string { return "" })
	if rec.msg != "" {
		t.Fatalf("a condition that holds failed the test: %q", rec.msg)
	}
}

func TestPollIntervalFollowsTheTimeWaited(t *testing.T) {
	for _, c := range []struct{ elapsed, want time.Duration }{
		{0, minPollInterval},
		{50 * time.Millisecond, minPollInterval},
		{2 * time.Second, 200 * time.Millisecond},
		{time.Minute, maxPollInterval},
	} {
		if got := pollInterval(c.elapsed); got != c.want {
			t.Errorf("pollInterval(%s) = %s, want %s", c.elapsed, got, c.want)
		}
	}
}
