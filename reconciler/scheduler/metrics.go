package scheduler

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
)

// Metrics are the scheduler's families, under kube-scheduler's names:
// scheduler_scheduling_attempt_duration_seconds (a pass's duration, once
// per pod it placed or could not place, by result),
// scheduler_pod_scheduling_duration_seconds (a pod's creation to its
// binding) and scheduler_pending_pods. nil Metrics record nothing.
type Metrics struct {
	attempt *prometheus.HistogramVec
	e2e     prometheus.Histogram
	pending *prometheus.GaugeVec
}

// NewMetrics registers the scheduler's families in reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		attempt: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "scheduler_scheduling_attempt_duration_seconds",
			Help:    "Scheduling attempt latency in seconds (planning and binding of the pass), by result.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 15),
		}, []string{"result", "profile"}),
		e2e: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "scheduler_pod_scheduling_duration_seconds",
			Help:    "Latency from a pod's creation to its binding, in seconds (creation times have one-second resolution).",
			Buckets: prometheus.ExponentialBuckets(0.01, 2, 15),
		}),
		pending: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "scheduler_pending_pods",
			Help: "Number of pending pods at the last scheduling pass, by queue.",
		}, []string{"queue"}),
	}
	reg.MustRegister(m.attempt, m.e2e, m.pending)
	return m
}

// passStats is what one pass did, for its metrics.
type passStats struct {
	start          time.Time
	pending        int
	bound, unsched int
	failedWrites   int
}

func (m *Metrics) boundPod(p *corev1.Pod, now time.Time) {
	if m != nil && !p.CreationTimestamp.IsZero() {
		m.e2e.Observe(max(now.Sub(p.CreationTimestamp.Time), 0).Seconds())
	}
}

func (m *Metrics) pass(s passStats) {
	if m == nil {
		return
	}
	m.pending.WithLabelValues("active").Set(float64(s.pending))
	took := time.Since(s.start).Seconds()
	for result, n := range map[string]int{"scheduled": s.bound, "unschedulable": s.unsched, "error": s.failedWrites} {
		h := m.attempt.WithLabelValues(result, "default-scheduler")
		for range n {
			h.Observe(took)
		}
	}
}
