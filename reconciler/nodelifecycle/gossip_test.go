package nodelifecycle

import (
	"testing"
	"time"

	"github.com/flotilla-dev/flotilla/cluster/gossip"
)

// TestGossipViewIgnoresImpersonation: a gossip member speaks only for the
// node of its own name; one that announces another node's name leaving
// changes nothing the node lifecycle controller sees.
func TestGossipViewIgnoresImpersonation(t *testing.T) {
	v := &GossipView{members: map[string]Member{}, events: make(chan MemberEvent, 8)}
	now := time.Now()
	v.apply(gossip.Event{Type: gossip.Joined, Member: gossip.Member{Name: "node1", Meta: gossip.Meta{Role: gossip.RoleAgent, NodeName: "node1"}}}, now)
	v.apply(gossip.Event{Type: gossip.Left, Member: gossip.Member{Name: "liar", Meta: gossip.Meta{Role: gossip.RoleAgent, NodeName: "node1"}}}, now)
	ms := v.Members()
	if len(ms) != 1 || ms[0].Name != "node1" || !ms[0].Alive {
		t.Errorf("members after an impersonated leave: %+v, want node1 alive only", ms)
	}
}

// TestGossipViewStates: an agent's joins, failures and leaves are its
// Member's state, each announced as an event; Since is when the state
// began, kept while an update repeats it; servers are not Nodes.
func TestGossipViewStates(t *testing.T) {
	v := &GossipView{members: map[string]Member{}, events: make(chan MemberEvent, 8)}
	agent := gossip.Member{Name: "n1", Meta: gossip.Meta{Role: gossip.RoleAgent, NodeName: "n1"}}
	t0 := time.Unix(1000, 0)
	step := func(typ gossip.EventType, m gossip.Member, at time.Time) {
		t.Helper()
		v.apply(gossip.Event{Type: typ, Member: m}, at)
	}
	only := func(what string, want Member) {
		t.Helper()
		ms := v.Members()
		if len(ms) != 1 || ms[0] != want {
			t.Errorf("%s: members %+v, want [%+v]", what, ms, want)
		}
		select {
		case ev := <-v.events:
			if ev.Member != want {
				t.Errorf("%s: event %+v, want %+v", what, ev.Member, want)
			}
		default:
			t.Errorf("%s: no event", what)
		}
	}
	step(gossip.Joined, agent, t0)
	only("joined", Member{Name: "n1", Alive: true, Since: t0})
	step(gossip.Updated, agent, t0.Add(time.Minute))
	only("updated while alive", Member{Name: "n1", Alive: true, Since: t0})
	step(gossip.Failed, agent, t0.Add(2*time.Minute))
	only("failed", Member{Name: "n1", Since: t0.Add(2 * time.Minute)})
	step(gossip.Left, agent, t0.Add(3*time.Minute))
	only("left", Member{Name: "n1", Left: true, Since: t0.Add(3 * time.Minute)})

	step(gossip.Joined, gossip.Member{Name: "s1", Meta: gossip.Meta{Role: gossip.RoleServer, NodeName: "s1"}}, t0)
	if ms := v.Members(); len(ms) != 1 {
		t.Errorf("a server joined: members %+v, want n1 only", ms)
	}
	select {
	case ev := <-v.events:
		t.Errorf("a server joined: event %+v", ev)
	default:
	}
}
