package raftlog

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flotilla-dev/flotilla/internal/testkit"
)

func TestOneVoter(t *testing.T) {
	// An election timeout of 50 s: the proposals below can only succeed
	// in time if the lone voter campaigns at once, at start and restart.
	slow := func(cfg *Config) { cfg.TickInterval, cfg.ElectionTicks = 100*time.Millisecond, 500 }
	c := newCluster(t, slow, 1)
	n := c.node(1)
	res, idx, err := proposeWithin(n, "a", 5*time.Second)
	if err != nil {
		t.Fatalf("first proposal: %v", err)
	}
	if res != 1 || idx == 0 {
		t.Fatalf("Propose = %v, %d; want result 1 and an index", res, idx)
	}
	res, idx2, err := proposeWithin(n, "b", 5*time.Second)
	if err != nil || res != 2 || idx2 != idx+1 {
		t.Fatalf("second Propose = %v, %d, %v; want 2, %d", res, idx2, err, idx+1)
	}
	st := n.Status()
	if st.Role != "leader" || st.Leader != 1 || st.Applied < idx2 || st.Commit < idx2 ||
		!slices.Equal(st.Members, []Member{{ID: 1, Addr: "n1:7000", Voter: true}}) {
		t.Fatalf("Status = %+v", st)
	}

	// Restart with the state machine kept: nothing is applied twice.
	c.stop(1)
	n = c.start(1, nil)
	if _, _, err := proposeWithin(n, "c", 5*time.Second); err != nil {
		t.Fatalf("proposal after restart: %v", err)
	}
	if got := c.sm(1).Items(); !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Fatalf("items after restart = %q", got)
	}
	if c.sm(1).skipped != 0 {
		t.Fatalf("Apply was called %d times for entries already applied", c.sm(1).skipped)
	}

	// Restart with a state machine that lost everything: the log replays.
	c.stop(1)
	c.mu.Lock()
	c.sms[1] = &testSM{}
	c.mu.Unlock()
	n = c.start(1, nil)
	testkit.EventuallyWhy(t, "replay", 10*time.Second, func() string {
		if got := c.sm(1).Items(); !slices.Equal(got, []string{"a", "b", "c"}) {
			return fmt.Sprintf("items %q", got)
		}
		return ""
	})
	testkit.EventuallyWhy(t, "leader again", 5*time.Second, func() string {
		if st := n.Status(); st.Role != "leader" || len(st.Members) != 1 {
			return fmt.Sprintf("Status %+v", st)
		}
		return ""
	})
}

// proposeWithin proposes once, retrying only while no leader is known.
func proposeWithin(n *Node, data string, d time.Duration) (any, uint64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	for {
		res, idx, err := n.Propose(ctx, []byte(data))
		if !errors.Is(err, ErrNoLeader) {
			return res, idx, err
		}
		select {
		case <-ctx.Done():
			return nil, 0, err
		case <-time.After(time.Millisecond):
		}
	}
}

func TestStartRefuses(t *testing.T) {
	nw := NewMemNetwork()
	defer nw.Close()
	base := Config{ID: 1, Dir: t.TempDir(), Transport: nw.Transport(1), StateMachine: &testSM{}}
	for _, tc := range []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"no ID", func(c *Config) { c.ID = 0 }, "Config.ID"},
		{"no Dir", func(c *Config) { c.Dir = "" }, "Config.Dir"},
		{"no transport", func(c *Config) { c.Transport = nil }, "Config.Transport"},
		{"no state machine", func(c *Config) { c.StateMachine = nil }, "Config.StateMachine"},
		{"nothing to start from", func(c *Config) {}, "Config.Bootstrap"},
		{"bootstrap without self", func(c *Config) { c.Bootstrap = []Peer{{ID: 2}} }, "include this server"},
		{"join with bootstrap", func(c *Config) { c.Join, c.Bootstrap = true, []Peer{{ID: 1}} }, "empty with Config.Join"},
		{"election not above heartbeat", func(c *Config) { c.Bootstrap, c.ElectionTicks, c.HeartbeatTicks = []Peer{{ID: 1}}, 2, 2 }, "ElectionTicks"},
		{"state machine without log", func(c *Config) {
			c.Bootstrap = []Peer{{ID: 1}}
			c.StateMachine = &testSM{applied: 7}
		}, "applied index 7"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := base
			cfg.Dir = t.TempDir()
			tc.mod(&cfg)
			n, err := Start(cfg)
			if err == nil {
				n.Stop()
				t.Fatal("Start succeeded")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Start: %v; want it to mention %q", err, tc.want)
			}
		})
	}
}

func TestThreeVoters(t *testing.T) {
	c := newCluster(t, nil, 1, 2, 3)
	lead := c.leader()
	follower := uint64(1)
	if follower == lead {
		follower = 2
	}
	// On a follower: forwarded, and applied here before Propose returns.
	res, idx := propose(t, c.node(follower), "first")
	if res != 1 {
		t.Fatalf("result %v, want 1", res)
	}
	if got := c.sm(follower).Items(); !slices.Equal(got, []string{"first"}) || c.node(follower).Status().Applied < idx {
		t.Fatalf("follower has %q after Propose returned", got)
	}

	// Proposals from every server at once: one order everywhere.
	var wg sync.WaitGroup
	for _, id := range c.ids() {
		wg.Go(func() {
			for i := range 10 {
				if _, _, err := tryPropose(c.node(id), fmt.Sprintf("%d-%d", id, i)); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	items := c.converged(31)
	for _, id := range c.ids() { // each server's own proposals stay in its order
		var own []string
		for _, it := range items {
			if strings.HasPrefix(it, fmt.Sprintf("%d-", id)) {
				own = append(own, it)
			}
		}
		for i, it := range own {
			if it != fmt.Sprintf("%d-%d", id, i) {
				t.Fatalf("node %d's proposals applied as %q", id, own)
			}
		}
	}

	// The leader stops: the others elect one and go on.
	c.stop(lead)
	next := c.leader(lead)
	if next == lead {
		t.Fatalf("stopped leader %d still leads", lead)
	}
	for i := range 5 {
		propose(t, c.node(next), fmt.Sprintf("after-%d", i))
	}
	// It restarts and catches up.
	c.start(lead, nil)
	c.converged(36)
	if got := c.sm(lead).skipped; got != 0 {
		t.Fatalf("the restarted server re-applied %d entries", got)
	}
}

func TestPartitionedLeader(t *testing.T) {
	c := newCluster(t, nil, 1, 2, 3)
	lead := c.leader()
	propose(t, c.node(lead), "before")
	c.converged(1)

	c.net.Isolate(lead)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	_, _, err := c.node(lead).Propose(ctx, []byte("lost"))
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, ErrNoLeader) {
		t.Fatalf("Propose on the isolated leader: %v; want a timeout or ErrNoLeader", err)
	}
	// The majority elects another leader and commits without it.
	next := c.leader(lead)
	propose(t, c.node(next), "majority")
	// The old leader has stepped down (CheckQuorum) and knows no leader.
	testkit.EventuallyWhy(t, "the isolated leader steps down", 10*time.Second, func() string {
		if st := c.node(lead).Status(); st.Role == "leader" {
			return fmt.Sprintf("%d is still %s", lead, st.Role)
		}
		return ""
	})
	ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
	_, _, err = c.node(lead).Propose(ctx, []byte("lost too"))
	cancel()
	if !errors.Is(err, ErrNoLeader) {
		t.Fatalf("Propose on an isolated follower: %v; want ErrNoLeader", err)
	}

	c.net.HealAll()
	if got := c.leader(); got == lead {
		t.Logf("the old leader %d leads again", got)
	}
	propose(t, c.node(lead), "healed")
	items := c.converged(3)
	if !slices.Equal(items, []string{"before", "majority", "healed"}) {
		t.Fatalf("items = %q; the isolated leader's proposal must not commit", items)
	}
}

func TestReadIndex(t *testing.T) {
	c := newCluster(t, nil, 1, 2, 3)
	lead := c.leader()
	var followers []uint64
	for _, id := range c.ids() {
		if id != lead {
			followers = append(followers, id)
		}
	}
	f := followers[0]
	for i := range 10 {
		data := fmt.Sprintf("w%d", i)
		propose(t, c.node(lead), data)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := c.node(f).ReadIndex(ctx)
		cancel()
		if err != nil {
			t.Fatalf("ReadIndex on follower %d: %v", f, err)
		}
		if items := c.sm(f).Items(); len(items) != i+1 || items[i] != data {
			t.Fatalf("after ReadIndex follower %d has %q, want %q last", f, items, data)
		}
	}
	// On the leader too.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.node(lead).ReadIndex(ctx); err != nil {
		t.Fatalf("ReadIndex on the leader: %v", err)
	}

	// Cut off, a server cannot confirm it is up to date: once it knows no
	// leader, it says so instead of waiting for the caller's deadline.
	c.net.Isolate(f)
	ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.node(f).ReadIndex(ctx); !errors.Is(err, ErrNoLeader) {
		t.Fatalf("ReadIndex on an isolated server: %v; want ErrNoLeader", err)
	}
}

func TestLeadershipChanges(t *testing.T) {
	c := newCluster(t, nil, 1, 2, 3)
	lead := c.leader()
	var to uint64
	for _, id := range c.ids() {
		if id != lead {
			to = id
			break
		}
	}
	watch, cancel := c.node(to).WatchLeadership()
	defer cancel()
	first := <-watch
	if first.Leader || first.LeaderID != lead {
		t.Fatalf("first Leadership on %d = %+v; want leader %d, not itself", to, first, lead)
	}

	ctx, cancelCtx := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancelCtx()
	if err := c.node(lead).TransferLeadership(ctx, to); err != nil {
		t.Fatalf("TransferLeadership(%d): %v", to, err)
	}
	deadline := time.After(10 * time.Second)
	for {
		select {
		case l := <-watch:
			if l.Term <= first.Term && l.LeaderID != first.LeaderID {
				t.Fatalf("leader changed to %d without a new term (%d)", l.LeaderID, l.Term)
			}
			if !l.Leader {
				continue
			}
			if l.Term <= first.Term || l.LeaderID != to {
				t.Fatalf("Leadership = %+v after %+v", l, first)
			}
			if got := c.leader(); got != to {
				t.Fatalf("the group follows %d, not %d", got, to)
			}
			propose(t, c.node(lead), "after transfer")
			c.converged(1)
			return
		case <-deadline:
			t.Fatal("no Leadership with the new leader")
		}
	}
}

func TestStopIsIdempotent(t *testing.T) {
	c := newCluster(t, nil, 1)
	n := c.node(1)
	propose(t, n, "x")
	watch, _ := n.WatchLeadership()
	n.Stop()
	n.Stop()
	if _, _, err := n.Propose(context.Background(), []byte("y")); !errors.Is(err, ErrStopped) {
		t.Fatalf("Propose after Stop: %v; want ErrStopped", err)
	}
	if err := n.ReadIndex(context.Background()); !errors.Is(err, ErrStopped) {
		t.Fatalf("ReadIndex after Stop: %v; want ErrStopped", err)
	}
	for range watch { // closed by Stop
	}
	if n.Err() != nil {
		t.Fatalf("Err after Stop = %v", n.Err())
	}
}

func TestStartRefusesStateMachineAheadOfLog(t *testing.T) {
	c := newCluster(t, nil, 1)
	_, idx := propose(t, c.node(1), "a")
	c.stop(1)
	_, err := Start(Config{ID: 1, Dir: c.dirs[1], Transport: c.net.Transport(1), StateMachine: &testSM{applied: idx + 5}})
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("applied index %d, past the last entry", idx+5)) {
		t.Fatalf("Start with a state machine ahead of the log: %v", err)
	}
}

// dedupSM applies each distinct datum once, as the store's write sets
// (which carry the revision they were computed at) do; a copy applied
// again only moves the applied index, and returns "duplicate". What it
// applied is its items, so a snapshot carries it.
type dedupSM struct {
	testSM
}

func (s *dedupSM) Apply(index, term uint64, data []byte) any {
	s.mu.Lock()
	dup := index > s.applied && slices.Contains(s.items, string(data))
	if dup {
		s.applied = index
	}
	s.mu.Unlock()
	if dup {
		return "duplicate"
	}
	return s.testSM.Apply(index, term, data)
}

func (s *dedupSM) RejectsDuplicates() {}

// TestReproposeDropped: a follower's proposal that the network drops on
// its way to the leader (no election follows: nothing tells the follower)
// is proposed again and applied once, for a DuplicateRejecter; a plain
// state machine's proposal waits for its context.
func TestReproposeDropped(t *testing.T) {
	for _, dedup := range []bool{true, false} {
		t.Run(fmt.Sprintf("dedup=%v", dedup), func(t *testing.T) {
			sms := map[uint64]*dedupSM{}
			c := newCluster(t, func(cfg *Config) {
				if dedup {
					sm := sms[cfg.ID]
					if sm == nil {
						sm = &dedupSM{}
						sms[cfg.ID] = sm
					}
					cfg.StateMachine = sm
				}
			}, 1, 2, 3)
			lead := c.leader()
			propose(t, c.node(lead), "warm")
			var f uint64
			for _, id := range []uint64{1, 2, 3} {
				if id != lead {
					f = id
					break
				}
			}
			// Cut the follower's link to the leader for less than an
			// election timeout: the forwarded proposal is lost.
			c.net.Cut(f, lead)
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			done := make(chan error, 1)
			go func() {
				_, _, err := c.node(f).Propose(ctx, []byte("once"))
				done <- err
			}()
			time.Sleep(testTick * testElection / 2)
			c.net.Heal(f, lead)
			err := <-done
			if !dedup {
				if !errors.Is(err, context.DeadlineExceeded) {
					t.Fatalf("a dropped proposal to a plain state machine: %v, want the context's deadline", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("the dropped proposal was not proposed again: %v", err)
			}
			testkit.EventuallyWhy(t, "every server applies it once", 5*time.Second, func() string {
				for id, sm := range sms {
					n := 0
					for _, it := range sm.Items() {
						if it == "once" {
							n++
						}
					}
					if n != 1 {
						return fmt.Sprintf("node %d applied it %d times", id, n)
					}
				}
				return ""
			})
		})
	}
}
