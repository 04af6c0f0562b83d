package raftlog

import (
	"context"
	"sync"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// MemNetwork is an in-process network between Nodes, for tests here and in
// other packages: messages are routed by Raft ID (addresses are ignored)
// and delivered asynchronously, one queue and goroutine per directed link,
// so that no Node's loop ever waits for another. Links can be cut to make
// partitions. The zero value is not usable; call NewMemNetwork.
type MemNetwork struct {
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu        sync.Mutex
	nodes     map[uint64]*Node
	reporters map[uint64]Reporter
	links     map[[2]uint64]*memLink
	cut       map[[2]uint64]bool // from, to: blocked
	isolated  map[uint64]bool
}

// memQueueLen is how many messages a link holds before it drops.
const memQueueLen = 4096

type memLink struct {
	from, to uint64
	ch       chan *raftpb.Message
}

// NewMemNetwork returns an empty network. Close it when done.
func NewMemNetwork() *MemNetwork {
	ctx, cancel := context.WithCancel(context.Background())
	return &MemNetwork{
		ctx:       ctx,
		cancel:    cancel,
		nodes:     map[uint64]*Node{},
		reporters: map[uint64]Reporter{},
		links:     map[[2]uint64]*memLink{},
		cut:       map[[2]uint64]bool{},
		isolated:  map[uint64]bool{},
	}
}

// Transport returns the Transport for the server id, to put in its
// Config. A restarted server may take a new one.
func (nw *MemNetwork) Transport(id uint64) *MemTransport {
	return &MemTransport{nw: nw, id: id}
}

// Register makes n the receiver of messages to id (nil: nobody, messages
// to id are dropped). Register a restarted server's new Node again.
func (nw *MemNetwork) Register(id uint64, n *Node) {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	if n == nil {
		delete(nw.nodes, id)
		return
	}
	nw.nodes[id] = n
}

// Cut drops every message between a and b, both ways, until Heal(a, b) or
// HealAll. Messages already queued are dropped too.
func (nw *MemNetwork) Cut(a, b uint64) {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	nw.cut[[2]uint64{a, b}] = true
	nw.cut[[2]uint64{b, a}] = true
}

// Block drops every message from → to, one way, until Heal(from, to) or
// HealAll; messages to → from still go through. Messages already queued
// are dropped too.
func (nw *MemNetwork) Block(from, to uint64) {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	nw.cut[[2]uint64{from, to}] = true
}

// Heal undoes Cut(a, b) and Block either way. It does not undo Isolate.
func (nw *MemNetwork) Heal(a, b uint64) {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	delete(nw.cut, [2]uint64{a, b})
	delete(nw.cut, [2]uint64{b, a})
}

// Isolate drops every message to and from id until HealAll.
func (nw *MemNetwork) Isolate(id uint64) {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	nw.isolated[id] = true
}

// HealAll undoes every Cut and Isolate.
func (nw *MemNetwork) HealAll() {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	clear(nw.cut)
	clear(nw.isolated)
}

// Close stops delivering and waits for the link goroutines to end.
func (nw *MemNetwork) Close() {
	nw.cancel()
	nw.wg.Wait()
}

func (nw *MemNetwork) blockedLocked(from, to uint64) bool {
	return nw.cut[[2]uint64{from, to}] || nw.isolated[from] || nw.isolated[to]
}

// link returns the queue from → to, starting its goroutine the first time.
func (nw *MemNetwork) link(from, to uint64) *memLink {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	k := [2]uint64{from, to}
	l := nw.links[k]
	if l == nil {
		l = &memLink{from: from, to: to, ch: make(chan *raftpb.Message, memQueueLen)}
		nw.links[k] = l
		nw.wg.Add(1)
		go nw.deliverLoop(l)
	}
	return l
}

func (nw *MemNetwork) deliverLoop(l *memLink) {
	defer nw.wg.Done()
	for {
		select {
		case m := <-l.ch:
			nw.deliver(l, m)
		case <-nw.ctx.Done():
			return
		}
	}
}

func (nw *MemNetwork) deliver(l *memLink, m *raftpb.Message) {
	nw.mu.Lock()
	blocked := nw.blockedLocked(l.from, l.to)
	node := nw.nodes[l.to]
	rep := nw.reporters[l.from]
	nw.mu.Unlock()
	snap := m.GetType() == raftpb.MsgSnap
	if !blocked && node != nil {
		if err := node.Step(nw.ctx, m); err == nil {
			if snap && rep != nil {
				rep.ReportSnapshot(l.to, false)
			}
			return
		}
	}
	if rep != nil {
		rep.ReportUnreachable(l.to)
		if snap {
			rep.ReportSnapshot(l.to, true)
		}
	}
}

// MemTransport is one server's Transport on a MemNetwork.
type MemTransport struct {
	nw *MemNetwork
	id uint64
}

var _ ReportingTransport = (*MemTransport)(nil)

// Send queues a copy of each message on its link (the receiver must not
// share the sender's protobufs). A full queue drops the message.
func (t *MemTransport) Send(msgs []*raftpb.Message) {
	for _, m := range msgs {
		l := t.nw.link(t.id, m.GetTo())
		select {
		case l.ch <- proto.CloneOf(m):
		default:
			if m.GetType() == raftpb.MsgSnap {
				t.nw.mu.Lock()
				rep := t.nw.reporters[t.id]
				t.nw.mu.Unlock()
				if rep != nil {
					// Not from Send's goroutine: that is the
					// sender's loop, which the report waits for.
					go rep.ReportSnapshot(m.GetTo(), true)
				}
			}
		}
	}
}

// SetPeer is a no-op: the network routes by ID.
func (t *MemTransport) SetPeer(id uint64, addr string) {}

// Attach makes r receive this server's delivery failures.
func (t *MemTransport) Attach(r Reporter) {
	t.nw.mu.Lock()
	defer t.nw.mu.Unlock()
	t.nw.reporters[t.id] = r
}
