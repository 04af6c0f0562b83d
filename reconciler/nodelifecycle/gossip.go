package nodelifecycle

import (
	"context"
	"sync"
	"time"

	"github.com/flotilla-dev/flotilla/cluster/gossip"
)

// GossipView adapts cluster/gossip to the controller's Membership (the
// server's wiring makes one with WatchGossip): it remembers every agent it has heard of, alive, failed or
// left (gossip itself forgets the dead), and forwards each change.
type GossipView struct {
	mu      sync.Mutex
	members map[string]Member
	events  chan MemberEvent
}

var _ Membership = (*GossipView)(nil)

// WatchGossip follows m until ctx ends; Events is closed then.
func WatchGossip(ctx context.Context, m *gossip.Membership) *GossipView {
	v := &GossipView{members: map[string]Member{}, events: make(chan MemberEvent, 256)}
	ch, stop := m.Subscribe()
	go func() {
		defer close(v.events)
		defer stop()
		for {
			select {
			case <-ctx.Done():
				return
			case ev, ok := <-ch:
				if !ok {
					return
				}
				v.apply(ev, time.Now())
			}
		}
	}()
	return v
}

func (v *GossipView) apply(ev gossip.Event, now time.Time) {
	if ev.Member.Meta.Role != gossip.RoleAgent {
		return // servers are not Nodes
	}
	// A member speaks only for the node of its own gossip name (unique
	// among live members); one announcing another node's name is ignored.
	name := ev.Member.Name
	if ev.Member.Meta.NodeName != "" && ev.Member.Meta.NodeName != name {
		return
	}
	m := Member{Name: name, Since: now}
	switch ev.Type {
	case gossip.Joined, gossip.Updated:
		m.Alive = true
	case gossip.Left:
		m.Left = true
	case gossip.Failed:
	}
	v.mu.Lock()
	if old, ok := v.members[name]; ok && old.Alive == m.Alive && old.Left == m.Left {
		m.Since = old.Since // no change of state: keep when it began
	}
	v.members[name] = m
	v.mu.Unlock()
	select {
	case v.events <- MemberEvent{Member: m}:
	default: // a hint only: Members is the truth the controller re-reads
	}
}

// Members implements Membership.
func (v *GossipView) Members() []Member {
	v.mu.Lock()
	defer v.mu.Unlock()
	out := make([]Member, 0, len(v.members))
	for _, m := range v.members {
		out = append(out, m)
	}
	return out
}

// Events implements Membership.
func (v *GossipView) Events() <-chan MemberEvent { return v.events }
