package main

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/internal/testkit"
	"github.com/flotilla-dev/flotilla/reconciler"
)

// A server that leads, loses the lead and leads again runs a new
// controllers' Manager each term, on one metrics registry (a Manager runs
// once: the second term killed the server before).
func TestManagerPerTerm(t *testing.T) {
	reg := prometheus.NewRegistry()
	cfg := reconciler.Config{Store: store.MemoryFor(t), Logger: testkit.Logger(t), Metrics: replacingRegisterer{reg}}
	for term := 1; term <= 3; term++ {
		m, err := reconciler.New(cfg)
		if err != nil {
			t.Fatalf("term %d: %v", term, err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		err = m.Run(ctx)
		cancel()
		if err != nil && ctx.Err() == nil {
			t.Fatalf("term %d: Run: %v", term, err)
		}
	}
	families, err := reg.Gather()
	if err != nil || len(families) == 0 {
		t.Fatalf("the registry after three terms: %d families, %v", len(families), err)
	}
}
