package raftlog

import (
	"io"

	"go.etcd.io/raft/v3/raftpb"
)

// StateMachine is what the log drives: every server applies the same
// entries in the same order. All its methods are called from the Node's one
// loop goroutine, never concurrently with each other, so an implementation
// needs no locking against the log (it may need some against its own
// readers).
type StateMachine interface {
	// Apply applies one committed normal entry's data, deterministically,
	// and returns a result that is handed back to the Propose call that
	// proposed it (on whichever server that was; on the others it is
	// dropped). It must persist index atomically with its effect, so that
	// AppliedIndex survives a crash. The log calls it only for index >
	// AppliedIndex() as of Start, in increasing order; an implementation
	// should still skip an index <= its applied index (idempotent per
	// index). data is the proposer's bytes, without the log's header; it
	// must not be retained after Apply returns unless copied.
	Apply(index, term uint64, data []byte) any
	// AppliedIndex is the index of the last entry whose effect is durable.
	// After a restart the log replays the committed entries after it.
	AppliedIndex() uint64
	// Snapshot writes the whole state, as of AppliedIndex, to w.
	Snapshot(w io.Writer) error
	// Restore replaces the whole state with one Snapshot wrote, which was
	// taken at index; afterwards AppliedIndex must return index.
	Restore(r io.Reader, index uint64) error
}

// DuplicateRejecter is a StateMachine that applies a proposal's data at
// most once however often it is committed (its data says what state it
// was computed on, and a copy applied later finds the state moved on).
// Propose then proposes again a proposal that was accepted but not applied
// within ReproposeAfter election timeouts: Raft drops a proposal silently
// when the leader changes before it is committed, and without the copy the
// caller would wait until its context ends.
type DuplicateRejecter interface {
	StateMachine
	RejectsDuplicates()
}

// ReproposeAfter is how many election timeouts Propose waits for a
// proposal to a DuplicateRejecter before it proposes it again.
const ReproposeAfter = 3

// Transport carries Raft messages between the servers of a group. Send and
// SetPeer are called from the Node's loop goroutine (SetPeer also from
// Start), so neither may block for long: a slow or dead peer must cost the
// loop nothing. Incoming messages are handed to the receiving Node's Step.
type Transport interface {
	// Send delivers msgs to their To peers, best effort, in order per
	// peer. The transport owns msgs and may keep them. A message that
	// cannot be delivered is dropped (Raft retries); a transport that
	// implements ReportingTransport tells the Node so.
	Send(msgs []*raftpb.Message)
	// SetPeer records the address of peer id, or forgets the peer when
	// addr is "". The Node calls it at Start for the members it knows and
	// on every membership change it applies.
	SetPeer(id uint64, addr string)
}

// Reporter is the feedback a Transport gives about deliveries. *Node
// implements it; its methods may be called from any goroutine, and return
// at once once the Node is stopped.
type Reporter interface {
	// ReportUnreachable says that a message to id could not be delivered,
	// so Raft stops sending optimistically to it and probes instead.
	ReportUnreachable(id uint64)
	// ReportSnapshot says whether a snapshot message (MsgSnap) to id was
	// delivered (failed=false) or not. Raft pauses replication to a peer
	// while its snapshot is in flight; a failure must be reported or the
	// peer can stay paused.
	ReportSnapshot(id uint64, failed bool)
}

// ReportingTransport is a Transport that reports failed deliveries. Start
// calls Attach with the Node before anything is sent; a restarted Node
// attaches again and replaces the previous one.
type ReportingTransport interface {
	Transport
	Attach(r Reporter)
}
