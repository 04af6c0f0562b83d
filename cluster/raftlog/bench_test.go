package raftlog

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync/atomic"
	"testing"
	"time"
)

// benchSM is a state machine that costs nothing: the benchmarks measure
// the log (WAL sync, Raft round trips, the loop), not a store.
type benchSM struct{ applied atomic.Uint64 }

func (s *benchSM) Apply(index, term uint64, data []byte) any { s.applied.Store(index); return nil }
func (s *benchSM) AppliedIndex() uint64                      { return s.applied.Load() }
func (s *benchSM) Snapshot(w io.Writer) error {
	_, err := w.Write(binary.BigEndian.AppendUint64(nil, s.applied.Load()))
	return err
}
func (s *benchSM) Restore(r io.Reader, index uint64) error {
	_, err := io.Copy(io.Discard, r)
	s.applied.Store(index)
	return err
}

func benchPropose(b *testing.B, ids ...uint64) {
	c := newCluster(b, func(cfg *Config) { cfg.StateMachine = &benchSM{} }, ids...)
	n := c.node(c.leader())
	data := make([]byte, 256)
	propose(b, n, "warm up")
	ctx := context.Background()
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := n.Propose(ctx, data); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkProposeOneVoter: one Propose at a time on a one-voter group;
// each is one WAL fdatasync.
func BenchmarkProposeOneVoter(b *testing.B) { benchPropose(b, 1) }

// BenchmarkProposeThreeVoters: one Propose at a time on the leader of a
// three-voter group on a MemNetwork; each is a WAL sync on the leader, a
// round trip to the followers and their syncs.
func BenchmarkProposeThreeVoters(b *testing.B) { benchPropose(b, 1, 2, 3) }

// failoverTry is how long BenchmarkLeaderFailover gives one write: a
// proposal forwarded to the crashed leader is lost and never answered, so
// a try must end for the next to be made. It bounds what the measure may
// overstate the failover by.
const failoverTry = 200 * time.Millisecond

// BenchmarkLeaderFailover is the time from the leader's crash until a
// write is accepted again, in a three-voter group over HTTPTransport on
// loopback (mutual TLS, real WALs) with the production timing (the Config
// defaults: 100 ms ticks, elections after 1-2 s). Each iteration crashes
// the leader, proposes on a survivor (each try given failoverTry) until
// one is applied there, then restarts the crashed server from its Dir and
// waits until it has caught up, untimed. failover-ms is the median,
// failover-max-ms the slowest.
//
//	go test -run '^$' -bench 'BenchmarkLeaderFailover' -benchtime 5x ./cluster/raftlog/
func BenchmarkLeaderFailover(b *testing.B) {
	g := newHTTPGroup(b, nil, 1, 2, 3)
	g.leader()
	for _, id := range g.running() {
		if _, _, err := tryPropose(g.nodes[id], fmt.Sprintf("warm up %d", id)); err != nil {
			b.Fatal(err)
		}
	}
	var took []time.Duration
	for b.Loop() {
		b.StopTimer()
		lead := g.leader()
		survivors := slices.DeleteFunc(g.running(), func(id uint64) bool { return id == lead })
		n := g.nodes[survivors[len(took)%len(survivors)]] // each survivor in turn
		b.StartTimer()
		start := time.Now()
		g.crash(lead)
		if err := proposeUntilAccepted(n, []byte(fmt.Sprint("after crash ", len(took))), 20*time.Second); err != nil {
			b.Fatalf("leader %d crashed: %v", lead, err)
		}
		took = append(took, time.Since(start))
		b.StopTimer()
		g.start(lead)
		g.caughtUp(lead)
		b.StartTimer()
	}
	slices.Sort(took)
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	b.ReportMetric(ms(took[(len(took)-1)/2]), "failover-ms")
	b.ReportMetric(ms(took[len(took)-1]), "failover-max-ms")
}

// proposeUntilAccepted proposes data on n until a try (of failoverTry) is
// applied there, for at most limit. A try that times out may still commit
// later; for benchSM that does not matter.
func proposeUntilAccepted(n *Node, data []byte, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), failoverTry)
		_, _, err := n.Propose(ctx, data)
		cancel()
		switch {
		case err == nil:
			return nil
		case errors.Is(err, context.DeadlineExceeded), errors.Is(err, ErrNoLeader):
			// Lost with the leader, or the election is still going on.
		case errors.Is(err, ErrProposalDropped):
			time.Sleep(testTick) // refused at once: do not spin
		default:
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no write accepted within %s: %w", limit, err)
		}
	}
}
