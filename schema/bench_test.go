package schema

import (
	"fmt"
	"runtime"
	"runtime/metrics"
	"strings"
	"syscall"
	"testing"
	"testing/fstest"
	"time"
)

// benchRepo is a repository of n objects made by one, one file each.
func benchRepo(n int, one func(i int) string) fstest.MapFS {
	fsys := fstest.MapFS{}
	for i := 0; i < n; i++ {
		fsys[fmt.Sprintf("objs/%05d.yaml", i)] = &fstest.MapFile{Data: []byte(one(i))}
	}
	return fsys
}

// benchConfigMap is a small ConfigMap with a 200-byte value, as in issue 9.
func benchConfigMap(i int) string {
	return fmt.Sprintf("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm-%d\n  namespace: default\n  labels: {app: bench}\ndata:\n  value: %q\n",
		i, strings.Repeat("x", 200))
}

// benchDeployment is a typical small Deployment.
func benchDeployment(i int) string {
	return fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata:
  name: web-%d
  namespace: default
  labels: {app: web-%d}
spec:
  replicas: 2
  selector:
    matchLabels: {app: web-%d}
  template:
    metadata:
      labels: {app: web-%d, tier: frontend}
    spec:
      containers:
      - name: httpd
        image: localhost/busybox:latest
        command: ["httpd", "-f", "-p", "8080"]
        ports:
        - {containerPort: 8080, name: http}
        readinessProbe:
          httpGet: {path: /, port: http}
        resources:
          requests: {cpu: 100m, memory: 16Mi}
`, i, i, i, i)
}

// BenchmarkLoad reports documents per second, CPU time and the peak heap
// of validating a commit of 10,000 ConfigMaps (issue 9's commit) or 1,000
// Deployments, each in a file of its own:
//
//	go test -run '^$' -bench BenchmarkLoad -benchtime 3x ./schema/
func BenchmarkLoad(b *testing.B) {
	for _, c := range []struct {
		name string
		n    int
		one  func(int) string
	}{
		{"configmaps-10000", 10000, benchConfigMap},
		{"deployments-1000", 1000, benchDeployment},
	} {
		b.Run(c.name, func(b *testing.B) {
			v := validator(b)
			fsys := benchRepo(c.n, c.one)
			runtime.GC()
			peak := newPeakHeap()
			b.ResetTimer()
			start, cpu0 := time.Now(), cpuTime()
			for i := 0; i < b.N; i++ {
				ms, ps := v.Load(fsys, ".")
				if err := ps.Err(); err != nil {
					b.Fatal(err)
				}
				if len(ms) != c.n {
					b.Fatalf("%d manifests, want %d", len(ms), c.n)
				}
			}
			b.StopTimer()
			elapsed := time.Since(start)
			b.ReportMetric(float64(c.n*b.N)/elapsed.Seconds(), "docs/s")
			b.ReportMetric((cpuTime()-cpu0).Seconds()/float64(b.N), "cpu-s/op")
			b.ReportMetric(float64(peak.stop())/(1<<20), "peak-heap-MiB")
		})
	}
}

// cpuTime is the CPU time (user and system) this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// peakHeap samples the heap in use until stop.
type peakHeap struct {
	done chan struct{}
	max  chan uint64
}

func newPeakHeap() *peakHeap {
	p := &peakHeap{done: make(chan struct{}), max: make(chan uint64, 1)}
	go func() {
		s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
		var max uint64
		t := time.NewTicker(2 * time.Millisecond)
		defer t.Stop()
		for {
			metrics.Read(s)
			if v := s[0].Value.Uint64(); v > max {
				max = v
			}
			select {
			case <-p.done:
				p.max <- max
				return
			case <-t.C:
			}
		}
	}()
	return p
}

func (p *peakHeap) stop() uint64 {
	close(p.done)
	return <-p.max
}
