package raftlog

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
)

// Node is one server's member of the replicated log. Its methods are safe
// for concurrent use. One goroutine, the loop, owns the raft.RawNode, the
// WAL and the StateMachine; the methods hand it work through channels.
type Node struct {
	cfg       Config
	id        uint64
	log       *slog.Logger
	sm        StateMachine
	transport Transport
	storage   *raft.MemoryStorage

	// Owned by the loop goroutine.
	rn             *raft.RawNode
	wal            *wal
	confState      *raftpb.ConfState
	members        map[uint64]string // ID → address, as applied
	membersChanged bool
	applied        uint64 // last index applied: entries of any kind, or a snapshot
	smApplied      uint64 // last index the StateMachine holds
	snapIndex      uint64 // index of the newest snapshot
	nextSnapTry    uint64 // after a failed Snapshot, do not retry before this index
	// compactAll: a server joined; the next maybeSnapshot takes a snapshot
	// and compacts the whole log into it (apply.go).
	compactAll   bool
	pendingReads []pendingRead
	raftState    raft.StateType
	afterAdvance []func()
	finishing    []finished // applied proposals, answered by publish

	recvc    chan *raftpb.Message
	reqc     chan func()
	stopc    chan struct{}
	done     chan struct{}
	stopOnce sync.Once
	err      error // why the loop stopped; written before done is closed

	seq atomic.Uint64 // proposal and read sequence numbers

	mu         sync.Mutex
	proposals  map[uint64]chan proposalResult
	reads      map[uint64]chan struct{}
	status     Status
	leadership Leadership
	watchers   map[uint64]chan Leadership
	stopped    bool // watchers closed; no new ones
	nextWatch  uint64
}

type proposalResult struct {
	result any
	index  uint64
	err    error // the call's error (ErrUnknownOutcome); result is then nil
}

type finished struct {
	ch  chan proposalResult
	res proposalResult
}

type pendingRead struct {
	index uint64
	ch    chan struct{}
}

// Start opens cfg.Dir and starts the Node: it restarts from Dir when Dir
// holds state, and otherwise bootstraps the group from cfg.Bootstrap, or
// (cfg.Join) waits to be brought up to date by the leader.
func Start(cfg Config) (*Node, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("raftlog: create Config.Dir: %w", err)
	}
	log := cfg.Logger.With("raft_id", cfg.ID)
	w, st, found, err := openWAL(cfg.Dir, log)
	if err != nil {
		return nil, err
	}
	n := &Node{
		cfg:       cfg,
		id:        cfg.ID,
		log:       log,
		sm:        cfg.StateMachine,
		transport: cfg.Transport,
		storage:   raft.NewMemoryStorage(),
		wal:       w,
		confState: &raftpb.ConfState{},
		members:   map[uint64]string{},
		recvc:     make(chan *raftpb.Message, 1024),
		reqc:      make(chan func(), 256),
		stopc:     make(chan struct{}),
		done:      make(chan struct{}),
		proposals: map[uint64]chan proposalResult{},
		reads:     map[uint64]chan struct{}{},
		watchers:  map[uint64]chan Leadership{},
	}
	n.seq.Store(randomSeq())
	fresh := !found || st.empty()
	if err := n.load(st, fresh); err != nil {
		w.close()
		return nil, err
	}
	n.rn, err = raft.NewRawNode(&raft.Config{
		ID:                n.id,
		ElectionTick:      cfg.ElectionTicks,
		HeartbeatTick:     cfg.HeartbeatTicks,
		Storage:           n.storage,
		MaxSizePerMsg:     1 << 20,
		MaxInflightMsgs:   256,
		CheckQuorum:       true,
		PreVote:           true,
		ReadOnlyOption:    raft.ReadOnlySafe,
		StepDownOnRemoval: true,
		Logger:            raftLogger{log},
	})
	if err != nil {
		w.close()
		return nil, fmt.Errorf("raftlog: start raft: %w", err)
	}
	if fresh && !cfg.Join {
		peers := make([]raft.Peer, len(cfg.Bootstrap))
		for i, p := range cfg.Bootstrap {
			peers[i] = raft.Peer{ID: p.ID, Context: confContext{Addr: p.Addr}.encode()}
		}
		if err := n.rn.Bootstrap(peers); err != nil {
			w.close()
			return nil, fmt.Errorf("raftlog: bootstrap: %w", err)
		}
	}
	if rt, ok := n.transport.(ReportingTransport); ok {
		rt.Attach(n)
	}
	for _, ps := range [][]Peer{cfg.Bootstrap, cfg.JoinPeers} {
		for _, p := range ps {
			if p.ID != n.id {
				n.transport.SetPeer(p.ID, p.Addr)
			}
		}
	}
	for id, addr := range n.members {
		if id != n.id {
			n.transport.SetPeer(id, addr)
		}
	}
	n.membersChanged = true
	n.publish()
	log.Info("raft log started", "dir", cfg.Dir, "restarted", !fresh, "snapshot", n.snapIndex,
		"applied", n.smApplied, "entries", len(st.ents))
	go n.run()
	return n, nil
}

// load fills the MemoryStorage from the WAL and its snapshot, and brings
// the StateMachine up to the snapshot.
func (n *Node) load(st walState, fresh bool) error {
	if fresh {
		if a := n.sm.AppliedIndex(); a > 0 {
			return fmt.Errorf("raftlog: the state machine has applied index %d but %s holds no raft log: "+
				"start with an empty state machine, or restore the log's directory", a, n.cfg.Dir)
		}
		if !n.cfg.Join && len(n.cfg.Bootstrap) == 0 {
			return fmt.Errorf("raftlog: %s holds no raft log: set Config.Bootstrap to found a group, or Config.Join to join one", n.cfg.Dir)
		}
		return nil
	}
	if st.snapIndex > 0 {
		snap, err := loadSnapFile(n.cfg.Dir, st.snapTerm, st.snapIndex)
		if err != nil {
			return err
		}
		members, state, err := decodeSnapData(snap.GetData())
		if err != nil {
			return fmt.Errorf("%w: snapshot %d: %v", ErrCorrupt, st.snapIndex, err)
		}
		if err := n.storage.ApplySnapshot(&raftpb.Snapshot{Metadata: snap.GetMetadata()}); err != nil {
			return fmt.Errorf("raftlog: load snapshot %d: %w", st.snapIndex, err)
		}
		if n.sm.AppliedIndex() < st.snapIndex {
			if err := n.sm.Restore(bytes.NewReader(state), st.snapIndex); err != nil {
				return fmt.Errorf("raftlog: restore the state machine from snapshot %d: %w", st.snapIndex, err)
			}
		}
		n.setMembers(members)
		n.confState = pbConfState(snap.GetMetadata().GetConfState())
		n.applied, n.snapIndex = st.snapIndex, st.snapIndex
	}
	n.smApplied = n.sm.AppliedIndex()
	last := st.snapIndex
	if len(st.ents) > 0 {
		if first := st.ents[0].GetIndex(); first > st.snapIndex+1 {
			return fmt.Errorf("%w: WAL entries start at %d, after snapshot %d", ErrCorrupt, first, st.snapIndex)
		}
		last = max(last, st.ents[len(st.ents)-1].GetIndex())
	}
	if n.smApplied > last {
		// Entries are in the WAL before they are applied: the log's
		// directory is older than the state machine.
		return fmt.Errorf("raftlog: the state machine has applied index %d, past the last entry (%d) of the raft log in %s",
			n.smApplied, last, n.cfg.Dir)
	}
	if hs := st.hs; !raft.IsEmptyHardState(hs) {
		if hs.GetCommit() > last {
			return fmt.Errorf("%w: WAL commit index %d is past its last entry %d", ErrCorrupt, hs.GetCommit(), last)
		}
		if err := n.storage.SetHardState(hs); err != nil {
			return err
		}
	}
	return n.storage.Append(st.ents)
}

func randomSeq() uint64 {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
	// Random, so that a restarted server never matches an entry it
	// proposed before the restart to a new call; the top bits clear, so
	// that counting up never wraps.
	return binary.BigEndian.Uint64(b[:]) >> 2
}

// Stop stops the Node and closes its WAL; it returns once the loop has
// ended. Calls waiting on the Node return ErrStopped. Idempotent. The
// Transport is the caller's to close.
func (n *Node) Stop() {
	n.stopOnce.Do(func() { close(n.stopc) })
	<-n.done
}

// Done is closed when the Node has stopped, by Stop or by a fatal error.
func (n *Node) Done() <-chan struct{} { return n.done }

// Err is why the Node stopped on its own (a WAL or snapshot write failed,
// the state machine could not restore a snapshot): after that the server
// must not take part in the group until the cause is fixed. nil while
// running and after Stop.
func (n *Node) Err() error {
	select {
	case <-n.done:
		return n.err
	default:
		return nil
	}
}

func (n *Node) stoppedErr() error {
	if n.err != nil {
		return fmt.Errorf("%w: %v", ErrStopped, n.err)
	}
	return ErrStopped
}

// run is the loop: it ticks Raft, steps messages and requests into it, and
// handles every Ready: persist, send, apply, Advance.
func (n *Node) run() {
	ticker := time.NewTicker(n.cfg.TickInterval)
	defer func() {
		ticker.Stop()
		if err := n.wal.close(); err != nil && n.err == nil {
			n.err = fmt.Errorf("raftlog: close WAL: %w", err)
		}
		if n.err != nil {
			n.log.Error("raft log stopped", "err", n.err)
		}
		n.mu.Lock()
		n.stopped = true
		for id, ch := range n.watchers {
			close(ch)
			delete(n.watchers, id)
		}
		n.mu.Unlock()
		close(n.done)
	}()
	for {
		for n.rn.HasReady() {
			if err := n.handleReady(n.rn.Ready()); err != nil {
				n.err = err
				return
			}
		}
		if err := n.maybeSnapshot(); err != nil {
			n.err = err
			return
		}
		if n.maybeCampaign() {
			continue
		}
		select {
		case <-ticker.C:
			n.rn.Tick()
		case m := <-n.recvc:
			n.step(m)
		case f := <-n.reqc:
			f()
		case <-n.stopc:
			return
		}
		n.drain()
	}
}

// drain takes what else is waiting, so that one Ready (one WAL sync)
// covers many messages and proposals.
func (n *Node) drain() {
	for range 512 {
		select {
		case m := <-n.recvc:
			n.step(m)
		case f := <-n.reqc:
			f()
		default:
			return
		}
	}
}

func (n *Node) step(m *raftpb.Message) {
	if err := n.rn.Step(m); err != nil {
		n.log.Debug("dropped a message", "type", m.GetType().String(), "from", m.GetFrom(), "err", err)
	}
}

// maybeCampaign makes a group whose only voter is this server elect it at
// once, instead of after an election timeout.
// It reports whether it campaigned (and there is a Ready to handle).
func (n *Node) maybeCampaign() bool {
	cs := n.confState
	if len(cs.GetVoters()) != 1 || cs.GetVoters()[0] != n.id || len(cs.GetVotersOutgoing()) != 0 ||
		n.raftState != raft.StateFollower {
		return false
	}
	if err := n.rn.Campaign(); err != nil {
		n.log.Warn("cannot campaign", "err", err)
	}
	n.raftState = n.rn.BasicStatus().RaftState
	return n.rn.HasReady()
}

// handleReady persists rd, sends its messages, applies its committed
// entries and advances Raft. An error is fatal: the WAL or the state
// machine can no longer be trusted to match what was sent.
func (n *Node) handleReady(rd raft.Ready) error {
	var snapMembers []Peer
	var snapState []byte
	gotSnap := !raft.IsEmptySnap(rd.Snapshot)
	// A leader sends its appends before it syncs them (the Raft thesis,
	// 10.2.1; etcd does the same): its own disk write overlaps the
	// followers' round trip, and an entry still commits only once a
	// majority, the leader counted only after its sync, has it. Its
	// HardState changes only in its commit index, which can be learnt
	// again.
	leaderSent := false
	if !gotSnap && rd.SoftState == nil && n.rn.BasicStatus().RaftState == raft.StateLeader {
		saved, _, err := n.storage.InitialState()
		if err == nil && (raft.IsEmptyHardState(rd.HardState) ||
			rd.HardState.GetTerm() == saved.GetTerm() && rd.HardState.GetVote() == saved.GetVote()) {
			n.send(rd.Messages)
			leaderSent = true
		}
	}
	if gotSnap {
		var err error
		if snapMembers, snapState, err = n.saveReceivedSnapshot(rd); err != nil {
			return err
		}
	} else if err := n.wal.save(rd.HardState, rd.Entries, rd.MustSync); err != nil {
		return err
	}
	if !raft.IsEmptyHardState(rd.HardState) {
		if err := n.storage.SetHardState(rd.HardState); err != nil {
			return err
		}
	}
	if err := n.storage.Append(rd.Entries); err != nil {
		return fmt.Errorf("raftlog: append to the log in memory: %w", err)
	}
	if !leaderSent {
		n.send(rd.Messages)
	}
	if gotSnap {
		if err := n.restoreSnapshot(rd.Snapshot.GetMetadata(), snapMembers, snapState); err != nil {
			return err
		}
	}
	if err := n.applyEntries(rd.CommittedEntries); err != nil {
		return err
	}
	n.readStates(rd.ReadStates)
	n.publish()
	n.rn.Advance(rd)
	for _, f := range n.afterAdvance {
		f()
	}
	n.afterAdvance = n.afterAdvance[:0]
	return nil
}

// send hands msgs to the Transport. Each MsgSnap gets a snapshot made
// now, at the applied index, as etcd does: the one Raft took from the
// MemoryStorage can predate the configuration change that added the
// recipient, and Raft refuses a snapshot whose configuration lacks it.
// The recipient acknowledges the newer index and Raft resumes from there.
func (n *Node) send(msgs []*raftpb.Message) {
	if len(msgs) == 0 {
		return
	}
	var fresh *raftpb.Snapshot
	out := msgs[:0]
	for _, m := range msgs {
		if m.GetType() == raftpb.MsgSnap {
			if fresh == nil {
				var err error
				if fresh, err = n.snapshotNow(); err != nil {
					n.log.Error("cannot make a snapshot to send", "to", m.GetTo(), "err", err)
					to := m.GetTo()
					n.afterAdvance = append(n.afterAdvance, func() { n.rn.ReportSnapshot(to, raft.SnapshotFailure) })
					continue
				}
			}
			m.Snapshot = fresh
			n.log.Info("sending a snapshot", "to", m.GetTo(), "index", fresh.GetMetadata().GetIndex(), "bytes", len(fresh.GetData()))
		}
		out = append(out, m)
	}
	if len(out) > 0 {
		n.transport.Send(out)
	}
}

// snapshotNow returns a snapshot of the state machine and the members at
// the applied index.
func (n *Node) snapshotNow() (*raftpb.Snapshot, error) {
	term, err := n.storage.Term(n.applied)
	if err != nil {
		return nil, fmt.Errorf("term of applied index %d: %w", n.applied, err)
	}
	var buf bytes.Buffer
	if err := n.sm.Snapshot(&buf); err != nil {
		return nil, fmt.Errorf("state machine snapshot: %w", err)
	}
	return &raftpb.Snapshot{
		Data: encodeSnapData(n.peers(), buf.Bytes()),
		Metadata: &raftpb.SnapshotMetadata{
			Index:     new(n.applied),
			Term:      new(term),
			ConfState: pbConfState(n.confState),
		},
	}, nil
}
