package testkit

import (
	"context"
	"errors"
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
