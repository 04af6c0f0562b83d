package controller

import (
	"context"
	"errors"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/flotilla-dev/flotilla/internal/testkit"
)

// TestLoopMetrics: the queue's depth and adds and each reconcile's latency
// by result land in the registry.
func TestLoopMetrics(t *testing.T) {
	m := NewMetrics(prometheus.NewRegistry())
	q := NewMeteredQueue("test", 0, m)
	// Keys wait in the queue before the loop runs: the depth shows them.
	q.Add("a")
	q.Add("b")
	if d := testutil.ToFloat64(m.depth.WithLabelValues("test")); d != 2 {
		t.Errorf("workqueue_depth = %v, want 2", d)
	}
	s := newScripted(func(key string, n int) (Result, error) {
		if key == "b" && n == 1 {
			return Done(), errors.New("transient")
		}
		return Done(), nil
	})
	l := NewLoop(LoopConfig{Name: "test", Controller: s, Queue: q, Workers: 1, Log: testkit.Logger(t), Metrics: m})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { l.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	testkit.EventuallyTrue(t, "a once, b twice", 0, func() bool { return s.count("a") == 1 && s.count("b") == 2 && l.Idle() })
	if n := testutil.ToFloat64(m.adds.WithLabelValues("test")); n != 3 {
		t.Errorf("workqueue_adds_total = %v, want 3 (a, b, b's retry)", n)
	}
	if n := testutil.ToFloat64(m.retries.WithLabelValues("test")); n != 1 {
		t.Errorf("workqueue_retries_total = %v, want 1", n)
	}
	if d := testutil.ToFloat64(m.depth.WithLabelValues("test")); d != 0 {
		t.Errorf("workqueue_depth = %v after the work, want 0", d)
	}
	count := func(result string) uint64 {
		h := &dtoHistogram{}
		h.read(t, m.reconcile.WithLabelValues("test", result).(prometheus.Histogram))
		return h.count
	}
	if ok, failed := count("success"), count("error"); ok != 2 || failed != 1 {
		t.Errorf("reconciles timed: %d success, %d error; want 2 and 1", ok, failed)
	}
}

// dtoHistogram reads a histogram's sample count.
type dtoHistogram struct{ count uint64 }

func (d *dtoHistogram) read(t *testing.T, h prometheus.Histogram) {
	t.Helper()
	var pb dto.Metric
	if err := h.Write(&pb); err != nil {
		t.Fatal(err)
	}
	d.count = pb.GetHistogram().GetSampleCount()
}
