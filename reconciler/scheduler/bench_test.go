package scheduler

import (
	"testing"
)

// BenchmarkSchedule10kPods1kNodes binds 10,000 pending pods to 1,000 nodes
// in one pass and reports pods/s.
func BenchmarkSchedule10kPods1kNodes(b *testing.B) {
	pods, nodes := SyntheticCluster(10000, 1000)
	b.ReportAllocs()
	b.ResetTimer()
	bound := 0
	for i := 0; i < b.N; i++ {
		plan := Schedule(pods, nodes, nil)
		if len(plan.Bindings) != len(pods) {
			b.Fatalf("bound %d of %d pods", len(plan.Bindings), len(pods))
		}
		bound += len(plan.Bindings)
	}
	b.ReportMetric(float64(bound)/b.Elapsed().Seconds(), "pods/s")
}

func TestThroughput(t *testing.T) {
	if testing.Short() {
		t.Skip("timing")
	}
	got := Throughput(10000, 1000)
	if got <= 0 {
		t.Fatalf("Throughput = %v", got)
	}
	t.Logf("Throughput(10000, 1000) = %.0f pods/s", got)
}
