package raftlog

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"maps"
	"math"
	"slices"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// applyEntries applies committed entries in order: normal ones to the
// StateMachine (skipping those it already holds), conf changes to Raft and
// the member list. It runs on the loop goroutine.
func (n *Node) applyEntries(ents []*raftpb.Entry) error {
	for _, e := range ents {
		idx := e.GetIndex()
		if idx <= n.applied {
			continue
		}
		switch e.GetType() {
		case raftpb.EntryNormal:
			n.applyNormal(e)
		case raftpb.EntryConfChange:
			cc := new(raftpb.ConfChange)
			if err := proto.Unmarshal(e.GetData(), cc); err != nil {
				return fmt.Errorf("raftlog: decode conf change at index %d: %w", idx, err)
			}
			n.applyConfChange(cc, idx)
		case raftpb.EntryConfChangeV2:
			// This package proposes only ConfChange; apply a V2 one
			// anyway, as Raft requires, without addresses.
			cc := new(raftpb.ConfChangeV2)
			if err := proto.Unmarshal(e.GetData(), cc); err != nil {
				return fmt.Errorf("raftlog: decode conf change at index %d: %w", idx, err)
			}
			n.confState = n.rn.ApplyConfChange(cc)
			n.log.Warn("applied a ConfChangeV2 this package did not propose", "index", idx)
		}
		n.applied = idx
	}
	n.releaseReads()
	return nil
}

func (n *Node) applyNormal(e *raftpb.Entry) {
	idx := e.GetIndex()
	if len(e.GetData()) == 0 {
		return // a new leader's empty entry, or a refused conf change
	}
	proposer, seq, data, err := decodeEntry(e.GetData())
	if err != nil {
		// Every server skips it alike, so the state machines agree.
		n.log.Error("skipping a committed entry", "index", idx, "err", err)
		return
	}
	if idx <= n.smApplied {
		return // replayed after a restart; the state machine has it
	}
	result := n.sm.Apply(idx, e.GetTerm(), data)
	n.smApplied = idx
	if proposer == n.id {
		n.finish(seq, proposalResult{result: result, index: idx})
	}
}

func (n *Node) applyConfChange(cc *raftpb.ConfChange, idx uint64) {
	cctx, err := decodeConfContext(cc.GetContext())
	if err != nil {
		n.log.Error("conf change with a bad context; applying it without an address", "index", idx, "err", err)
	}
	n.confState = n.rn.ApplyConfChange(cc)
	id := cc.GetNodeId()
	switch cc.GetType() {
	case raftpb.ConfChangeAddNode, raftpb.ConfChangeAddLearnerNode, raftpb.ConfChangeUpdateNode:
		addr := cctx.Addr
		if addr == "" {
			addr = n.members[id] // promoting a learner keeps its address
		}
		if _, known := n.members[id]; !known && id != n.id {
			// A new server starts from a snapshot, never from the log's
			// first entries: the state machine may hold more than the
			// log ever wrote (a store restored from a backup, the
			// group then founded on it).
			n.compactAll = true
		}
		n.members[id] = addr
		if id != n.id {
			n.transport.SetPeer(id, addr)
		}
	case raftpb.ConfChangeRemoveNode:
		delete(n.members, id)
		if id != n.id {
			n.transport.SetPeer(id, "")
		}
	}
	n.membersChanged = true
	n.log.Info("membership changed", "change", cc.GetType().String(), "member", id, "addr", cctx.Addr, "index", idx,
		"voters", n.confState.GetVoters(), "learners", n.confState.GetLearners())
	if cctx.From == n.id && cctx.Seq != 0 {
		n.finish(cctx.Seq, proposalResult{index: idx})
	}
}

// abandonProposals answers every call waiting for a proposal of this
// server with ErrUnknownOutcome, once the state machine was restored from
// the snapshot at index: an entry of the proposal may be in it, applied
// with no result for the call, and a copy proposed again would then be
// refused as a duplicate (a DuplicateRejecter) — an answer that would say
// the write was not applied when it was. Loop only.
func (n *Node) abandonProposals(index uint64) {
	n.mu.Lock()
	seqs := slices.Collect(maps.Keys(n.proposals))
	n.mu.Unlock()
	if len(seqs) == 0 {
		return
	}
	err := fmt.Errorf("%w: this server caught up from the snapshot at index %d, which may hold it", ErrUnknownOutcome, index)
	for _, seq := range seqs {
		n.finish(seq, proposalResult{err: err})
	}
	n.log.Info("calls waiting for a proposal answered as unknown: the server restored a snapshot", "calls", len(seqs), "index", index)
}

// finish queues res for the call waiting for proposal seq, if it still
// is; publish answers it.
func (n *Node) finish(seq uint64, res proposalResult) {
	n.mu.Lock()
	ch, ok := n.proposals[seq]
	delete(n.proposals, seq)
	n.mu.Unlock()
	if ok {
		n.finishing = append(n.finishing, finished{ch, res})
	}
}

// saveReceivedSnapshot makes a snapshot sent by the leader durable: the
// snap file, then a WAL segment that starts at it (with rd's HardState and
// entries), then the in-memory log. The state machine is restored later in
// the Ready, by restoreSnapshot; a crash in between restores at restart.
func (n *Node) saveReceivedSnapshot(rd raft.Ready) ([]Peer, []byte, error) {
	md := rd.Snapshot.GetMetadata()
	members, state, err := decodeSnapData(rd.Snapshot.GetData())
	if err != nil {
		return nil, nil, fmt.Errorf("raftlog: snapshot %d from the leader: %w", md.GetIndex(), err)
	}
	if err := saveSnapFile(n.cfg.Dir, rd.Snapshot); err != nil {
		return nil, nil, err
	}
	if err := n.storage.ApplySnapshot(&raftpb.Snapshot{Metadata: md}); err != nil {
		return nil, nil, fmt.Errorf("raftlog: install snapshot %d: %w", md.GetIndex(), err)
	}
	if err := n.wal.rotate(md.GetIndex(), md.GetTerm(), rd.HardState, rd.Entries); err != nil {
		return nil, nil, err
	}
	if err := purgeSnapFiles(n.cfg.Dir); err != nil {
		n.log.Warn("cannot remove old snapshots", "err", err)
	}
	n.log.Info("received a snapshot", "index", md.GetIndex(), "term", md.GetTerm(), "bytes", len(state))
	return members, state, nil
}

// restoreSnapshot replaces the state machine and the members with a
// received snapshot's.
func (n *Node) restoreSnapshot(md *raftpb.SnapshotMetadata, members []Peer, state []byte) error {
	idx := md.GetIndex()
	if idx <= n.applied {
		return nil
	}
	if n.sm.AppliedIndex() < idx {
		if err := n.sm.Restore(bytes.NewReader(state), idx); err != nil {
			return fmt.Errorf("raftlog: restore the state machine from snapshot %d: %w", idx, err)
		}
	}
	n.smApplied = max(idx, n.sm.AppliedIndex())
	n.abandonProposals(idx)
	n.setMembers(members)
	n.confState = pbConfState(md.GetConfState())
	n.applied, n.snapIndex = idx, idx
	n.releaseReads()
	return nil
}

// maybeSnapshot takes a snapshot once SnapshotEntries entries have been
// applied since the last one: the state machine's state goes to a snap
// file, the WAL rotates to a segment starting at it, and the in-memory log
// is compacted, keeping a tenth of SnapshotEntries entries for followers
// slightly behind. After a server joined (compactAll) it takes one at once
// and keeps no entry: the new server gets the snapshot.
func (n *Node) maybeSnapshot() error {
	all := n.compactAll
	n.compactAll = false
	if all && n.applied == n.snapIndex {
		// The snapshot at this index exists: only compact into it.
		if first, _ := n.storage.FirstIndex(); first <= n.snapIndex {
			if err := n.storage.Compact(n.snapIndex); err != nil {
				return fmt.Errorf("raftlog: compact the log to %d: %w", n.snapIndex, err)
			}
		}
		return nil
	}
	if !all && (n.applied-n.snapIndex < n.cfg.SnapshotEntries || n.applied < n.nextSnapTry) {
		return nil
	}
	snap, err := n.snapshotNow()
	if err != nil {
		// Not fatal: the log keeps growing until a snapshot succeeds.
		n.nextSnapTry = n.applied + max(1, n.cfg.SnapshotEntries/10)
		n.log.Error("cannot take a snapshot; the log is not compacted", "applied", n.applied, "err", err)
		return nil
	}
	if err := saveSnapFile(n.cfg.Dir, snap); err != nil {
		return err
	}
	if _, err := n.storage.CreateSnapshot(n.applied, n.confState, nil); err != nil {
		return fmt.Errorf("raftlog: create snapshot at %d: %w", n.applied, err)
	}
	first, _ := n.storage.FirstIndex()
	last, _ := n.storage.LastIndex()
	tail := n.cfg.SnapshotEntries / 10 // kept for followers a little behind
	if all {
		tail = 0
	}
	compact := n.applied - min(n.applied, tail)
	lo := max(compact+1, first)
	var keep []*raftpb.Entry
	if lo <= last {
		if keep, err = n.storage.Entries(lo, last+1, math.MaxUint64); err != nil {
			return fmt.Errorf("raftlog: read entries %d-%d for the new WAL segment: %w", lo, last, err)
		}
	}
	md := snap.GetMetadata()
	if err := n.wal.rotate(md.GetIndex(), md.GetTerm(), nil, keep); err != nil {
		return err
	}
	if compact >= first {
		if err := n.storage.Compact(compact); err != nil {
			return fmt.Errorf("raftlog: compact the log to %d: %w", compact, err)
		}
	}
	if err := purgeSnapFiles(n.cfg.Dir); err != nil {
		n.log.Warn("cannot remove old snapshots", "err", err)
	}
	n.snapIndex = n.applied
	n.log.Debug("took a snapshot", "index", md.GetIndex(), "term", md.GetTerm(), "bytes", len(snap.GetData()), "compacted_to", compact)
	return nil
}

// readStates answers the ReadIndex calls whose read index Raft has
// confirmed, once this server has applied up to it.
func (n *Node) readStates(rss []raft.ReadState) {
	if len(rss) == 0 {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, rs := range rss {
		if len(rs.RequestCtx) != 8 {
			continue
		}
		id := binary.BigEndian.Uint64(rs.RequestCtx)
		ch, ok := n.reads[id]
		if !ok {
			continue // given up, or retried under another id
		}
		delete(n.reads, id)
		if n.applied >= rs.Index {
			close(ch)
		} else {
			n.pendingReads = append(n.pendingReads, pendingRead{rs.Index, ch})
		}
	}
}

// releaseReads answers the reads whose index is now applied.
func (n *Node) releaseReads() {
	keep := n.pendingReads[:0]
	for _, r := range n.pendingReads {
		if n.applied >= r.index {
			close(r.ch)
		} else {
			keep = append(keep, r)
		}
	}
	clear(n.pendingReads[len(keep):])
	n.pendingReads = keep
}
