package gossip

import (
	"log/slog"
	"net"
	"net/netip"
	"sync"

	"github.com/hashicorp/memberlist"
)

// Interface guards: delegate is every memberlist hook Membership uses.
var (
	_ memberlist.Delegate         = (*delegate)(nil)
	_ memberlist.EventDelegate    = (*delegate)(nil)
	_ memberlist.MergeDelegate    = (*delegate)(nil)
	_ memberlist.ConflictDelegate = (*delegate)(nil)
)

// delegate connects memberlist to Membership. memberlist calls it from its
// own goroutines (packet handler, prober, TCP listener, Join's caller), often
// with its node lock held: no method blocks or calls back into memberlist.
type delegate struct {
	name    string
	log     *slog.Logger
	hub     *hub
	keyring *memberlist.Keyring // the keys messages are encrypted with

	mu   sync.Mutex
	meta []byte // encoded local Meta; replaced, never modified

	// nameTaken is set by NotifyMerge when a join is refused because the
	// cluster already has a live member with our name; Join reads it.
	nameTaken *NameTakenError
	joining   bool // Join is running
}

// NodeMeta returns the encoded local Meta (at most MetaMaxSize bytes, checked
// by encodeMeta). memberlist does not modify the slice.
func (d *delegate) NodeMeta(limit int) []byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.meta
}

func (d *delegate) setMeta(b []byte) {
	d.mu.Lock()
	d.meta = b
	d.mu.Unlock()
}

// NotifyMsg, GetBroadcasts, LocalState and MergeRemoteState: Flotilla sends
// no user messages or state over gossip; Meta is all.
func (d *delegate) NotifyMsg([]byte)                           {}
func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (d *delegate) LocalState(join bool) []byte                { return nil }
func (d *delegate) MergeRemoteState(buf []byte, join bool)     {}

// NotifyJoin, NotifyUpdate and NotifyLeave are memberlist's EventDelegate:
// called one at a time, with memberlist's node lock held.
func (d *delegate) NotifyJoin(n *memberlist.Node) {
	m, _ := d.member(n)
	d.hub.record(Event{Type: Joined, Member: m})
}

// NotifyUpdate reports a change of metadata. When only the leaving flag
// changed, hub.record swallows the event: Meta and Addr are the same.
func (d *delegate) NotifyUpdate(n *memberlist.Node) {
	m, _ := d.member(n)
	d.hub.record(Event{Type: Updated, Member: m})
}

// NotifyLeave tells a polite leave from a failure.
//
// memberlist v0.7.0 does not say which: the State of the Node it passes is
// always StateAlive (hashicorp/memberlist#293; its own StateLeft vs
// StateDead stays in an unexported struct). So Leave first broadcasts
// metadata with a leaving flag and waits until it has spread, and only then
// tells memberlist to leave; a member that goes away flagged has left. A
// member that crashes before its Leave completes, or whose flag some member
// never received (rare: the flag spreads before the goodbye starts), is
// reported Failed there.
func (d *delegate) NotifyLeave(n *memberlist.Node) {
	t := Failed
	m, leaving := d.member(n)
	if leaving || n.State == memberlist.StateLeft {
		t = Left
	}
	d.hub.record(Event{Type: t, Member: m})
}

// member converts a memberlist node, copying what it keeps, and says whether
// it is flagged as leaving.
func (d *delegate) member(n *memberlist.Node) (Member, bool) {
	m := Member{Name: n.Name, Addr: addrPort(n.Addr, n.Port)}
	meta, leaving, err := decodeMeta(n.Meta)
	if err != nil {
		d.log.Warn("gossip member has unreadable metadata", "node", n.Name, "addr", m.Addr.String(), "err", err)
		return m, false
	}
	m.Meta = meta
	return m, leaving
}

func addrPort(ip net.IP, port uint16) netip.AddrPort {
	a, _ := netip.AddrFromSlice(ip)
	return netip.AddrPortFrom(a.Unmap(), port)
}

// NotifyMerge is called when a join exchanges state, on both sides: on the
// joiner with the cluster's members, on the contacted member with the
// joiner's. It refuses the merge when a live member (alive or suspect) has
// the same name as an incoming one at another address. memberlist would
// otherwise only log the conflict and let Join succeed.
func (d *delegate) NotifyMerge(peers []*memberlist.Node) error {
	for _, p := range peers {
		if p.State == memberlist.StateDead || p.State == memberlist.StateLeft {
			continue
		}
		held, ok := d.hub.lookup(p.Name)
		if !ok {
			continue
		}
		incoming := addrPort(p.Addr, p.Port)
		if held.Addr == incoming {
			continue
		}
		err := &NameTakenError{Name: p.Name, Holder: held.Addr, Claimant: incoming}
		d.mu.Lock()
		if p.Name == d.name && d.joining {
			// We are joining a cluster that already has a member with our
			// name: we are the claimant, the cluster's member the holder.
			err = &NameTakenError{Name: p.Name, Holder: incoming, Claimant: held.Addr}
			d.nameTaken = err
		}
		d.mu.Unlock()
		d.log.Warn("gossip refused a member whose node name is taken",
			"node", p.Name, "holder", err.Holder.String(), "claimant", err.Claimant.String())
		return err
	}
	return nil
}

// startJoin marks a Join as running; its result returns and clears what
// NotifyMerge recorded meanwhile.
func (d *delegate) startJoin() (finish func() *NameTakenError) {
	d.mu.Lock()
	d.joining = true
	d.nameTaken = nil
	d.mu.Unlock()
	return func() *NameTakenError {
		d.mu.Lock()
		defer d.mu.Unlock()
		err := d.nameTaken
		d.joining = false
		d.nameTaken = nil
		return err
	}
}

// NotifyConflict is memberlist's report of two live members with one name
// that met outside a join (two partitions merging). Membership keeps the
// first; the operator must rename one.
func (d *delegate) NotifyConflict(existing, other *memberlist.Node) {
	d.log.Warn("gossip: two members claim one node name; keeping the first, rename the other",
		"node", existing.Name,
		"holder", addrPort(existing.Addr, existing.Port).String(),
		"claimant", addrPort(other.Addr, other.Port).String())
}
