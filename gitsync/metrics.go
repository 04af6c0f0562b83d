package gitsync

import (
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// syncMetrics count and time syncs by their result.
type syncMetrics struct {
	duration *prometheus.HistogramVec
	syncs    *prometheus.CounterVec
	applied  prometheus.Gauge
}

// RegisterMetrics adds the syncer's families to reg: how long each sync
// took and how it ended (flotilla_gitsync_duration_seconds and
// flotilla_gitsync_syncs_total by result: Applied, Unchanged, Refused,
// FetchFailed, Error), and when a commit was last applied. Call it before
// Run.
func (s *Syncer) RegisterMetrics(reg prometheus.Registerer) error {
	m := &syncMetrics{
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "flotilla_gitsync_duration_seconds",
			Help:    "Duration of Git syncs (resolve, fetch, validate, apply) in seconds, by result.",
			Buckets: prometheus.ExponentialBuckets(0.01, 2.5, 12),
		}, []string{"result"}),
		syncs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flotilla_gitsync_syncs_total",
			Help: "Git syncs finished, by result.",
		}, []string{"result"}),
		applied: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "flotilla_gitsync_last_applied_timestamp_seconds",
			Help: "When a sync last wrote a commit to the store (Unix seconds); 0: not since the start.",
		}),
	}
	if err := errors.Join(reg.Register(m.duration), reg.Register(m.syncs), reg.Register(m.applied)); err != nil {
		return err
	}
	s.metrics = m
	return nil
}

// observe records one sync.
func (m *syncMetrics) observe(result string, err error, took time.Duration) {
	if m == nil {
		return
	}
	if result == "" || (err != nil && result == "Applied") {
		result = "Error"
	}
	m.duration.WithLabelValues(result).Observe(took.Seconds())
	m.syncs.WithLabelValues(result).Inc()
	if result == "Applied" {
		m.applied.SetToCurrentTime()
	}
}
