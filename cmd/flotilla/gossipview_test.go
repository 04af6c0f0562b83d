package main

import (
	"testing"
	"time"

	"github.com/flotilla-dev/flotilla/cluster/gossip"
	"github.com/flotilla-dev/flotilla/reconciler/nodelifecycle"
)

// TestGossipViewIgnoresImpersonation: a gossip member speaks only for the
// node of its own name; one that announces another node's name leaving
// changes nothing the node lifecycle controller sees.
func TestGossipViewIgnoresImpersonation(t *testing.T) {
	v := &gossipView{members: map[string]nodelifecycle.Member{}, events: make(chan nodelifecycle.MemberEvent, 8)}
	now := time.Now()
	v.apply(gossip.Event{Type: gossip.Joined, Member: gossip.Member{Name: "node1", Meta: gossip.Meta{Role: gossip.RoleAgent, NodeName: "node1"}}}, now)
	v.apply(gossip.Event{Type: gossip.Left, Member: gossip.Member{Name: "liar", Meta: gossip.Meta{Role: gossip.RoleAgent, NodeName: "node1"}}}, now)
	ms := v.Members()
	if len(ms) != 1 || ms[0].Name != "node1" || !ms[0].Alive {
		t.Errorf("members after an impersonated leave: %+v, want node1 alive only", ms)
	}
}
