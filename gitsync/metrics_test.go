package gitsync

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestSyncMetrics: each sync is counted and timed by its result.
func TestSyncMetrics(t *testing.T) {
	h := newHarness(t)
	reg := prometheus.NewRegistry()
	if err := h.syncer.RegisterMetrics(reg); err != nil {
		t.Fatal(err)
	}
	h.remote.commit("one", map[string]string{"a.yaml": configMap("a", "", "1")})
	for range 2 {
		if _, err := h.sync(); err != nil {
			t.Fatal(err)
		}
	}
	m := h.syncer.metrics
	if n := testutil.ToFloat64(m.syncs.WithLabelValues("Applied")); n != 1 {
		t.Errorf("Applied syncs: %v, want 1", n)
	}
	if n := testutil.ToFloat64(m.syncs.WithLabelValues("Unchanged")); n != 1 {
		t.Errorf("Unchanged syncs: %v, want 1", n)
	}
	if n := testutil.CollectAndCount(m.duration); n != 2 {
		t.Errorf("duration series: %d, want 2 (Applied, Unchanged)", n)
	}
	if testutil.ToFloat64(m.applied) == 0 {
		t.Error("the last applied time is not set")
	}
	if err := h.syncer.RegisterMetrics(reg); err == nil {
		t.Error("registering twice in one registry did not fail")
	}
}
