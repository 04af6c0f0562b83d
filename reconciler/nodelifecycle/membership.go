package nodelifecycle

import (
	"sort"
	"sync"
	"time"
)

// Membership is the gossip view of the cluster that the controller reads:
// who is alive, who failed, who left. It is owned by this package (the
// consumer); GossipView adapts cluster/gossip to it. Nil means no gossip
// (a single node): the controller then judges nodes by their agent
// heartbeat alone.
//
// Members and Events are called from the controller's goroutines and must
// be safe for concurrent use; neither may block for long.
type Membership interface {
	// Members returns the current state of every member this server knows,
	// in any order. The caller owns the returned slice. A node absent from
	// it (never seen, or forgotten since) is judged by its heartbeat.
	Members() []Member
	// Events returns the channel of membership changes (the same channel on
	// every call), closed when the membership stops. Each event carries the
	// member's new state. Delivery is a hint: an implementation may drop
	// events when the receiver falls behind, because Members is the source
	// of truth that every reconcile reads (and the periodic resync re-reads).
	Events() <-chan MemberEvent
}

// Member is one node as gossip sees it.
type Member struct {
	// Name is the member's node name, the same as its Node object's name.
	Name string
	// Alive is true while gossip hears from the member.
	Alive bool
	// Left is true when the member announced its departure (a polite
	// shutdown); false with Alive false means it failed (stopped answering).
	Left bool
	// Since is when the member entered its current state; for a failed
	// member, the best known time it was last heard from. It starts the
	// eviction clock of a failed or departed member. Zero means unknown
	// (the Ready condition's transition time is used instead).
	Since time.Time
}

// MemberEvent is one change of a member.
type MemberEvent struct {
	// Member is the member's state after the change.
	Member Member
}

// FakeMembership is a Membership for tests and simulations: members are
// set by hand and every change is sent on Events. Events are buffered
// (256) and dropped when the buffer is full, which the contract allows.
// The zero value is not usable; call NewFakeMembership.
type FakeMembership struct {
	mu      sync.Mutex
	members map[string]Member
	events  chan MemberEvent
	closed  bool
}

var _ Membership = (*FakeMembership)(nil)

// NewFakeMembership returns a fake membership holding members (no events
// are sent for them).
func NewFakeMembership(members ...Member) *FakeMembership {
	f := &FakeMembership{members: map[string]Member{}, events: make(chan MemberEvent, 256)}
	for _, m := range members {
		f.members[m.Name] = m
	}
	return f
}

// Members returns a copy of the members, sorted by name.
func (f *FakeMembership) Members() []Member {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]Member, 0, len(f.members))
	for _, m := range f.members {
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Events returns the channel of changes made with Set and its helpers.
func (f *FakeMembership) Events() <-chan MemberEvent { return f.events }

// Set records m (replacing the member of the same name) and sends its event.
func (f *FakeMembership) Set(m Member) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.members[m.Name] = m
	if f.closed {
		return
	}
	select {
	case f.events <- MemberEvent{Member: m}:
	default:
	}
}

// Join marks name alive since at.
func (f *FakeMembership) Join(name string, at time.Time) {
	f.Set(Member{Name: name, Alive: true, Since: at})
}

// Fail marks name failed, last heard at at.
func (f *FakeMembership) Fail(name string, at time.Time) {
	f.Set(Member{Name: name, Since: at})
}

// Leave marks name departed (a polite leave) at at.
func (f *FakeMembership) Leave(name string, at time.Time) {
	f.Set(Member{Name: name, Left: true, Since: at})
}

// Forget removes name, as gossip does once a dead member is reaped; no
// event is sent.
func (f *FakeMembership) Forget(name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.members, name)
}

// Close closes the Events channel; later changes send no events.
func (f *FakeMembership) Close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.closed {
		f.closed = true
		close(f.events)
	}
}
