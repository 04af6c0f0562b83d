package raftlog

import (
	"context"
	"encoding/binary"
	"io"
	"sync/atomic"
	"testing"
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
