package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync/atomic"

	"github.com/dgraph-io/badger/v4"
)

// The store as the state machine of a replicated log (cluster/raftlog).
//
// With Config.Replicated, a write is computed as before — fn runs over a
// snapshot at revision R and its writes are staged (txn.go) — but instead
// of committing them, write encodes them as a write set: R and each write's
// event record, its object sealed as stored (so a Secret is in clear in no
// log). The write set is proposed to the log, and every server applies the
// committed write sets in log order (Apply): one whose R is not the
// store's revision is refused with ErrStale (it was computed on a state
// that has moved on, as a deposed leader's would be); any other is
// committed exactly as a local write, together with its log index, and
// published to the server's own watchers. So every server holds the same
// objects, revisions and history, and a watch on any of them delivers the
// same events in the same order.
//
// Writes are proposed one batch at a time (proposal, below), each waiting
// for its apply: the next batch's fns must read the one before. A write
// set records the
// values as they were sealed once, on the proposer: applying it seals
// nothing, so every server stores the same bytes.

// Replicator is the replicated log a Replicated store proposes its writes
// to (a *raftlog.Node).
type Replicator interface {
	// Propose replicates data and returns once this server applied it,
	// with Apply's result.
	Propose(ctx context.Context, data []byte) (result any, index uint64, err error)
	// ReadIndex returns once this server applied every entry committed when
	// it was called: a read after it is linearizable.
	ReadIndex(ctx context.Context) error
}

// ErrStale is the error of a write computed on a revision the store has
// moved past before the write set was applied: a write of a leader that
// lost its leadership meanwhile. Retrying computes it again.
var ErrStale = errors.New("the write was computed on an older revision of the store; retry it")

// ErrNotReplicating is the error of a write on a Replicated store before
// Replicate gave it its log.
var ErrNotReplicating = errors.New("the store has no replicated log yet")

// metaAppliedKey holds the index of the last log entry applied (8-byte
// big-endian), committed with the entry's writes.
var metaAppliedKey = []byte("/flotilla/meta/applied")

// writeSetMagic starts an encoded write set (version 1).
const writeSetMagic = "FWS1"

// applyResult is what Apply returns to the proposer.
type applyResult struct {
	rev int64
	err error
}

// Replicate gives a Replicated store its log. Writes before it fail with
// ErrNotReplicating.
func (s *Badger) Replicate(r Replicator) {
	s.repl.Store(&r)
}

func (s *Badger) replicator() Replicator {
	if p := s.repl.Load(); p != nil {
		return *p
	}
	return nil
}

// AppliedIndex is the index of the last log entry applied (0 for a store
// that was never replicated).
func (s *Badger) AppliedIndex() uint64 { return s.applied.Load() }

// RejectsDuplicates tells the log (raftlog.DuplicateRejecter) that a write
// set applies at most once: it carries the revision it was computed at,
// and a copy committed after it finds the store moved on (ErrStale). The
// log may then propose again a write set a leader change dropped.
func (s *Badger) RejectsDuplicates() {}

// readIndex is the barrier before a linearizable read of a Replicated store.
func (s *Badger) readIndex(ctx context.Context) error {
	if !s.cfg.Replicated {
		return nil
	}
	r := s.replicator()
	if r == nil {
		return ErrNotReplicating
	}
	return r.ReadIndex(ctx)
}

// staleRetries is how many times a write is computed again after ErrStale
// (another server's write was applied first) before the error is returned.
// A follower's writes lose to the leader's under load (the leader computes
// on fresher state), so it is generous: a try costs one round trip.
const staleRetries = 50

// batchBytes is how much object JSON a batch of writes gathers before the
// next writer waits for the next batch; a single larger write is a batch
// of its own.
const batchBytes = 1 << 20

// A write of a Replicated store is a proposal. Writers queue theirs;
// whoever holds the proposer's turn (propTurn) takes every queued proposal
// as one batch: it runs their fns one after the other, each over the
// writes of those before it (a child txn, dropped when its fn fails), and
// proposes all their writes as one write set — group commit, so the
// writers waiting meanwhile share one round trip of the log and one fsync
// instead of queueing for one each. Applied, the batch's writes have
// consecutive revisions as if made one after the other.
type proposal struct {
	ctx context.Context
	fn  func(t *txn) error
	// current: this server has applied everything committed before the
	// call began (a read barrier passed, or a batch with the proposal was
	// applied here), so what fn reads is not older than the call.
	current  bool
	attempts int

	// The outcome, final once done is closed.
	rev  int64
	err  error
	done chan struct{}

	// Of the batch being staged: the revision after this proposal's own
	// writes (or where its fn failed).
	end int64
}

func (p *proposal) finish(rev int64, err error) {
	p.rev, p.err = rev, err
	close(p.done)
}

// writeReplicated is write for a Replicated store: fn runs over the current
// revision, its writes are proposed (in a batch with other writers') and
// the call returns once this server applied them. A write that another
// server's beat to the log (both computed at the same revision) is
// computed again over the revision that includes the other, so fn may run
// more than once; it only stages writes, so that changes nothing but its
// result.
func (s *Badger) writeReplicated(ctx context.Context, fn func(t *txn) error) (int64, error) {
	r := s.replicator()
	if r == nil {
		return 0, ErrNotReplicating
	}
	p := &proposal{ctx: ctx, fn: fn, done: make(chan struct{})}
	s.queueMu.Lock()
	s.queue = append(s.queue, p)
	s.queueMu.Unlock()
	select {
	case <-p.done: // in another writer's batch
	case s.propTurn <- struct{}{}:
		for !isDone(p) {
			s.queueMu.Lock()
			batch := s.queue
			s.queue = nil
			s.queueMu.Unlock()
			s.proposeBatch(r, batch)
		}
		<-s.propTurn
	}
	return p.rev, p.err
}

func isDone(p *proposal) bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// proposeBatch stages and proposes batch until each of its proposals is
// done; the proposer's turn is held.
func (s *Badger) proposeBatch(r Replicator, batch []*proposal) {
	for len(batch) > 0 {
		batch = s.proposeOnce(r, batch)
	}
}

// proposeOnce runs one round of a batch: it stages the proposals' fns over
// the current revision and proposes their writes. It returns the
// proposals to run again: those past batchBytes, and all of them after
// ErrStale or a read barrier.
func (s *Badger) proposeOnce(r Replicator, batch []*proposal) (again []*proposal) {
	s.mu.Lock()
	if s.closed || s.broken != nil {
		err := s.broken
		if s.closed {
			err = ErrClosed
		}
		s.mu.Unlock()
		for _, p := range batch {
			p.finish(0, err)
		}
		return nil
	}
	snap := s.db.NewTransaction(false)
	start := s.rev.Load()
	s.mu.Unlock()
	defer snap.Discard()

	all := newTxn(snap, start, s.lim, s.openValue)
	var staged []*proposal
	for _, p := range batch {
		if err := p.ctx.Err(); err != nil {
			p.finish(start, err)
			continue
		}
		if len(all.events) > 0 && all.bytes >= batchBytes {
			again = append(again, p)
			continue
		}
		t := all.child(s.lim)
		err := p.fn(t)
		t.finished = true
		if err == nil {
			err = t.tooLarge
		}
		if err == nil && len(t.events) > 0 {
			all.absorb(t)
		}
		p.end, p.err = all.rev, err
		staged = append(staged, p)
	}
	if len(staged) == 0 {
		return again
	}
	if len(all.events) == 0 {
		// Every fn failed (not found, exists, conflict) or changed nothing
		// on this server's state, which may lag the log (a follower
		// behind, a leader cut off): those answers are reads, so they wait
		// for the read index like one and run again.
		var behind []*proposal
		for _, p := range staged {
			if p.current {
				p.finish(p.end, p.err)
			} else {
				behind = append(behind, p)
			}
		}
		if len(behind) == 0 {
			return again
		}
		ctx, stop := anyContext(behind)
		err := r.ReadIndex(ctx)
		stop()
		for _, p := range behind {
			if err != nil {
				p.finish(start, err)
				continue
			}
			p.current = true
			again = append(again, p)
		}
		return again
	}

	// One write set for the batch. Once applied at revision start, each
	// proposal's answer — its writes, or why its fn failed on the writes
	// before it — held at the apply, a point within its call.
	ws, err := s.encodeWriteSet(start, all.events)
	if err == nil {
		ctx, stop := anyContext(staged)
		var res any
		res, _, err = r.Propose(ctx, ws)
		stop()
		if err == nil {
			if ar, ok := res.(applyResult); !ok {
				err = fmt.Errorf("store: the log applied the write with result %T", res)
			} else {
				err = ar.err
			}
		}
	}
	for _, p := range staged {
		switch {
		case err == nil:
			p.finish(p.end, p.err)
		case errors.Is(err, ErrStale) && p.attempts+1 < staleRetries && p.ctx.Err() == nil:
			p.attempts++
			p.current = true
			again = append(again, p)
		default:
			p.finish(start, err)
		}
	}
	return again
}

// anyContext is a context for the log's call on behalf of ps: done once
// every proposal's context is (one writer giving up does not fail the
// others' writes).
func anyContext(ps []*proposal) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.WithoutCancel(ps[0].ctx))
	left := atomic.Int64{}
	left.Store(int64(len(ps)))
	stops := make([]func() bool, 0, len(ps))
	for _, p := range ps {
		stops = append(stops, context.AfterFunc(p.ctx, func() {
			if left.Add(-1) == 0 {
				cancel()
			}
		}))
	}
	return ctx, func() {
		for _, stop := range stops {
			stop()
		}
		cancel()
	}
}

// encodeWriteSet encodes the events of a write computed at revision base:
// the magic, base, then each event's record (the object sealed as stored)
// with its length.
func (s *Badger) encodeWriteSet(base int64, events []change) ([]byte, error) {
	size := len(writeSetMagic) + 8
	for i := range events {
		size += len(events[i].key) + len(events[i].data) + 32
	}
	out := make([]byte, 0, size)
	out = append(out, writeSetMagic...)
	out = binary.BigEndian.AppendUint64(out, uint64(base))
	for i := range events {
		rec, err := s.eventRecord(&events[i])
		if err != nil {
			return nil, err
		}
		out = binary.AppendUvarint(out, uint64(len(rec)))
		out = append(out, rec...)
	}
	return out, nil
}

// decodeWriteSet is the inverse of encodeWriteSet: the base revision and
// the event records.
func decodeWriteSet(data []byte) (base int64, records [][]byte, err error) {
	if len(data) < len(writeSetMagic)+8 || string(data[:len(writeSetMagic)]) != writeSetMagic {
		return 0, nil, fmt.Errorf("write set: no %s header: %w", writeSetMagic, errMalformed)
	}
	base = int64(binary.BigEndian.Uint64(data[len(writeSetMagic):]))
	rest := data[len(writeSetMagic)+8:]
	for len(rest) > 0 {
		n, k := binary.Uvarint(rest)
		if k <= 0 || n > uint64(len(rest)-k) {
			return 0, nil, fmt.Errorf("write set: record %d: bad length: %w", len(records), errMalformed)
		}
		records = append(records, rest[k:k+int(n)])
		rest = rest[k+int(n):]
	}
	return base, records, nil
}

// txnOfWriteSet rebuilds the committed form of a write set: its events with
// their objects in clear (for the watchers), each key's final value (clear,
// for the size accounting) and the sealed bytes to store.
func (s *Badger) txnOfWriteSet(base int64, records [][]byte) (*txn, error) {
	t := newTxn(nil, base, s.lim, s.openValue)
	t.sealedFinal = map[string][]byte{}
	for i, rec := range records {
		typ, resource, key, stored, err := decodeEvent(rec)
		if err != nil {
			return nil, fmt.Errorf("write set: record %d: %w", i, err)
		}
		clear, err := s.openValue([]byte(key), stored)
		if err != nil {
			return nil, &unopenedError{fmt.Errorf("write set: record %d: %w", i, err)}
		}
		m := t.staged[resource]
		if m == nil {
			m = map[string][]byte{}
			t.staged[resource] = m
		}
		if typ == Deleted {
			m[key] = nil
			t.sealedFinal[key] = nil
		} else {
			m[key] = clear
			t.sealedFinal[key] = stored
		}
		t.rev++
		t.events = append(t.events, change{typ: typ, rev: t.rev, resource: resource, key: key, data: clear, record: rec})
		t.bytes += int64(len(clear))
		t.keyBytes += int64(len(key))
	}
	return t, nil
}

// unopenedError is a write set's Secret that this server cannot open: a
// fault of this server, not of the entry, which the others apply.
type unopenedError struct{ err error }

func (e *unopenedError) Error() string { return e.err.Error() }
func (e *unopenedError) Unwrap() error { return e.err }

// Apply applies one committed entry of the log: a write set (see above).
// It returns an applyResult for the proposer: the revision after it, or
// ErrStale, or why the entry could not be applied. An entry at or below
// AppliedIndex (replayed after a restart) is skipped. What every server
// refuses alike (stale, malformed) only moves the applied index; what
// only this server cannot apply (a Secret under a key it lacks, a disk
// error) breaks its store, which a restart replays from the index.
func (s *Badger) Apply(index, term uint64, data []byte) any {
	s.mu.Lock()
	defer s.mu.Unlock()
	if index <= s.applied.Load() {
		return applyResult{rev: s.rev.Load()}
	}
	if s.closed {
		return applyResult{err: ErrClosed}
	}
	if s.broken != nil {
		return applyResult{err: s.broken}
	}
	data = bytes.Clone(data) // the log reuses its buffer; watchers keep the events
	base, records, err := decodeWriteSet(data)
	if err == nil && base != s.rev.Load() {
		err = fmt.Errorf("%w (computed at revision %d, the store is at %d)", ErrStale, base, s.rev.Load())
	}
	var t *txn
	if err == nil {
		t, err = s.txnOfWriteSet(base, records)
	}
	if _, ok := errors.AsType[*unopenedError](err); ok {
		// Another server sealed it under a key this one lacks: going on
		// would make this server's store differ from the others'.
		s.breakLocked(fmt.Errorf("apply log entry %d: %w (give this server the Secrets key file the others use)", index, err))
		return applyResult{err: s.broken}
	}
	if err != nil {
		// Refused, by every server alike: only the index moves.
		if perr := s.db.Update(func(btx *badger.Txn) error {
			return btx.Set(metaAppliedKey, encodeInt(int64(index)))
		}); perr != nil {
			s.breakLocked(fmt.Errorf("record the applied log index %d: %w", index, perr))
			return applyResult{err: s.broken}
		}
		s.applied.Store(index)
		if !errors.Is(err, ErrStale) {
			s.log.Error("log entry refused", "index", index, "term", term, "err", err)
		}
		return applyResult{rev: s.rev.Load(), err: err}
	}
	t.applied = index
	if err := s.commitLocked(t); err != nil {
		// The log holds the entry: this server cannot go on without it.
		s.breakLocked(fmt.Errorf("apply log entry %d: %w", index, err))
		return applyResult{err: s.broken}
	}
	s.applied.Store(index)
	s.rev.Store(t.rev)
	s.publishLocked(t.events)
	s.trimLocked()
	return applyResult{rev: t.rev}
}

// breakLocked stops the store's reads and writes until a restart; s.mu is
// held.
func (s *Badger) breakLocked(err error) {
	if s.broken != nil {
		return
	}
	s.viewMu.Lock()
	s.broken = fmt.Errorf("%w; the store refuses reads and writes until it is restarted", err)
	s.viewMu.Unlock()
	s.log.Error("store broken", "err", s.broken)
}

// Snapshot writes the whole store (a Badger backup stream), as of its
// applied index: the log calls it between applies.
func (s *Badger) Snapshot(w io.Writer) error {
	if _, err := s.db.Backup(w, 0); err != nil {
		return fmt.Errorf("snapshot the store: %w", err)
	}
	return nil
}

// Restore replaces the store's content with a Snapshot's and makes index
// its applied log index (the index the snapshot was taken at, or 0 for a
// store that starts a new log). Every watch ends (its receiver lists
// again). A store with Secrets encrypted needs Config.Keys that open the
// snapshot's.
func (s *Badger) Restore(r io.Reader, index uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for w := range s.watchers {
		s.dropWatcherLocked(w)
	}
	s.viewMu.Lock()
	defer s.viewMu.Unlock()
	if err := s.db.DropAll(); err != nil {
		return fmt.Errorf("restore the store: drop the old content: %w", err)
	}
	if err := s.db.Load(r, 64); err != nil {
		return fmt.Errorf("restore the store: load the snapshot: %w", err)
	}
	rev, compacted, err := s.recover()
	if err != nil {
		return fmt.Errorf("restore the store: %w", err)
	}
	// The log's index, which a new group (`flotilla snapshot restore`)
	// starts again from 0.
	if err := s.db.Update(func(btx *badger.Txn) error {
		return btx.Set(metaAppliedKey, encodeInt(int64(index)))
	}); err != nil {
		return fmt.Errorf("restore the store: %w", err)
	}
	if err := s.db.Sync(); err != nil {
		return fmt.Errorf("restore the store: %w", err)
	}
	s.rev.Store(rev)
	s.compacted = compacted
	s.applied.Store(index)
	s.log.Info("store restored from a snapshot", "index", index, "revision", rev)
	return nil
}

// readApplied reads the applied log index.
func (s *Badger) readApplied() (uint64, error) {
	var v int64
	err := s.db.View(func(btx *badger.Txn) error {
		var err error
		v, err = readInt(btx, metaAppliedKey)
		return err
	})
	return uint64(v), err
}
