package raftlog

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"time"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
)

// ErrNotMember: RemoveMember or TransferLeadership named a server that is
// not a member (a voter, for TransferLeadership) as this server has
// applied the configuration.
var ErrNotMember = errors.New("raftlog: not a member of the group")

// errNoLeaderSince is ErrUnknownOutcome of a call whose server was cut off
// from the majority after its proposal left.
var errNoLeaderSince = fmt.Errorf("%w: this server lost its leader after the proposal left it and found none for two election timeouts",
	ErrUnknownOutcome)

// do runs f on the loop goroutine. It returns once f is queued, not run.
func (n *Node) do(ctx context.Context, f func()) error {
	select {
	case n.reqc <- f:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-n.done:
		return n.stoppedErr()
	}
}

// call runs f on the loop goroutine and returns its error.
func (n *Node) call(ctx context.Context, f func() error) error {
	errc := make(chan error, 1)
	if err := n.do(ctx, func() { errc <- f() }); err != nil {
		return err
	}
	select {
	case err := <-errc:
		return err
	case <-n.done:
		return n.stoppedErr()
	}
}

// Propose replicates data and waits until this server has applied it, and
// returns what StateMachine.Apply returned here and the entry's index. On
// a follower Raft forwards the proposal to the leader; the call still
// returns only once this server has applied the entry, so a read on this
// server right after sees the write.
//
// Errors: ErrNoLeader (no leader known for two election timeouts: this
// server is cut off from the majority; nothing was proposed) or
// ErrProposalDropped (nothing was proposed; retry later), ErrStopped, or
// ctx's error. A proposal can be lost after it was accepted (the leader
// changed before it committed); the call then waits until ctx is done, so
// give ctx a deadline — unless the StateMachine is a DuplicateRejecter,
// whose proposals are proposed again, and which get ErrUnknownOutcome once
// no leader is known for two election timeouts. Any call gets
// ErrUnknownOutcome when this server catches up from a snapshot meanwhile
// (the snapshot may hold the entry, applied without an answer). A ctx error or
// ErrUnknownOutcome does not say that data was not applied: it may still
// commit.
func (n *Node) Propose(ctx context.Context, data []byte) (result any, index uint64, err error) {
	seq, ch := n.expect()
	defer n.forget(seq)
	entry := encodeEntry(n.id, seq, data)
	propose := func() error { return n.call(ctx, func() error { return n.proposeErr(n.rn.Propose(entry)) }) }
	err = propose()
	if errors.Is(err, ErrNoLeader) && n.awaitLeader(ctx) {
		err = propose() // an election was going on: it ended
	}
	if err != nil {
		return nil, 0, err
	}
	// A state machine that rejects a second copy gets a proposal Raft may
	// have dropped proposed again, with the same sequence number:
	// whichever copy applies first answers this call.
	var retry <-chan time.Time
	if _, ok := n.sm.(DuplicateRejecter); ok {
		t := time.NewTicker(ReproposeAfter * time.Duration(n.cfg.ElectionTicks) * n.cfg.TickInterval)
		defer t.Stop()
		retry = t.C
	}
	return n.await(ctx, ch, retry, func() error {
		err := propose()
		if errors.Is(err, ErrNoLeader) && !n.awaitLeader(ctx) {
			// Cut off from the majority: the call ends, without
			// knowing whether the first copy was committed.
			return errNoLeaderSince
		}
		if errors.Is(err, ErrNoLeader) || errors.Is(err, ErrProposalDropped) {
			return nil // the next tick tries again
		}
		n.log.Debug("proposed again a proposal not applied in time", "seq", seq)
		return err
	})
}

// awaitLeader waits, for at most two election timeouts (or until ctx is
// done), for a leader to be known; it reports whether one is. A write made
// during an election goes through once it ends; one on a server cut off
// from the majority still fails soon.
func (n *Node) awaitLeader(ctx context.Context) bool {
	watch, cancel := n.WatchLeadership()
	defer cancel()
	t := time.NewTimer(2 * time.Duration(n.cfg.ElectionTicks) * n.cfg.TickInterval)
	defer t.Stop()
	for {
		select {
		case l, ok := <-watch:
			if !ok {
				return false
			}
			if l.LeaderID != 0 {
				return true
			}
		case <-t.C:
			return false
		case <-ctx.Done():
			return false
		}
	}
}

// expect registers a call waiting for the proposal it is about to make.
func (n *Node) expect() (uint64, chan proposalResult) {
	seq := n.seq.Add(1)
	ch := make(chan proposalResult, 1)
	n.mu.Lock()
	n.proposals[seq] = ch
	n.mu.Unlock()
	return seq, ch
}

func (n *Node) forget(seq uint64) {
	n.mu.Lock()
	delete(n.proposals, seq)
	n.mu.Unlock()
}

// await waits for the result on ch; at each tick of retry (nil: never) it
// calls again, and gives up on its error.
func (n *Node) await(ctx context.Context, ch chan proposalResult, retry <-chan time.Time, again func() error) (any, uint64, error) {
	for {
		select {
		case r := <-ch:
			return r.result, r.index, r.err
		case <-ctx.Done():
			return nil, 0, ctx.Err()
		case <-n.done:
			return nil, 0, n.stoppedErr()
		case <-retry:
			if err := again(); err != nil {
				return nil, 0, err
			}
		}
	}
}

// proposeErr turns Raft's refusal into this package's errors. Loop only.
func (n *Node) proposeErr(err error) error {
	if !errors.Is(err, raft.ErrProposalDropped) {
		return err
	}
	if n.rn.BasicStatus().Lead == raft.None {
		return ErrNoLeader
	}
	return ErrProposalDropped
}

// ReadIndex is a linearizable read barrier (Raft's ReadIndex, ReadOnlySafe):
// it returns once this server has applied everything that was committed
// when the call began, so that a read of the state machine after it sees
// every write that completed before it. It works on followers (Raft asks
// the leader). Unanswered, it asks again every election timeout, until
// ctx is done or no leader is known for two election timeouts
// (ErrNoLeader: this server is cut off from the majority).
func (n *Node) ReadIndex(ctx context.Context) error {
	retry := time.Duration(n.cfg.ElectionTicks) * n.cfg.TickInterval
	for {
		id := n.seq.Add(1)
		ch := make(chan struct{})
		n.mu.Lock()
		n.reads[id] = ch
		n.mu.Unlock()
		rctx := binary.BigEndian.AppendUint64(nil, id)
		if err := n.do(ctx, func() { n.rn.ReadIndex(rctx) }); err != nil {
			n.forgetRead(id)
			return err
		}
		t := time.NewTimer(retry)
		var timeout <-chan time.Time = t.C
		for timeout != nil {
			select {
			case <-ch:
				t.Stop()
				return nil
			case <-ctx.Done():
				t.Stop()
				n.forgetRead(id)
				return ctx.Err()
			case <-n.done:
				t.Stop()
				return n.stoppedErr()
			case <-timeout:
				if n.forgetRead(id) {
					if !n.awaitLeader(ctx) {
						return ErrNoLeader // cut off from the majority
					}
					timeout = nil // unanswered: ask again
					continue
				}
				// Answered; waiting for this server to apply up to it.
				timeout = nil
				select {
				case <-ch:
					return nil
				case <-ctx.Done():
					return ctx.Err()
				case <-n.done:
					return n.stoppedErr()
				}
			}
		}
	}
}

// forgetRead drops a read request not yet answered; it reports whether it
// was still unanswered.
func (n *Node) forgetRead(id uint64) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	_, ok := n.reads[id]
	delete(n.reads, id)
	return ok
}

// AddVoter adds p as a voter (or makes a learner a voter) and waits until
// this server has applied the change. Start p's Node with Join (and
// JoinPeers) before or after; it catches up from the leader. Adding a
// server that already is a voter at the same address does nothing.
// Raft allows one membership change at a time: a change proposed while
// another is pending is dropped, and the call waits until ctx is done.
func (n *Node) AddVoter(ctx context.Context, p Peer) error {
	if p.ID == 0 || raft.IsLocalMsgTarget(p.ID) {
		return fmt.Errorf("raftlog: AddVoter: invalid ID %d", p.ID)
	}
	return n.changeMembership(ctx, raftpb.ConfChangeAddNode, p, func() (bool, error) {
		addr, member := n.members[p.ID]
		if member && addr == p.Addr && slices.Contains(n.confState.GetVoters(), p.ID) {
			return true, nil
		}
		return false, nil
	})
}

// AddLearner adds p as a learner: it receives the log but does not vote
// nor count towards the majority, so a new server catches up without
// making the group wait for it. Make it a voter with AddVoter once it has
// caught up. Adding a member that already is one (learner or voter) does
// nothing.
func (n *Node) AddLearner(ctx context.Context, p Peer) error {
	if p.ID == 0 || raft.IsLocalMsgTarget(p.ID) {
		return fmt.Errorf("raftlog: AddLearner: invalid ID %d", p.ID)
	}
	return n.changeMembership(ctx, raftpb.ConfChangeAddLearnerNode, p, func() (bool, error) {
		_, member := n.members[p.ID]
		return member, nil
	})
}

// SetAddress records a member's new address (a server that moved) and
// waits until this server has applied the change; every member's
// Transport then sends to it there. Setting the address it has does
// nothing.
func (n *Node) SetAddress(ctx context.Context, p Peer) error {
	if p.Addr == "" {
		return fmt.Errorf("raftlog: SetAddress %d: empty address", p.ID)
	}
	return n.changeMembership(ctx, raftpb.ConfChangeUpdateNode, p, func() (bool, error) {
		addr, member := n.members[p.ID]
		if !member {
			return false, fmt.Errorf("raftlog: SetAddress %d: %w", p.ID, ErrNotMember)
		}
		return addr == p.Addr, nil
	})
}

// RemoveMember removes server id from the group and waits until this
// server has applied the change. The removed server is no longer sent
// anything; stop it. Removing the leader makes it step down once applied.
func (n *Node) RemoveMember(ctx context.Context, id uint64) error {
	return n.changeMembership(ctx, raftpb.ConfChangeRemoveNode, Peer{ID: id}, func() (bool, error) {
		if _, ok := n.members[id]; !ok {
			return false, fmt.Errorf("raftlog: RemoveMember %d: %w", id, ErrNotMember)
		}
		if v := n.confState.GetVoters(); len(v) == 1 && v[0] == id {
			return false, fmt.Errorf("raftlog: RemoveMember %d: it is the group's last voter", id)
		}
		return false, nil
	})
}

// changeMembership proposes a ConfChange of typ for p, after check (run
// on the loop: done=true means there is nothing to change), and waits for
// it to be applied here.
func (n *Node) changeMembership(ctx context.Context, typ raftpb.ConfChangeType, p Peer, check func() (done bool, err error)) error {
	seq, ch := n.expect()
	defer n.forget(seq)
	cc := &raftpb.ConfChange{
		Type:    typ.Enum(),
		NodeId:  new(p.ID),
		Context: confContext{Addr: p.Addr, From: n.id, Seq: seq}.encode(),
	}
	nothing := errors.New("nothing to change")
	err := n.call(ctx, func() error {
		done, err := check()
		if err != nil {
			return err
		}
		if done {
			return nothing
		}
		return n.proposeErr(n.rn.ProposeConfChange(cc))
	})
	if errors.Is(err, nothing) {
		return nil
	}
	if err != nil {
		return err
	}
	_, _, err = n.await(ctx, ch, nil, nil)
	return err
}

// TransferLeadership asks the leader to hand leadership to voter to, and
// waits until this server sees to as leader. Raft gives up a transfer
// that does not complete within an election timeout; the call asks again
// until ctx is done.
func (n *Node) TransferLeadership(ctx context.Context, to uint64) error {
	watch, cancel := n.WatchLeadership()
	defer cancel()
	ask := func() error {
		return n.call(ctx, func() error {
			if !slices.Contains(n.confState.GetVoters(), to) {
				return fmt.Errorf("raftlog: TransferLeadership to %d: %w", to, ErrNotMember)
			}
			if n.rn.BasicStatus().Lead == raft.None {
				return ErrNoLeader
			}
			n.rn.TransferLeader(to)
			return nil
		})
	}
	if err := ask(); err != nil {
		return err
	}
	retry := time.NewTicker(2 * time.Duration(n.cfg.ElectionTicks) * n.cfg.TickInterval)
	defer retry.Stop()
	for {
		select {
		case l, ok := <-watch:
			if !ok {
				return n.stoppedErr()
			}
			if l.LeaderID == to {
				return nil
			}
		case <-retry.C:
			if err := ask(); err != nil && !errors.Is(err, ErrNoLeader) {
				return err
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Step delivers a message a peer sent (the Transport calls it). It blocks
// while the Node's inbox is full, until ctx is done.
func (n *Node) Step(ctx context.Context, m *raftpb.Message) error {
	if m == nil {
		return errors.New("raftlog: Step: nil message")
	}
	select {
	case n.recvc <- m:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-n.done:
		return n.stoppedErr()
	}
}

// ReportUnreachable implements Reporter.
func (n *Node) ReportUnreachable(id uint64) {
	_ = n.do(context.Background(), func() { n.rn.ReportUnreachable(id) })
}

// ReportSnapshot implements Reporter.
func (n *Node) ReportSnapshot(id uint64, failed bool) {
	status := raft.SnapshotFinish
	if failed {
		status = raft.SnapshotFailure
	}
	_ = n.do(context.Background(), func() { n.rn.ReportSnapshot(id, status) })
}

var _ Reporter = (*Node)(nil)
