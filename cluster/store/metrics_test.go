package store

import (
	"context"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestRegisterMetrics(t *testing.T) {
	s := MemoryFor(t)
	reg := prometheus.NewRegistry()
	if err := s.RegisterMetrics(reg); err != nil {
		t.Fatal(err)
	}
	gauge := func(name string) float64 {
		t.Helper()
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() == name {
				return mf.GetMetric()[0].GetGauge().GetValue()
			}
		}
		t.Fatalf("no %s gathered", name)
		return 0
	}
	before := gauge("flotilla_store_revision")
	gauge("apiserver_storage_size_bytes")
	if _, err := s.Create(context.Background(), pod("default", "m", nil, "")); err != nil {
		t.Fatal(err)
	}
	if after := gauge("flotilla_store_revision"); after != before+1 || after != float64(s.Revision()) {
		t.Errorf("revision metric %v after a create, %v before (store at %d)", after, before, s.Revision())
	}
	if err := s.RegisterMetrics(reg); err == nil {
		t.Error("registering twice in one registry did not fail")
	}
}
