package raftlog

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/flotilla-dev/flotilla/internal/testkit"
)

// TestWhileLeader: the leader's work runs on the leader only, and moves
// with the leadership (handed over, or lost to a partition), never running
// twice at once on one server.
func TestWhileLeader(t *testing.T) {
	c := newCluster(t, nil, 1, 2, 3)
	ctx, cancel := context.WithCancel(t.Context())
	var (
		mu      sync.Mutex
		running = map[uint64]int{} // fn calls running, per server
		started = map[uint64]int{}
	)
	var wg sync.WaitGroup
	for _, id := range c.ids() {
		n := c.node(id)
		wg.Go(func() {
			_ = n.WhileLeader(ctx, func(ctx context.Context) error {
				mu.Lock()
				running[id]++
				started[id]++
				twice := running[id] > 1
				mu.Unlock()
				if twice {
					t.Errorf("server %d runs the leader's work twice at once", id)
				}
				<-ctx.Done()
				mu.Lock()
				running[id]--
				mu.Unlock()
				return ctx.Err()
			})
		})
	}
	t.Cleanup(func() { cancel(); wg.Wait() })
	runningOn := func() []uint64 {
		mu.Lock()
		defer mu.Unlock()
		var on []uint64
		for id, n := range running {
			if n > 0 {
				on = append(on, id)
			}
		}
		return on
	}
	lead := c.leader()
	testkit.Eventually(t, "the work to run on the leader only", 10*time.Second, func() error {
		if on := runningOn(); len(on) != 1 || on[0] != lead {
			return fmt.Errorf("running on %v, leader %d", on, lead)
		}
		return nil
	})
	to := c.ids()[0]
	if to == lead {
		to = c.ids()[1]
	}
	tctx, tcancel := context.WithTimeout(ctx, 10*time.Second)
	defer tcancel()
	if err := c.node(lead).TransferLeadership(tctx, to); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, "the work to move to the new leader", 10*time.Second, func() error {
		if on := runningOn(); len(on) != 1 || on[0] != to {
			return fmt.Errorf("running on %v, leader %d", on, to)
		}
		return nil
	})
	mu.Lock()
	if started[lead] != 1 || started[to] != 1 {
		t.Errorf("started %v times; want once on %d and once on %d", started, lead, to)
	}
	mu.Unlock()

	// Cut off from the others, the leader steps down (CheckQuorum) and its
	// work stops; the majority's new leader runs it.
	c.net.Isolate(to)
	testkit.Eventually(t, "the work to leave the isolated leader", 10*time.Second, func() error {
		on := runningOn()
		if len(on) != 1 || on[0] == to {
			return fmt.Errorf("running on %v; %d is isolated", on, to)
		}
		return nil
	})
}
