package store

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/flotilla-dev/flotilla/cluster/raftlog"
)

func BenchmarkCreate(b *testing.B) {
	s := MemoryFor(b)
	ctx := context.Background()
	i := 0
	for b.Loop() {
		if _, err := s.Create(ctx, pod("ns", fmt.Sprintf("p%d", i), map[string]string{"app": "web"}, "n1")); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

func BenchmarkUpdate(b *testing.B) {
	s := MemoryFor(b)
	ctx := context.Background()
	p := pod("ns", "p", map[string]string{"app": "web"}, "n1")
	if _, err := s.Create(ctx, p); err != nil {
		b.Fatal(err)
	}
	i := 0
	for b.Loop() {
		p.Labels["i"] = fmt.Sprint(i)
		if _, err := s.Update(ctx, p); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

func BenchmarkUpdateNoop(b *testing.B) {
	s := MemoryFor(b)
	ctx := context.Background()
	p := pod("ns", "p", map[string]string{"app": "web"}, "n1")
	if _, err := s.Create(ctx, p); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := s.Update(ctx, p); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkList(b *testing.B) {
	for _, n := range []int{100, 1000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			s := MemoryFor(b)
			ctx := context.Background()
			for i := range n {
				node := fmt.Sprintf("n%d", i%10)
				if _, err := s.Create(ctx, pod(fmt.Sprintf("ns%d", i%5), fmt.Sprintf("p%d", i), nil, node)); err != nil {
					b.Fatal(err)
				}
			}
			for b.Loop() {
				objs, _, err := s.List(ctx, "pods", ListOptions{FieldSelector: "spec.nodeName=n3"})
				if err != nil || len(objs) != n/10 {
					b.Fatalf("%d objects, err %v", len(objs), err)
				}
			}
		})
	}
}

// BenchmarkCreateWatched is Create with 100 watchers draining their events.
func BenchmarkCreateWatched(b *testing.B) {
	s := MemoryFor(b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for range 100 {
		w, err := s.Watch(ctx, "pods", ListOptions{}, 0)
		if err != nil {
			b.Fatal(err)
		}
		go func() {
			for range w {
			}
		}()
	}
	i := 0
	for b.Loop() {
		if _, err := s.Create(ctx, pod("ns", fmt.Sprintf("p%d", i), nil, "")); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// The benchmarks on disk measure what a user gets: a store in a temporary
// directory, every commit fsynced (the default, "fsync") or not ("nosync").
//
//	go test -run '^$' -bench 'BenchmarkDisk' -benchtime 200x ./cluster/store/

// syncModes are the ways a store on disk makes its writes durable: its own
// fsync, none, or (raft) as the state machine of a one-voter Raft group, the
// log fsynced and the store not: what `flotilla up` runs.
var syncModes = []struct {
	name string
	open func(b *testing.B) *Badger
}{
	{"fsync", func(b *testing.B) *Badger { return openDisk(b, Config{}) }},
	{"nosync", func(b *testing.B) *Badger { return openDisk(b, Config{NoSync: true}) }},
	{"raft", openOneVoter},
}

func openDisk(b *testing.B, cfg Config) *Badger {
	b.Helper()
	cfg.Dir, cfg.Logger = filepath.Join(b.TempDir(), "db"), slog.New(slog.DiscardHandler)
	s, err := Open(cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.Close() })
	return s
}

// openOneVoter is a Replicated store on disk, the state machine of a Raft
// group of one.
func openOneVoter(b *testing.B) *Badger {
	b.Helper()
	s := openDisk(b, Config{Replicated: true})
	n, err := raftlog.Start(raftlog.Config{ID: 1, Dir: filepath.Join(b.TempDir(), "raft"), Bootstrap: []raftlog.Peer{{ID: 1}},
		Transport: raftlog.Solo{}, StateMachine: s, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(n.Stop) // (before the store's Close: cleanups run last first)
	s.Replicate(n)
	for n.Status().Leader == 0 {
		time.Sleep(time.Millisecond)
	}
	return s
}

// reportLatency reports the median and the 99th percentile of lat.
func reportLatency(b *testing.B, lat []time.Duration, unit string) {
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	ms := func(q float64) float64 {
		return float64(lat[min(len(lat)-1, int(q*float64(len(lat))))]) / float64(time.Millisecond)
	}
	b.ReportMetric(ms(0.50), "p50-ms"+unit)
	b.ReportMetric(ms(0.99), "p99-ms"+unit)
}

// BenchmarkDiskCreate is the latency of one Create (an API write).
func BenchmarkDiskCreate(b *testing.B) {
	for _, mode := range syncModes {
		b.Run(mode.name, func(b *testing.B) {
			s := mode.open(b)
			ctx := context.Background()
			var lat []time.Duration
			i := 0
			for b.Loop() {
				start := time.Now()
				if _, err := s.Create(ctx, pod("ns", fmt.Sprintf("p%d", i), map[string]string{"app": "web"}, "n1")); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(start))
				i++
			}
			reportLatency(b, lat, "")
		})
	}
}

// BenchmarkDiskUpdate is the latency of one Update (an API write, a
// controller's status).
func BenchmarkDiskUpdate(b *testing.B) {
	for _, mode := range syncModes {
		b.Run(mode.name, func(b *testing.B) {
			s := mode.open(b)
			ctx := context.Background()
			p := pod("ns", "p", map[string]string{"app": "web"}, "n1")
			if _, err := s.Create(ctx, p); err != nil {
				b.Fatal(err)
			}
			var lat []time.Duration
			i := 0
			for b.Loop() {
				p.Labels["i"] = fmt.Sprint(i)
				start := time.Now()
				if _, err := s.Update(ctx, p); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(start))
				i++
			}
			reportLatency(b, lat, "")
		})
	}
}

// BenchmarkDiskBind10kPods is the store's part of scheduling: 10,000
// pending pods bound in Txns of 500 pod updates (spec.nodeName set), with
// a watcher of pods draining the events, as the scheduler's cache and the
// agents do. pods/s is what the scheduler can reach at most.
func BenchmarkDiskBind10kPods(b *testing.B) {
	const pods, batch = 10000, 500
	for _, mode := range syncModes {
		b.Run(mode.name, func(b *testing.B) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var lat []time.Duration
			for b.Loop() {
				b.StopTimer()
				s := mode.open(b)
				var pending []*corev1.Pod
				if _, err := s.Txn(ctx, func(tx Tx) error {
					for i := range pods {
						p, err := tx.Create(pod("ns", fmt.Sprintf("p%05d", i), map[string]string{"app": "web"}, ""))
						if err != nil {
							return err
						}
						pending = append(pending, p.(*corev1.Pod))
					}
					return nil
				}); err != nil {
					b.Fatal(err)
				}
				w, err := s.Watch(ctx, "pods", ListOptions{}, 0)
				if err != nil {
					b.Fatal(err)
				}
				go func() {
					for range w {
					}
				}()
				b.StartTimer()
				for from := 0; from < pods; from += batch {
					start := time.Now()
					_, err := s.Txn(ctx, func(tx Tx) error {
						for i, p := range pending[from : from+batch] {
							p.Spec.NodeName = fmt.Sprintf("n%d", i%10)
							if _, err := tx.Update(p); err != nil {
								return err
							}
						}
						return nil
					})
					if err != nil {
						b.Fatal(err)
					}
					lat = append(lat, time.Since(start))
				}
			}
			b.ReportMetric(float64(pods*b.N)/b.Elapsed().Seconds(), "pods/s")
			reportLatency(b, lat, "/txn")
		})
	}
}

// BenchmarkDiskTxn10kConfigMaps is the store's part of applying the
// issue's big commit: one Txn creating 10,000 ConfigMaps of 200-byte
// values (past one Badger transaction: through the journal). stage-ms is
// the time in the Txn's function (decoding, checks, encoding), commit-ms
// the rest (the journal, the apply, the publish).
func BenchmarkDiskTxn10kConfigMaps(b *testing.B) {
	const n = 10000
	value := strings.Repeat("v", 200)
	for _, mode := range syncModes {
		b.Run(mode.name, func(b *testing.B) {
			s := mode.open(b)
			ctx := context.Background()
			var stage, total time.Duration
			round := 0
			for b.Loop() {
				ns := fmt.Sprintf("ns%d", round)
				start := time.Now()
				_, err := s.Txn(ctx, func(tx Tx) error {
					for i := range n {
						if _, err := tx.Create(configMap(ns, fmt.Sprintf("cm-%05d", i), map[string]string{"v": value})); err != nil {
							return err
						}
					}
					stage += time.Since(start)
					return nil
				})
				if err != nil {
					b.Fatal(err)
				}
				total += time.Since(start)
				round++
			}
			b.ReportMetric(float64(stage.Milliseconds())/float64(round), "stage-ms")
			b.ReportMetric(float64((total-stage).Milliseconds())/float64(round), "commit-ms")
			b.ReportMetric(float64(n*round)/total.Seconds(), "objects/s")
		})
	}
}
