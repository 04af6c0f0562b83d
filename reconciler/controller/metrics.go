package controller

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/util/workqueue"
)

// Metrics are the controllers' families: client-go's work-queue metrics
// under Kubernetes' names (workqueue_depth, workqueue_adds_total,
// workqueue_queue_duration_seconds, workqueue_work_duration_seconds,
// workqueue_retries_total, workqueue_unfinished_work_seconds,
// workqueue_longest_running_processor_seconds, by queue name) and each
// reconcile's latency by controller and result. One Metrics per
// registry; nil Metrics record nothing.
type Metrics struct {
	depth      *prometheus.GaugeVec
	adds       *prometheus.CounterVec
	latency    *prometheus.HistogramVec
	work       *prometheus.HistogramVec
	unfinished *prometheus.GaugeVec
	longest    *prometheus.GaugeVec
	retries    *prometheus.CounterVec
	reconcile  *prometheus.HistogramVec
}

var _ workqueue.MetricsProvider = (*Metrics)(nil)

// NewMetrics registers the families in reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	buckets := prometheus.ExponentialBuckets(1e-6, 10, 10) // client-go's: 1µs to 1000s
	name := []string{"name"}
	m := &Metrics{
		depth: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "workqueue_depth",
			Help: "Current depth of workqueue"}, name),
		adds: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "workqueue_adds_total",
			Help: "Total number of adds handled by workqueue"}, name),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "workqueue_queue_duration_seconds",
			Help: "How long in seconds an item stays in workqueue before being requested.", Buckets: buckets}, name),
		work: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "workqueue_work_duration_seconds",
			Help: "How long in seconds processing an item from workqueue takes.", Buckets: buckets}, name),
		unfinished: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "workqueue_unfinished_work_seconds",
			Help: "How many seconds of work has done that is in progress and hasn't been observed by work_duration."}, name),
		longest: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "workqueue_longest_running_processor_seconds",
			Help: "How many seconds has the longest running processor for workqueue been running."}, name),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "workqueue_retries_total",
			Help: "Total number of retries handled by workqueue"}, name),
		reconcile: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "flotilla_controller_reconcile_duration_seconds",
			Help:    "Duration of one reconcile of a key in seconds, by controller and result (success, error, stalled, panic).",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 12)}, []string{"controller", "result"}),
	}
	reg.MustRegister(m.depth, m.adds, m.latency, m.work, m.unfinished, m.longest, m.retries, m.reconcile)
	return m
}

// provider is m as the queue's metrics provider; nil for nil m (the
// queue then records nothing and runs no metrics goroutine).
func (m *Metrics) provider() workqueue.MetricsProvider {
	if m == nil {
		return nil
	}
	return m
}

func (m *Metrics) observe(controller, result string, took time.Duration) {
	if m != nil {
		m.reconcile.WithLabelValues(controller, result).Observe(took.Seconds())
	}
}

// The workqueue.MetricsProvider methods, one series per queue name.

func (m *Metrics) NewDepthMetric(q string) workqueue.GaugeMetric  { return m.depth.WithLabelValues(q) }
func (m *Metrics) NewAddsMetric(q string) workqueue.CounterMetric { return m.adds.WithLabelValues(q) }
func (m *Metrics) NewLatencyMetric(q string) workqueue.HistogramMetric {
	return m.latency.WithLabelValues(q)
}
func (m *Metrics) NewWorkDurationMetric(q string) workqueue.HistogramMetric {
	return m.work.WithLabelValues(q)
}
func (m *Metrics) NewUnfinishedWorkSecondsMetric(q string) workqueue.SettableGaugeMetric {
	return m.unfinished.WithLabelValues(q)
}
func (m *Metrics) NewLongestRunningProcessorSecondsMetric(q string) workqueue.SettableGaugeMetric {
	return m.longest.WithLabelValues(q)
}
func (m *Metrics) NewRetriesMetric(q string) workqueue.CounterMetric {
	return m.retries.WithLabelValues(q)
}
