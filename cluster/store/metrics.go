package store

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// RegisterMetrics adds the store's families to reg: its size on disk
// (kube-apiserver's apiserver_storage_size_bytes, Badger's LSM tree and
// value log as Badger last measured them) and its revision (the newest
// resourceVersion). Both are read at scrape time; neither touches the disk.
func (s *Badger) RegisterMetrics(reg prometheus.Registerer) error {
	size := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name:        "apiserver_storage_size_bytes",
		Help:        "Size of the storage database (Badger's LSM tree and value log) in bytes.",
		ConstLabels: prometheus.Labels{"storage_cluster_id": "flotilla"},
	}, func() float64 {
		lsm, vlog := s.db.Size()
		return float64(lsm + vlog)
	})
	rev := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "flotilla_store_revision",
		Help: "The store's current revision (the newest resourceVersion).",
	}, func() float64 { return float64(s.Revision()) })
	return errors.Join(reg.Register(size), reg.Register(rev))
}
