package store_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/cluster/store/storetest"
)

// BenchmarkStoreWriteThroughput is the API's write throughput: 16 writers
// creating distinct ConfigMaps at once, on one server (a one-voter log,
// raftlog.Solo, as `flotilla up` and a lone server run it) and on three
// (each store the state machine of a three-voter log over HTTPTransport on
// loopback with mutual TLS and the production timing). With three, the
// writers call the leader, as kubectl, gitsync, the controllers and the
// agents joined through the API VIP do; servers=3-spread spreads them over
// the leader and the followers, as agents that fell back to a follower
// are. writes/s is what the stores completed per second, cpu-us/write the
// process's CPU time (all servers) per write; the target is three servers
// at ≥ 50% of one.
//
//	go test -run '^$' -bench 'BenchmarkStoreWriteThroughput' -benchtime 3s ./cluster/store/
func BenchmarkStoreWriteThroughput(b *testing.B) {
	const writers = 16
	for _, c := range []struct {
		name    string
		servers int
		spread  bool
	}{{"servers=1", 1, false}, {"servers=3", 3, false}, {"servers=3-spread", 3, true}} {
		b.Run(c.name, func(b *testing.B) {
			stores := storetest.HTTPGroup(b, c.servers)
			ctx := context.Background()
			work := make(chan int)
			var stale atomic.Int64
			var firstStale sync.Once
			var wg sync.WaitGroup
			for w := range writers {
				s := stores[0] // the leader
				if c.spread {
					s = stores[w%len(stores)]
				}
				wg.Go(func() {
					for i := range work {
						_, err := s.Create(ctx, configMap(fmt.Sprintf("cm-%d", i), fmt.Sprint(i)))
						switch {
						case errors.Is(err, store.ErrStale):
							stale.Add(1)
							firstStale.Do(func() { b.Logf("create cm-%d: %v", i, err) })
						case err != nil:
							b.Errorf("create cm-%d: %v", i, err)
						}
					}
				})
			}
			cpu0 := cpuTime(b)
			start, i := time.Now(), 0
			for b.Loop() {
				work <- i
				i++
			}
			close(work)
			wg.Wait()
			done := float64(int64(i) - stale.Load())
			b.ReportMetric(done/time.Since(start).Seconds(), "writes/s")
			b.ReportMetric(float64((cpuTime(b)-cpu0).Microseconds())/done, "cpu-us/write")
			b.ReportMetric(float64(stale.Load()), "stale-errors")
		})
	}
}

// cpuTime is the CPU time (user and system) the process used so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
