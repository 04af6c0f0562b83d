// Package testkit is the test support every package shares: waiting on a
// condition instead of sleeping (Eventually), logs that go to the test's own
// output (Logger), and the one fake clock (NewFakeClock, k8s.io/utils'),
// so that back-off, grace periods and probes are tested by advancing time.
// Only tests import it.
package testkit

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"
)

// DefaultTimeout is how long Eventually waits when given 0.
const DefaultTimeout = 30 * time.Second

// pollInterval is how often Eventually checks; short, since conditions are
// cheap reads.
const pollInterval = 10 * time.Millisecond

// Eventually waits until cond returns nil, checking every few milliseconds,
// and fails the test with what and cond's last error after timeout (0:
// DefaultTimeout). It returns at once when the test's context ends.
func Eventually(tb testing.TB, what string, timeout time.Duration, cond func() error) {
	tb.Helper()
	if err := Wait(context.Background(), timeout, cond); err != nil {
		tb.Fatalf("waiting for %s: %v", what, err)
	}
}

// EventuallyTrue is Eventually for a condition that has no reason to give.
func EventuallyTrue(tb testing.TB, what string, timeout time.Duration, cond func() bool) {
	tb.Helper()
	Eventually(tb, what, timeout, func() error {
		if cond() {
			return nil
		}
		return fmt.Errorf("not yet")
	})
}

// Wait is Eventually without a test: it returns nil once cond does, or
// cond's last error wrapped with the timeout, or ctx's error.
func Wait(ctx context.Context, timeout time.Duration, cond func() error) error {
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	deadline := time.Now().Add(timeout)
	t := time.NewTicker(pollInterval)
	defer t.Stop()
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("still not after %s: %w", timeout, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// Logger returns a logger that writes to tb's log at debug level and
// above, so that a failing test shows what the code under test said. Lines
// logged after the test ends are dropped (a goroutine outliving its test
// must not panic the run).
func Logger(tb testing.TB) *slog.Logger {
	w := &testWriter{tb: tb}
	tb.Cleanup(w.close)
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct {
	mu   sync.Mutex
	tb   testing.TB
	done bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.tb.Helper()
		w.tb.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

func (w *testWriter) close() {
	w.mu.Lock()
	w.done = true
	w.mu.Unlock()
}

// NewFakeClock is k8s.io/utils' fake clock, the one clock type of the
// project's tests: production code takes a clock.PassiveClock or
// clock.Clock, tests give this and call Step.
func NewFakeClock(t time.Time) *clocktesting.FakeClock { return clocktesting.NewFakeClock(t) }
