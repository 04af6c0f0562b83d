package store

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/flotilla-dev/flotilla/cluster/raftlog"
	"github.com/flotilla-dev/flotilla/internal/testkit"
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
			stores := []*Badger{openOneVoter(b)}
			if c.servers > 1 {
				stores = openHTTPGroup(b, c.servers)
			}
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
						_, err := s.Create(ctx, configMap("ns", fmt.Sprintf("cm-%d", i), map[string]string{"i": fmt.Sprint(i)}))
						switch {
						case errors.Is(err, ErrStale):
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

// openHTTPGroup starts n Replicated stores on disk, each the state machine
// of a Node of one Raft group over raftlog.HTTPTransport: HTTPS on
// loopback, mutual TLS, the Config's default timing. It returns once every
// server knows the leader, the leader's store first; they stop when b ends.
func openHTTPGroup(b *testing.B, n int) []*Badger {
	b.Helper()
	serve, send := benchTLS(b)
	var peers []raftlog.Peer
	handlers := make([]atomic.Pointer[raftlog.Node], n)
	for i := range n {
		mux := http.NewServeMux()
		mux.HandleFunc(raftlog.MessagesPath, func(w http.ResponseWriter, r *http.Request) {
			node := handlers[i].Load()
			if node == nil {
				http.Error(w, "not started", http.StatusServiceUnavailable)
				return
			}
			raftlog.Handler(node).ServeHTTP(w, r)
		})
		srv := httptest.NewUnstartedServer(mux)
		srv.TLS = serve
		srv.Config.ErrorLog = log.New(io.Discard, "", 0)
		srv.StartTLS()
		b.Cleanup(srv.Close)
		peers = append(peers, raftlog.Peer{ID: uint64(i + 1), Addr: srv.Listener.Addr().String()})
	}
	stores := make([]*Badger, n)
	nodes := make([]*raftlog.Node, n)
	for i := range n {
		s := openDisk(b, Config{Replicated: true})
		logger := testkit.LoggerAt(b, slog.LevelWarn).With("node", i+1)
		tr := raftlog.NewHTTPTransport(uint64(i+1), send, logger)
		node, err := raftlog.Start(raftlog.Config{ID: uint64(i + 1), Dir: filepath.Join(b.TempDir(), "raft"), Bootstrap: peers,
			Transport: tr, StateMachine: s, Logger: logger})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { node.Stop(); tr.Close() }) // (before the store's Close)
		handlers[i].Store(node)
		s.Replicate(node)
		stores[i], nodes[i] = s, node
	}
	testkit.EventuallyWhy(b, "one leader", 20*time.Second, func() string {
		lead := nodes[0].Status().Leader
		for _, node := range nodes {
			if st := node.Status(); lead == 0 || st.Leader != lead {
				return fmt.Sprintf("node %d sees leader %d", st.ID, st.Leader)
			}
		}
		return ""
	})
	lead := int(nodes[0].Status().Leader) - 1
	stores[0], stores[lead] = stores[lead], stores[0]
	return stores
}

// benchTLS is the mutual TLS of servers' peer traffic: one certificate
// for 127.0.0.1 that every server serves and presents as a client.
func benchTLS(b *testing.B) (serve, send *tls.Config) {
	pki := testkit.NewPKI(b)
	return pki.Server(), pki.Client()
}
