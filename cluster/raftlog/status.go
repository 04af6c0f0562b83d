package raftlog

import (
	"cmp"
	"slices"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// publish updates what Status and WatchLeadership report, then answers
// the calls whose proposals were applied: a caller sees its write in
// Status.Applied (and a new member in Status.Members) when it returns.
func (n *Node) publish() {
	bs := n.rn.BasicStatus()
	n.raftState = bs.RaftState
	role := "follower"
	switch {
	case slices.Contains(n.confState.GetLearners(), n.id):
		role = "learner"
	case bs.RaftState == raft.StateLeader:
		role = "leader"
	case bs.RaftState == raft.StateCandidate, bs.RaftState == raft.StatePreCandidate:
		role = "candidate"
	}
	l := Leadership{Term: bs.GetTerm(), LeaderID: bs.Lead, Leader: bs.Lead == n.id}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.status.ID, n.status.Leader, n.status.Term = n.id, bs.Lead, bs.GetTerm()
	n.status.Role, n.status.Commit, n.status.Applied = role, bs.GetCommit(), n.applied
	if n.membersChanged {
		n.status.Members = n.memberList()
		n.membersChanged = false
	}
	for _, f := range n.finishing {
		f.ch <- f.res // buffered 1, and only ever sent once
	}
	clear(n.finishing)
	n.finishing = n.finishing[:0]
	if l != n.leadership {
		if l.LeaderID != n.leadership.LeaderID {
			n.log.Info("leader changed", "leader", l.LeaderID, "term", l.Term, "was", n.leadership.LeaderID)
		}
		n.leadership = l
		for _, ch := range n.watchers {
			offerLatest(ch, l)
		}
	}
}

// offerLatest puts v in ch (buffer 1), replacing a value not yet taken.
// Only the loop sends on watcher channels, so nothing refills ch between
// the drain and the send.
func offerLatest(ch chan Leadership, v Leadership) {
	select {
	case ch <- v:
		return
	default:
	}
	select {
	case <-ch:
	default:
	}
	select {
	case ch <- v:
	default:
	}
}

// memberList returns the members as applied, sorted by ID.
func (n *Node) memberList() []Member {
	ms := make([]Member, 0, len(n.members))
	for id, addr := range n.members {
		ms = append(ms, Member{ID: id, Addr: addr, Voter: !slices.Contains(n.confState.GetLearners(), id)})
	}
	slices.SortFunc(ms, func(a, b Member) int { return cmp.Compare(a.ID, b.ID) })
	return ms
}

// peers returns the members with their addresses, for a snapshot.
func (n *Node) peers() []Peer {
	ps := make([]Peer, 0, len(n.members))
	for _, m := range n.memberList() {
		ps = append(ps, Peer{ID: m.ID, Addr: m.Addr})
	}
	return ps
}

// setMembers replaces the members with ps, telling the Transport.
func (n *Node) setMembers(ps []Peer) {
	next := make(map[uint64]string, len(ps))
	for _, p := range ps {
		next[p.ID] = p.Addr
	}
	for id := range n.members {
		if _, ok := next[id]; !ok && id != n.id {
			n.transport.SetPeer(id, "")
		}
	}
	for id, addr := range next {
		if id != n.id {
			n.transport.SetPeer(id, addr)
		}
	}
	n.members = next
	n.membersChanged = true
}

func pbConfState(cs *raftpb.ConfState) *raftpb.ConfState {
	if cs == nil {
		return &raftpb.ConfState{}
	}
	return proto.CloneOf(cs)
}

// Status returns this server's view of the group, as of the loop's last
// turn.
func (n *Node) Status() Status {
	n.mu.Lock()
	defer n.mu.Unlock()
	st := n.status
	st.Members = slices.Clone(st.Members)
	return st
}

// WatchLeadership returns a channel that receives the leadership at once
// and then on every change of leader or term. It holds one value: one not
// taken in time is replaced by the newer. The channel is closed by cancel
// and when the Node stops.
func (n *Node) WatchLeadership() (<-chan Leadership, func()) {
	ch := make(chan Leadership, 1)
	n.mu.Lock()
	defer n.mu.Unlock()
	ch <- n.leadership
	if n.stopped {
		close(ch)
		return ch, func() {}
	}
	id := n.nextWatch
	n.nextWatch++
	n.watchers[id] = ch
	return ch, func() {
		n.mu.Lock()
		defer n.mu.Unlock()
		if _, ok := n.watchers[id]; ok {
			delete(n.watchers, id)
			close(ch)
		}
	}
}
