package gossip

import (
	"fmt"
	"testing"
	"time"
)

// BenchmarkFailureDetection measures how long the surviving members take to
// see a killed member (Shutdown without Leave) as Failed, in clusters of 3
// and 5 members over loopback. It reports seconds until the first survivor
// saw it (s/first) and until all did (s/all). Each iteration builds a fresh
// cluster; run with -benchtime=5x or so for an average:
//
//	go test -run '^$' -bench FailureDetection -benchtime 5x ./cluster/gossip
func BenchmarkFailureDetection(b *testing.B) {
	for _, n := range []int{3, 5} {
		b.Run(fmt.Sprintf("members=%d", n), func(b *testing.B) {
			var first, all time.Duration
			for range b.N {
				f, a := measureFailureDetection(b, n)
				first += f
				all += a
			}
			b.ReportMetric(first.Seconds()/float64(b.N), "s/first")
			b.ReportMetric(all.Seconds()/float64(b.N), "s/all")
			b.ReportMetric(0, "ns/op") // the wall time of an iteration means nothing here
		})
	}
}

// measureFailureDetection kills the last of n members and returns when the
// first and the last survivor saw it Failed.
func measureFailureDetection(b *testing.B, n int) (first, all time.Duration) {
	b.StopTimer()
	key := newKey(b)
	ms := startCluster(b, n, key)
	victim := ms[n-1]
	name := victim.Local().Name
	survivors := ms[:n-1]
	seen := make(chan time.Duration, len(survivors))
	start := make(chan time.Time)
	for _, s := range survivors {
		ch, cancel := s.Subscribe()
		b.Cleanup(cancel)
		go func() {
			t0 := <-start
			for ev := range ch {
				if ev.Member.Name == name && (ev.Type == Failed || ev.Type == Left) {
					seen <- time.Since(t0)
					return
				}
			}
		}()
	}
	b.StartTimer()
	t0 := time.Now()
	_ = victim.Shutdown()
	for range survivors {
		start <- t0
	}
	timeout := time.After(60 * time.Second)
	for i := range survivors {
		select {
		case d := <-seen:
			if i == 0 {
				first = d
			}
			all = d
		case <-timeout:
			b.Fatalf("members=%d: %s not seen Failed by every survivor within 60 s", n, name)
		}
	}
	b.StopTimer()
	for _, m := range survivors {
		_ = m.Shutdown()
	}
	b.Logf("members=%d: %s killed; first survivor saw it Failed after %s, all after %s",
		n, name, first.Round(time.Millisecond), all.Round(time.Millisecond))
	return first, all
}
