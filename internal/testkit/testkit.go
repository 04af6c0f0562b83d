// Package testkit is the test support every package shares: waiting on a
// condition instead of sleeping (Eventually), logs that go to the test's own
// output (Logger), and the one fake clock (NewFakeClock, k8s.io/utils'),
// so that back-off, grace periods and probes are tested by advancing time.
// Only tests import it.
package testkit

import (
	"bytes"
	"context"
	"errors"
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

// Conditions are checked every tenth of the time waited so far, within
// these bounds: a condition that holds soon (a store read, a channel) is
// seen within milliseconds, and one that takes minutes (a Podman pod, a lab
// node) is not asked hundreds of times a minute, on a machine other tests
// share.
const (
	minPollInterval = 10 * time.Millisecond
	maxPollInterval = 500 * time.Millisecond
)

// pollInterval is the pause before the next check, elapsed into a wait.
func pollInterval(elapsed time.Duration) time.Duration {
	return min(max(elapsed/10, minPollInterval), maxPollInterval)
}

// Eventually waits until cond returns nil and fails the test with what and
// cond's last error after timeout (0: DefaultTimeout). Call it from the
// test's goroutine, as any Fatal.
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

// EventuallyWhy is Eventually for a condition that says why it does not
// hold yet, and "" once it does.
func EventuallyWhy(tb testing.TB, what string, timeout time.Duration, cond func() string) {
	tb.Helper()
	Eventually(tb, what, timeout, func() error {
		if why := cond(); why != "" {
			return errors.New(why)
		}
		return nil
	})
}

// Wait is Eventually without a test: it returns nil once cond does, or
// cond's last error wrapped with the timeout, or ctx's error.
func Wait(ctx context.Context, timeout time.Duration, cond func() error) error {
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	start := time.Now()
	for {
		err := cond()
		if err == nil {
			return nil
		}
		elapsed := time.Since(start)
		if elapsed >= timeout {
			return fmt.Errorf("still not after %s: %w", timeout, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(min(pollInterval(elapsed), timeout-elapsed)):
		}
	}
}

// Logger returns a logger that writes to tb's log at debug level and
// above, so that a failing test shows what the code under test said. Lines
// logged after the test ends are dropped (a goroutine outliving its test
// must not panic the run).
func Logger(tb testing.TB) *slog.Logger { return LoggerAt(tb, slog.LevelDebug) }

// LoggerAt is Logger from level up, for code whose debug lines would drown
// what a failure needs (memberlist's, a Podman service's).
func LoggerAt(tb testing.TB, level slog.Leveler) *slog.Logger {
	w := &testWriter{tb: tb}
	tb.Cleanup(w.close)
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
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

// Buffer is a bytes.Buffer that a test may read while another goroutine
// writes it (a command's output, a log).
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
