package gossip

import (
	"log/slog"
	"net/netip"
	"sort"
	"sync"
)

// Member is one member of the cluster as this member sees it.
type Member struct {
	// Name is the member's node name, unique in the cluster.
	Name string
	// Addr is the member's gossip address (its AdvertiseAddr and port).
	Addr netip.AddrPort
	// Meta is what the member told about itself. If its metadata could not
	// be decoded, Meta is zero and the problem was logged.
	Meta Meta
}

// EventType says what happened to a member.
type EventType int

// The event types.
const (
	// Joined: the member is alive and new to this member, or came back after
	// it left or failed. Subscribing also yields one Joined per current member.
	Joined EventType = iota + 1
	// Updated: the member changed its Meta.
	Updated
	// Left: the member said goodbye (Leave) before going away.
	Left
	// Failed: failure detection declared the member dead: it stopped
	// answering without leaving (crash, kill, power or network loss).
	Failed
)

func (t EventType) String() string {
	switch t {
	case Joined:
		return "Joined"
	case Updated:
		return "Updated"
	case Left:
		return "Left"
	case Failed:
		return "Failed"
	}
	return "EventType(?)"
}

// Event is one change of membership. For Left and Failed, Member is the
// member as it was last known.
type Event struct {
	Type   EventType
	Member Member
}

// subscriberQueueMax bounds the events waiting for one slow subscriber; past
// it the oldest waiting event is dropped (and counted in a warning). At a few
// hundred bytes per event that is about 1 MiB at most.
const subscriberQueueMax = 4096

// hub holds this member's view of the cluster (alive and suspect members,
// the local one included) and fans every change out to the subscribers.
//
// memberlist calls record* from its own goroutines while it holds its node
// lock, one call at a time. record* never block: they update the table and
// append to each subscriber's queue; each subscriber has its own goroutine
// that moves its queue into its channel, as fast as the consumer reads.
type hub struct {
	log *slog.Logger

	mu      sync.Mutex
	members map[string]Member
	subs    map[*subscriber]struct{}
	closed  bool
}

func newHub(log *slog.Logger) *hub {
	return &hub{log: log, members: map[string]Member{}, subs: map[*subscriber]struct{}{}}
}

// record applies one change to the table and tells every subscriber.
func (h *hub) record(ev Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	switch ev.Type {
	case Updated:
		if old, ok := h.members[ev.Member.Name]; ok && old == ev.Member {
			return // nothing a subscriber can see changed
		}
		h.members[ev.Member.Name] = ev.Member
	case Joined:
		h.members[ev.Member.Name] = ev.Member
	case Left, Failed:
		delete(h.members, ev.Member.Name)
	}
	for s := range h.subs {
		s.push(ev)
	}
}

// lookup returns the member named name, if it is alive or suspect.
func (h *hub) lookup(name string) (Member, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	m, ok := h.members[name]
	return m, ok
}

// list returns the members sorted by name.
func (h *hub) list() []Member {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.sortedLocked()
}

func (h *hub) sortedLocked() []Member {
	out := make([]Member, 0, len(h.members))
	for _, m := range h.members {
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// subscribe registers a subscriber whose stream starts with a Joined event
// per current member. After close, it returns an already closed channel.
func (h *hub) subscribe() (<-chan Event, func()) {
	s := &subscriber{
		log:  h.log,
		wake: make(chan struct{}, 1),
		out:  make(chan Event),
		done: make(chan struct{}),
	}
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		close(s.out)
		return s.out, func() {}
	}
	for _, m := range h.sortedLocked() {
		s.push(Event{Type: Joined, Member: m})
	}
	h.subs[s] = struct{}{}
	h.mu.Unlock()

	go s.pump()
	cancel := func() {
		h.mu.Lock()
		delete(h.subs, s)
		h.mu.Unlock()
		s.stop()
	}
	return s.out, cancel
}

// close ends every subscription; their channels close.
func (h *hub) close() {
	h.mu.Lock()
	subs := h.subs
	h.subs = map[*subscriber]struct{}{}
	h.closed = true
	h.mu.Unlock()
	for s := range subs {
		s.stop()
	}
}

// subscriber is one consumer's queue and the goroutine that feeds its channel.
type subscriber struct {
	log *slog.Logger

	mu      sync.Mutex
	queue   []Event
	dropped int

	wake     chan struct{} // capacity 1: "the queue is not empty"
	out      chan Event    // closed by pump when it returns
	done     chan struct{} // closed by stop
	stopOnce sync.Once
}

// push appends ev without blocking, dropping the oldest event when the queue
// is full.
func (s *subscriber) push(ev Event) {
	s.mu.Lock()
	if len(s.queue) >= subscriberQueueMax {
		copy(s.queue, s.queue[1:])
		s.queue = s.queue[:len(s.queue)-1]
		s.dropped++
		if s.dropped == 1 || s.dropped%1000 == 0 {
			s.log.Warn("gossip event subscriber is not reading; dropping its oldest events (re-read Members to resync)",
				"dropped", s.dropped, "queue_max", subscriberQueueMax)
		}
	}
	s.queue = append(s.queue, ev)
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *subscriber) pop() (Event, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.queue) == 0 {
		return Event{}, false
	}
	ev := s.queue[0]
	s.queue[0] = Event{}
	s.queue = s.queue[1:]
	if len(s.queue) == 0 {
		s.queue = nil // let the backing array go
	}
	return ev, true
}

func (s *subscriber) stop() { s.stopOnce.Do(func() { close(s.done) }) }

// pump delivers the queue in order until stop; events still queued then are
// discarded.
func (s *subscriber) pump() {
	defer close(s.out)
	for {
		select {
		case <-s.wake:
		case <-s.done:
			return
		}
		for {
			ev, ok := s.pop()
			if !ok {
				break
			}
			select {
			case s.out <- ev:
			case <-s.done:
				return
			}
		}
	}
}
