package main

import (
	"context"
	"sync"
	"time"

	"github.com/flotilla-dev/flotilla/cluster/gossip"
	"github.com/flotilla-dev/flotilla/reconciler/nodelifecycle"
)

// gossipView adapts cluster/gossip to the node lifecycle controller's
// Membership: it remembers every agent it has heard of, alive, failed or
// left (gossip itself forgets the dead), and forwards each change.
type gossipView struct {
	mu      sync.Mutex
	members map[string]nodelifecycle.Member
	events  chan nodelifecycle.MemberEvent
}

var _ nodelifecycle.Membership = (*gossipView)(nil)

// watchGossip follows m until ctx ends.
func watchGossip(ctx context.Context, m *gossip.Membership) *gossipView {
	v := &gossipView{members: map[string]nodelifecycle.Member{}, events: make(chan nodelifecycle.MemberEvent, 256)}
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

func (v *gossipView) apply(ev gossip.Event, now time.Time) {
	if ev.Member.Meta.Role != gossip.RoleAgent {
		return // servers are not Nodes
	}
	// A member speaks only for the node of its own gossip name (unique
	// among live members); one announcing another node's name is ignored.
	name := ev.Member.Name
	if ev.Member.Meta.NodeName != "" && ev.Member.Meta.NodeName != name {
		return
	}
	m := nodelifecycle.Member{Name: name, Since: now}
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
	case v.events <- nodelifecycle.MemberEvent{Member: m}:
	default: // a hint only: Members is the truth the controller re-reads
	}
}

func (v *gossipView) Members() []nodelifecycle.Member {
	v.mu.Lock()
	defer v.mu.Unlock()
	out := make([]nodelifecycle.Member, 0, len(v.members))
	for _, m := range v.members {
		out = append(out, m)
	}
	return out
}

func (v *gossipView) Events() <-chan nodelifecycle.MemberEvent { return v.events }
