package raftlog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/flotilla-dev/flotilla/internal/testkit"
)

// testSM is the StateMachine of the tests: the applied data, in order. It
// stands for a durable store: a test that reuses it across a restart has
// a store that kept everything; one that gives a new testSM, a store that
// lost everything.
type testSM struct {
	mu       sync.Mutex
	applied  uint64
	items    []string
	restores int
	// skipped counts Apply calls at or below the applied index (there
	// must be none: the log skips them).
	skipped int
}

type smSnapshot struct {
	Applied uint64
	Items   []string
}

func (s *testSM) Apply(index, term uint64, data []byte) any {
	s.mu.Lock()
	defer s.mu.Unlock()
	if index <= s.applied {
		s.skipped++
		return nil
	}
	s.items = append(s.items, string(data))
	s.applied = index
	return len(s.items)
}

func (s *testSM) AppliedIndex() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.applied
}

func (s *testSM) Snapshot(w io.Writer) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return json.NewEncoder(w).Encode(smSnapshot{Applied: s.applied, Items: s.items})
}

func (s *testSM) Restore(r io.Reader, index uint64) error {
	var snap smSnapshot
	if err := json.NewDecoder(r).Decode(&snap); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.items, s.applied = snap.Items, index
	s.restores++
	return nil
}

func (s *testSM) Items() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.items)
}

func (s *testSM) Restores() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.restores
}

// Timing of the test groups: 20 ms ticks, elections after 200-400 ms.
const (
	testTick     = 20 * time.Millisecond
	testElection = 10
)

// cluster is a group of Nodes on a MemNetwork, each with its own Dir and
// testSM, that tests stop, restart and cut.
type cluster struct {
	t     testing.TB
	net   *MemNetwork
	peers []Peer
	mod   func(*Config)

	mu    sync.Mutex
	dirs  map[uint64]string
	sms   map[uint64]*testSM
	nodes map[uint64]*Node
}

// newCluster bootstraps a group of the voters ids; mod (may be nil)
// adjusts every Config.
func newCluster(t testing.TB, mod func(*Config), ids ...uint64) *cluster {
	t.Helper()
	c := &cluster{
		t: t, net: NewMemNetwork(), mod: mod,
		dirs: map[uint64]string{}, sms: map[uint64]*testSM{}, nodes: map[uint64]*Node{},
	}
	for _, id := range ids {
		c.peers = append(c.peers, Peer{ID: id, Addr: fmt.Sprintf("n%d:7000", id)})
	}
	t.Cleanup(func() {
		for _, id := range c.ids() {
			c.stop(id)
		}
		c.net.Close()
	})
	for _, id := range ids {
		c.start(id, func(cfg *Config) { cfg.Bootstrap = c.peers })
	}
	return c
}

// logLevel is Info for tests, Warn for benchmarks.
func (c *cluster) logLevel() slog.Level {
	if _, ok := c.t.(*testing.B); ok {
		return slog.LevelWarn
	}
	return slog.LevelInfo
}

func (c *cluster) ids() []uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	var ids []uint64
	for id := range c.nodes {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// start starts (or restarts, from its Dir and with its testSM) server id.
func (c *cluster) start(id uint64, mod func(*Config)) *Node {
	c.t.Helper()
	c.mu.Lock()
	if c.dirs[id] == "" {
		c.dirs[id] = c.t.TempDir()
		c.sms[id] = &testSM{}
	}
	cfg := Config{
		ID:            id,
		Dir:           c.dirs[id],
		Transport:     c.net.Transport(id),
		StateMachine:  c.sms[id],
		TickInterval:  testTick,
		ElectionTicks: testElection,
		Logger:        testkit.LoggerAt(c.t, c.logLevel()).With("node", id),
	}
	c.mu.Unlock()
	if c.mod != nil {
		c.mod(&cfg)
	}
	if mod != nil {
		mod(&cfg)
	}
	n, err := Start(cfg)
	if err != nil {
		c.t.Fatalf("start node %d: %v", id, err)
	}
	c.net.Register(id, n)
	c.mu.Lock()
	c.nodes[id] = n
	c.mu.Unlock()
	return n
}

func (c *cluster) stop(id uint64) {
	c.mu.Lock()
	n := c.nodes[id]
	delete(c.nodes, id)
	c.mu.Unlock()
	if n != nil {
		c.net.Register(id, nil)
		n.Stop()
	}
}

func (c *cluster) node(id uint64) *Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[id]
}

func (c *cluster) sm(id uint64) *testSM {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sms[id]
}

// leader waits until every running server but those in except names the
// same leader, in the same term, and returns it.
func (c *cluster) leader(except ...uint64) uint64 {
	c.t.Helper()
	var lead uint64
	testkit.EventuallyWhy(c.t, "one leader", 20*time.Second, func() string {
		lead = 0
		var term uint64
		for _, id := range c.ids() {
			if slices.Contains(except, id) {
				continue
			}
			st := c.node(id).Status()
			if st.Leader == 0 || (lead != 0 && (st.Leader != lead || st.Term != term)) {
				return fmt.Sprintf("node %d sees leader %d in term %d", id, st.Leader, st.Term)
			}
			lead, term = st.Leader, st.Term
		}
		if slices.Contains(except, lead) {
			return fmt.Sprintf("the others still follow %d", lead)
		}
		return ""
	})
	return lead
}

// converged waits until the running servers' state machines hold the same
// items, want of them.
func (c *cluster) converged(want int) []string {
	c.t.Helper()
	var items []string
	testkit.EventuallyWhy(c.t, "state machines agree", 20*time.Second, func() string {
		items = nil
		for i, id := range c.ids() {
			got := c.sm(id).Items()
			if len(got) != want {
				return fmt.Sprintf("node %d has %d items, want %d", id, len(got), want)
			}
			if i > 0 && !slices.Equal(got, items) {
				return fmt.Sprintf("node %d has %q, another %q", id, got, items)
			}
			items = got
		}
		return ""
	})
	return items
}

// propose proposes data on n, retrying while there is no leader (then
// nothing was proposed, so a retry cannot apply data twice). Call it from
// the test's goroutine; others use tryPropose.
func propose(t testing.TB, n *Node, data string) (any, uint64) {
	t.Helper()
	res, idx, err := tryPropose(n, data)
	if err != nil {
		t.Fatal(err)
	}
	return res, idx
}

func tryPropose(n *Node, data string) (any, uint64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for {
		res, idx, err := n.Propose(ctx, []byte(data))
		if err == nil {
			return res, idx, nil
		}
		if !errors.Is(err, ErrNoLeader) && !errors.Is(err, ErrProposalDropped) {
			return nil, 0, fmt.Errorf("propose %q: %w", data, err)
		}
		select {
		case <-ctx.Done():
			return nil, 0, fmt.Errorf("propose %q: %w", data, err)
		case <-time.After(testTick):
		}
	}
}
