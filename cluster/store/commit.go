package store

import (
	"errors"
	"fmt"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// How a transaction commits.
//
// A txn's writes are staged in memory (txn.go). At commit, when they fit in
// one Badger transaction (Badger caps one at 15% of a memtable), the final
// value of every key written, every event and the revision counter go in
// one, as before: atomic by Badger.
//
// A bigger one goes through a redo journal, which is its own events: the
// event log records each write's type, key and object JSON, so replaying
// the events (R, E] in order yields the txn's final values. Its steps:
//
//  1. Journal. The events of revisions R+1..E are written under
//     /flotilla/events/, in as many Badger transactions as it takes. No
//     reader looks past the revision counter R (List reads it from its
//     snapshot; watch replays stop at the revision they started at), so
//     they are invisible.
//  2. Seal. /flotilla/meta/pending = E, one small transaction. From here
//     the commit is decided: a crash before this leaves none of it, a crash
//     after all of it.
//  3. Apply. With viewMu held exclusively (every read waits), the final
//     value of each key written is put (or deleted), in chunks.
//  4. Finish. The revision counter becomes E and the seal is deleted, in one
//     transaction; then reads resume, the events are published and the
//     history trimmed as after any write.
//
// Open (recover) finds a seal and replays its events (puts and deletes of
// the logged objects: idempotent, so a crash during a replay is fine), then
// finishes; or finds no seal and deletes any event past the counter, a
// journal that was never sealed. Every write is fsynced unless
// Config.NoSync; without it, Badger's log replays a prefix of the writes,
// which the seal keeps atomic too.

// commitPhase names the points of a large commit where a test can crash it
// (Config.testHook).
type commitPhase string

const (
	phaseJournalHalf    commitPhase = "journal-half"    // half the events written
	phaseJournalWritten commitPhase = "journal-written" // all, not yet sealed
	phaseSealed         commitPhase = "sealed"          // decided, nothing applied
	phaseApplyHalf      commitPhase = "apply-half"      // half the values applied
	phaseApplied        commitPhase = "applied"         // all applied, not finished

	// RotateKey's: every value re-encrypted, the old keys not yet retired.
	phaseRotateResealed commitPhase = "rotate-resealed"
)

func (s *Badger) hook(p commitPhase) {
	if s.cfg.testHook != nil {
		s.cfg.testHook(p)
	}
}

// entryOverhead is what a Badger entry costs beyond its key and value,
// rounded up (Badger counts 12 or fewer).
const entryOverhead = 64

// commitLocked writes t's staged writes, events and revision; s.mu is held.
func (s *Badger) commitLocked(t *txn) error {
	c := s.newChunks()
	// The one-transaction form: every event and every final value (at most
	// one per write), each with its key, and the revision counter.
	n := 2*int64(len(t.events)) + 1
	size := 2*(t.bytes+t.keyBytes+int64(len(t.events))*(entryOverhead+int64(len(eventPrefix))+10)) + entryOverhead
	if n <= c.maxN && size <= c.maxSize {
		err := s.commitOne(t)
		if !errors.Is(err, badger.ErrTxnTooBig) {
			return err
		}
	}
	return s.commitJournal(t, c)
}

// commitOne commits t in one Badger transaction.
func (s *Badger) commitOne(t *txn) error {
	btx := s.db.NewTransaction(true)
	defer btx.Discard()
	err := t.eachFinal(func(key, data []byte) error {
		if data == nil {
			return btx.Delete(key)
		}
		sealed, err := s.storedValue(t, key, data)
		if err != nil {
			return err
		}
		return btx.Set(key, sealed)
	})
	for i := 0; err == nil && i < len(t.events); i++ {
		var rec []byte
		if rec, err = s.eventRecord(&t.events[i]); err == nil {
			err = btx.Set(eventKey(t.events[i].rev), rec)
		}
	}
	if err == nil {
		err = btx.Set(metaRevisionKey, encodeInt(t.rev))
	}
	if err == nil && t.applied != 0 {
		err = btx.Set(metaAppliedKey, encodeInt(int64(t.applied)))
	}
	if err == nil {
		err = btx.Commit()
	}
	if err != nil {
		return fmt.Errorf("commit revision %d: %w", t.rev, err)
	}
	return nil
}

// commitJournal commits t through the journal (see above).
func (s *Badger) commitJournal(t *txn, c *chunks) error {
	from, to := t.rev-int64(len(t.events))+1, t.rev
	began := time.Now()

	mid := len(t.events) / 2
	for i := range t.events {
		ch := &t.events[i]
		rec, err := s.eventRecord(ch)
		if err == nil {
			err = c.set(eventKey(ch.rev), rec)
		}
		if err != nil {
			return s.abandonJournal(c, from, to, false, fmt.Errorf("write the journal of revisions %d..%d: %w", from, to, err))
		}
		if i == mid && s.cfg.testHook != nil {
			if err := c.flush(); err != nil {
				return s.abandonJournal(c, from, to, false, fmt.Errorf("write the journal of revisions %d..%d: %w", from, to, err))
			}
			s.hook(phaseJournalHalf)
		}
	}
	if err := c.flush(); err != nil {
		return s.abandonJournal(c, from, to, false, fmt.Errorf("write the journal of revisions %d..%d: %w", from, to, err))
	}
	s.hook(phaseJournalWritten)
	err := s.db.Update(func(btx *badger.Txn) error { return btx.Set(metaPendingKey, encodeInt(to)) })
	if err != nil {
		return s.abandonJournal(c, from, to, true, fmt.Errorf("seal the journal of revisions %d..%d: %w", from, to, err))
	}
	s.hook(phaseSealed)
	sealed := time.Now()

	s.viewMu.Lock()
	defer s.viewMu.Unlock()
	half, i := t.finals()/2, 0
	err = t.eachFinal(func(key, data []byte) error {
		var err error
		if data == nil {
			err = c.delete(key)
		} else if data, err = s.storedValue(t, key, data); err == nil {
			err = c.set(key, data)
		}
		if i++; err == nil && i == half && s.cfg.testHook != nil {
			if err = c.flush(); err == nil {
				s.hook(phaseApplyHalf)
			}
		}
		return err
	})
	if err == nil {
		err = c.flush()
	}
	if err == nil {
		s.hook(phaseApplied)
		err = s.finishJournal(to, t.applied)
	}
	if err != nil {
		c.discard()
		s.broken = fmt.Errorf("apply the sealed commit of revisions %d..%d: %w; "+
			"the store refuses reads and writes until it is restarted, which finishes the commit", from, to, err)
		s.log.Error("store broken", "err", s.broken)
		return s.broken
	}
	s.log.Info("large commit, through the journal", "from", from, "to", to, "writes", len(t.events),
		"bytes", t.bytes, "journal", sealed.Sub(began).Round(time.Millisecond),
		"apply", time.Since(sealed).Round(time.Millisecond))
	return nil
}

// finishJournal makes a sealed commit's last revision current and removes
// the seal, in one transaction; with the log index the commit applied (0:
// none, a local write or a recovery).
func (s *Badger) finishJournal(to int64, applied uint64) error {
	return s.db.Update(func(btx *badger.Txn) error {
		if err := btx.Set(metaRevisionKey, encodeInt(to)); err != nil {
			return err
		}
		if applied != 0 {
			if err := btx.Set(metaAppliedKey, encodeInt(int64(applied))); err != nil {
				return err
			}
		}
		return btx.Delete(metaPendingKey)
	})
}

// abandonJournal undoes a journal that failed before it was sealed (or
// while it was, sealed true): it deletes the seal and the events, so that
// the commit is none. Unsealed events left behind are harmless (no reader
// looks past the revision counter, later commits overwrite them, Open
// deletes them), a seal is not: if it cannot be removed the store stops.
func (s *Badger) abandonJournal(c *chunks, from, to int64, sealed bool, cause error) error {
	c.discard()
	err := s.db.Update(func(btx *badger.Txn) error { return btx.Delete(metaPendingKey) })
	if err == nil {
		_, err = s.discardEvents(from - 1)
	}
	if err != nil && sealed {
		s.viewMu.Lock() // s.mu is held by the caller
		s.broken = fmt.Errorf("%w; undo it: %w; restart the store", cause, err)
		s.viewMu.Unlock()
		s.log.Error("store broken", "err", s.broken)
		return s.broken
	}
	if err != nil {
		s.log.Warn("could not delete an abandoned journal; it is deleted at the next start",
			"from", from, "to", to, "err", err)
	}
	return cause
}

// recover reads the revision counter and the start of the history, and
// finishes a sealed large commit or deletes an unsealed journal that a
// crash left (see above). It writes nothing when there is nothing to
// recover, so that an idle store's restart writes nothing.
func (s *Badger) recover() (rev, compacted int64, err error) {
	var pending int64
	var journal bool
	err = s.db.View(func(btx *badger.Txn) error {
		var err error
		if rev, err = readInt(btx, metaRevisionKey); err != nil {
			return err
		}
		if compacted, err = readInt(btx, metaCompactedKey); err != nil {
			return err
		}
		if pending, err = readInt(btx, metaPendingKey); err != nil {
			return err
		}
		// An event past the counter: an unsealed journal.
		it := btx.NewIterator(badger.IteratorOptions{Prefix: eventPrefix})
		defer it.Close()
		it.Seek(eventKey(rev + 1))
		journal = it.ValidForPrefix(eventPrefix)
		return nil
	})
	if errors.Is(err, errMalformed) {
		return 0, 0, fmt.Errorf("%w; the store's own records are corrupt: restore the data directory from a backup, "+
			"or move it away to start empty and let Git re-apply", err)
	}
	if err != nil {
		return 0, 0, fmt.Errorf("read revision: %w", err)
	}
	switch {
	case pending > rev:
		s.log.Warn("finishing a large commit that was interrupted", "from", rev+1, "to", pending)
		if err := s.replayJournal(rev+1, pending); err != nil {
			return 0, 0, fmt.Errorf("finish the interrupted commit of revisions %d..%d: %w", rev+1, pending, err)
		}
		if err := s.finishJournal(pending, 0); err != nil {
			return 0, 0, fmt.Errorf("finish the interrupted commit of revisions %d..%d: %w", rev+1, pending, err)
		}
		// Events past it, of an older journal never sealed, go too.
		if _, err := s.discardEvents(pending); err != nil {
			return 0, 0, fmt.Errorf("discard an interrupted commit after revision %d: %w", pending, err)
		}
		return pending, compacted, nil
	case pending != 0: // a seal at or below the counter: finished already
		if err := s.db.Update(func(btx *badger.Txn) error { return btx.Delete(metaPendingKey) }); err != nil {
			return 0, 0, fmt.Errorf("delete a finished commit's seal: %w", err)
		}
	}
	if journal {
		n, err := s.discardEvents(rev)
		if err != nil {
			return 0, 0, fmt.Errorf("discard an interrupted commit after revision %d: %w", rev, err)
		}
		s.log.Warn("discarded a large commit that was interrupted before it was sealed", "after", rev, "events", n)
	}
	return rev, compacted, nil
}

// replayJournal applies the logged events from..to in order: each logged
// object is put, each deletion deleted. The log is read in batches, so
// memory stays within a chunk. A record that cannot be read is logged and
// skipped (the store still starts; Git re-applies).
func (s *Badger) replayJournal(from, to int64) error {
	c := s.newChunks()
	defer c.discard()
	type op struct {
		key, value []byte // value nil: delete
	}
	next, ended := from, false
	for !ended {
		var ops []op
		var size int64
		err := s.db.View(func(btx *badger.Txn) error {
			it := btx.NewIterator(badger.IteratorOptions{Prefix: eventPrefix, PrefetchValues: true, PrefetchSize: 64})
			defer it.Close()
			it.Seek(eventKey(next))
			for ; it.ValidForPrefix(eventPrefix) && size < c.maxSize; it.Next() {
				item := it.Item()
				rev, ok := eventRev(item.Key())
				if !ok {
					s.log.Error("journal replay: skipping a malformed event key", "key", fmt.Sprintf("%q", item.Key()))
					continue
				}
				if rev > to {
					break
				}
				if rev != next {
					s.log.Error("journal replay: events missing", "from", next, "to", rev-1)
				}
				next = rev + 1
				v, err := item.ValueCopy(nil)
				if err != nil {
					return fmt.Errorf("read event %d: %w", rev, err)
				}
				typ, _, key, data, err := decodeEvent(v)
				if err == nil && key == "" {
					err = errors.New("the record has no key")
				}
				if err != nil {
					s.log.Error("journal replay: skipping an unreadable event", "revision", rev, "err", err)
					continue
				}
				if typ == Deleted {
					data = nil
				}
				ops = append(ops, op{[]byte(key), data})
				size += int64(len(key)+len(data)) + entryOverhead
			}
			ended = size < c.maxSize // the log ended, or went past to
			return nil
		})
		if err != nil {
			return err
		}
		for _, o := range ops {
			if o.value == nil {
				err = c.delete(o.key)
			} else {
				err = c.set(o.key, o.value)
			}
			if err != nil {
				return err
			}
		}
		if err := c.flush(); err != nil {
			return err
		}
	}
	if next <= to {
		s.log.Error("journal replay: events missing", "from", next, "to", to)
	}
	return nil
}

// discardEvents deletes every logged event past revision after, and
// returns how many there were.
func (s *Badger) discardEvents(after int64) (int, error) {
	var keys [][]byte
	err := s.db.View(func(btx *badger.Txn) error {
		it := btx.NewIterator(badger.IteratorOptions{Prefix: eventPrefix})
		defer it.Close()
		for it.Seek(eventKey(after + 1)); it.ValidForPrefix(eventPrefix); it.Next() {
			keys = append(keys, it.Item().KeyCopy(nil))
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	c := s.newChunks()
	defer c.discard()
	for _, k := range keys {
		if err := c.delete(k); err != nil {
			return 0, err
		}
	}
	return len(keys), c.flush()
}

// chunks writes many keys in as few Badger transactions as Badger's limits
// allow (with a margin), committing each in turn.
type chunks struct {
	db            *badger.DB
	btx           *badger.Txn
	n, size       int64
	maxN, maxSize int64
}

func (s *Badger) newChunks() *chunks {
	return &chunks{db: s.db, maxN: s.db.MaxBatchCount() * 3 / 4, maxSize: s.db.MaxBatchSize() * 3 / 4}
}

func (c *chunks) set(key, value []byte) error { return c.add(key, value, false) }
func (c *chunks) delete(key []byte) error     { return c.add(key, nil, true) }

func (c *chunks) add(key, value []byte, del bool) error {
	size := int64(len(key)+len(value)) + entryOverhead
	if c.btx != nil && (c.n+1 > c.maxN || c.size+size > c.maxSize) {
		if err := c.flush(); err != nil {
			return err
		}
	}
	if c.btx == nil {
		c.btx = c.db.NewTransaction(true)
	}
	var err error
	if del {
		err = c.btx.Delete(key)
	} else {
		err = c.btx.Set(key, value)
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", key, err)
	}
	c.n++
	c.size += size
	return nil
}

// flush commits the current chunk, if any.
func (c *chunks) flush() error {
	if c.btx == nil {
		return nil
	}
	err := c.btx.Commit()
	c.btx, c.n, c.size = nil, 0, 0
	if err != nil {
		return fmt.Errorf("commit a chunk: %w", err)
	}
	return nil
}

// discard drops the current chunk, if any.
func (c *chunks) discard() {
	if c.btx != nil {
		c.btx.Discard()
		c.btx, c.n, c.size = nil, 0, 0
	}
}
