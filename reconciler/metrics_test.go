package reconciler_test

import (
	"bytes"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"

	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/internal/promtest"
	"github.com/flotilla-dev/flotilla/internal/testkit"
	"github.com/flotilla-dev/flotilla/reconciler"
)

// TestManagerMetrics: a manager given a registry fills the work-queue,
// reconcile and scheduling families as a Deployment rolls out.
func TestManagerMetrics(t *testing.T) {
	st := store.MemoryFor(t)
	reg := prometheus.NewRegistry()
	startKubelets(t, st, 2)
	startManagerWith(t, reconciler.Config{Store: st, Logger: testLogger(t), ResyncPeriod: 2 * time.Second, MaxBackoff: time.Second, Metrics: reg})
	create(t, st, newDeployment("web", 3, "nginx:1"))
	testkit.EventuallyWhy(t, "3 running pods", time.Minute, func() string { return converged(t, st, "web", 3) })
	text := scrape(t, reg)
	for _, fam := range []string{"workqueue_depth", "workqueue_adds_total", "workqueue_queue_duration_seconds", "workqueue_work_duration_seconds",
		"flotilla_controller_reconcile_duration_seconds", "scheduler_scheduling_attempt_duration_seconds", "scheduler_pod_scheduling_duration_seconds", "scheduler_pending_pods"} {
		if !promtest.HasFamily(text, fam) {
			t.Errorf("no %s", fam)
		}
	}
	if n, ok := promtest.Value(text, "scheduler_pod_scheduling_duration_seconds_count", nil); !ok || n < 3 {
		t.Errorf("scheduler_pod_scheduling_duration_seconds_count = %v, want >= 3", n)
	}
	if n, ok := promtest.Value(text, "scheduler_scheduling_attempt_duration_seconds_count", map[string]string{"result": "scheduled"}); !ok || n < 3 {
		t.Errorf("scheduled attempts = %v, want >= 3", n)
	}
	if n, ok := promtest.Value(text, "workqueue_adds_total", map[string]string{"name": "deployment"}); !ok || n < 1 {
		t.Errorf("deployment queue adds = %v", n)
	}
	if n, ok := promtest.Value(text, "flotilla_controller_reconcile_duration_seconds_count", map[string]string{"controller": "replicaset", "result": "success"}); !ok || n < 1 {
		t.Errorf("replicaset reconciles timed = %v", n)
	}
}

// scrape is reg in the text format.
func scrape(t *testing.T, reg *prometheus.Registry) string {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	enc := expfmt.NewEncoder(&buf, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, mf := range mfs {
		if err := enc.Encode(mf); err != nil {
			t.Fatal(err)
		}
	}
	return buf.String()
}
