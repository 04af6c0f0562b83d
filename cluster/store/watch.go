package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/dgraph-io/badger/v4"
	"github.com/flotilla-dev/flotilla/schema"
)

// How watches work.
//
// Every write appends its event (type, object key, object JSON) to a log
// under /flotilla/events/<revision>, committed with the change (commit.go),
// and after the commit hands it, still holding the writer lock, to
// the buffered channel of every registered watcher whose filter matches.
// A watcher is registered under that same lock, at a known revision R:
// every event after R reaches its channel, and the events in (since, R] are
// replayed from the log by the watcher's goroutine before it forwards the
// channel. That stitch has no gap and no duplicate.
//
// The writer never blocks: a watcher whose channel is full is dropped (its
// channel closed after the buffered events), and its receiver relists.
//
// Filters are applied per watcher to the object after the change: a
// MODIFIED object that left a label or field selector is not delivered, one
// that entered it is delivered as MODIFIED (not ADDED), and a DELETED one is
// delivered if its last state matched. Consumers treat MODIFIED of an
// unknown object as an add, as Kubernetes informers do.
//
// The log keeps the last Config.History revisions, trimmed in batches by the
// write that makes it more than a tenth longer; an idle store never trims.

// replayBatch is how many logged events one read snapshot of a replay scans.
const replayBatch = 512

type watcher struct {
	resource string
	kind     schema.Kind
	filter   *filter
	in       chan change
}

// Watch streams the changes of one resource with a revision greater than
// sinceRevision (0: from now on). See Interface.Watch and the comment above
// for the filters' semantics on MODIFIED.
func (s *Badger) Watch(ctx context.Context, resource string, opts ListOptions, sinceRevision int64) (<-chan Event, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	k, err := kindOf(resource)
	if err != nil {
		return nil, fmt.Errorf("watch: %w", err)
	}
	f, err := newFilter(k, opts)
	if err != nil {
		return nil, fmt.Errorf("watch %s: %w", resource, err)
	}
	w := &watcher{resource: resource, kind: k, filter: f, in: make(chan change, s.cfg.WatchBuffer)}

	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, ErrClosed
	}
	if sinceRevision < 0 {
		s.mu.Unlock()
		return nil, fmt.Errorf("watch %s from revision %d: %w", resource, sinceRevision, ErrInvalid)
	}
	if sinceRevision > 0 && sinceRevision < s.compacted {
		compacted := s.compacted
		s.mu.Unlock()
		return nil, fmt.Errorf("watch %s from revision %d: history starts after %d: %w",
			resource, sinceRevision, compacted, ErrCompacted)
	}
	start := s.rev.Load()
	if sinceRevision == 0 {
		sinceRevision = start
	}
	s.watchers[w] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()

	out := make(chan Event)
	go s.runWatcher(ctx, w, out, sinceRevision, start)
	return out, nil
}

// runWatcher replays the log in (since, start], then forwards live events.
func (s *Badger) runWatcher(ctx context.Context, w *watcher, out chan<- Event, since, start int64) {
	defer s.wg.Done()
	defer close(out)
	defer s.unregister(w)

	if since < start && !s.replay(ctx, w, out, since, start) {
		return
	}
	for {
		select {
		case ch, ok := <-w.in:
			if !ok {
				return // dropped: fell behind, or the store closed
			}
			if ch.rev <= since {
				continue // since was in the future when the watch began
			}
			if !s.send(ctx, out, Event{Type: ch.typ, Object: schema.Copy(ch.obj), Revision: ch.rev}) {
				return
			}
		case <-ctx.Done():
			return
		case <-s.done:
			return
		}
	}
}

func (s *Badger) send(ctx context.Context, out chan<- Event, ev Event) bool {
	select {
	case out <- ev:
		return true
	case <-ctx.Done():
		return false
	case <-s.done:
		return false
	}
}

// replay sends the logged events in (since, end] that match, reading the log
// in batches so that no snapshot is held while the receiver is slow. It
// returns false when the watch must end (ctx, Close, or the log was trimmed
// past the replay meanwhile: the receiver relists).
func (s *Badger) replay(ctx context.Context, w *watcher, out chan<- Event, since, end int64) bool {
	next := since + 1
	for next <= end {
		var batch []Event
		err := s.view(func(btx *badger.Txn) error {
			it := btx.NewIterator(badger.IteratorOptions{PrefetchValues: true, PrefetchSize: 64, Prefix: eventPrefix})
			defer it.Close()
			for it.Seek(eventKey(next)); it.ValidForPrefix(eventPrefix) && next <= end; it.Next() {
				item := it.Item()
				rev, ok := eventRev(item.Key())
				if !ok {
					return fmt.Errorf("replay revision %d: malformed event key %q", next, item.Key())
				}
				if rev != next {
					return fmt.Errorf("replay revision %d: trimmed meanwhile: %w", next, ErrCompacted)
				}
				next++
				err := item.Value(func(v []byte) error {
					typ, resource, key, data, err := decodeEvent(v)
					if err != nil || resource != w.resource {
						return err
					}
					if key == "" { // an old record
						key = string(item.Key())
					}
					if data, err = s.openValue([]byte(key), data); err != nil {
						return err
					}
					obj, err := decodeStored(w.kind, []byte(key), data)
					if err != nil {
						return err
					}
					if w.filter.matches(obj) {
						batch = append(batch, Event{Type: typ, Object: obj, Revision: rev})
					}
					return nil
				})
				if err != nil {
					return fmt.Errorf("replay revision %d: %w", rev, err)
				}
				if next-since >= replayBatch && len(batch) > 0 {
					break
				}
			}
			if next <= end && !it.ValidForPrefix(eventPrefix) {
				return fmt.Errorf("replay revision %d: %w", next, ErrCompacted)
			}
			return nil
		})
		if err != nil {
			switch {
			case errors.Is(err, ErrClosed):
			case errors.Is(err, ErrCompacted):
				s.log.Warn("watch replay ended; the watcher must relist", "resource", w.resource, "err", err)
			default: // a corrupted history: the receiver relists, and its watch starts past it
				s.log.Error("watch replay ended; the watcher must relist", "resource", w.resource, "err", err)
			}
			return false
		}
		for _, ev := range batch {
			if !s.send(ctx, out, ev) {
				return false
			}
		}
		since = next - 1
	}
	return true
}

func (s *Badger) unregister(w *watcher) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dropWatcherLocked(w)
}

// dropWatcherLocked closes a registered watcher's channel; s.mu is held.
func (s *Badger) dropWatcherLocked(w *watcher) {
	if _, ok := s.watchers[w]; ok {
		delete(s.watchers, w)
		close(w.in)
	}
}

// publishLocked hands committed changes to the watchers; s.mu is held.
func (s *Badger) publishLocked(changes []change) {
	if len(s.watchers) == 0 {
		return
	}
	for i := range changes {
		ch := &changes[i]
		if ch.obj == nil && !s.decodeForWatchersLocked(ch) {
			continue
		}
		for w := range s.watchers {
			if w.resource != ch.resource || !w.filter.matches(ch.obj) {
				continue
			}
			select {
			case w.in <- *ch:
			default:
				s.log.Warn("watcher fell behind; closing its channel", "resource", w.resource,
					"revision", ch.rev, "buffer", cap(w.in))
				s.dropWatcherLocked(w)
			}
		}
	}
}

// decodeForWatchersLocked decodes a change whose txn did not keep the object
// (a big one), if anyone watches its resource; it reports whether the
// change is to be published. s.mu is held.
func (s *Badger) decodeForWatchersLocked(ch *change) bool {
	var k schema.Kind
	for w := range s.watchers {
		if w.resource == ch.resource {
			k = w.kind
			break
		}
	}
	if k.Resource == "" {
		return false // nobody watches it
	}
	obj, err := decodeStored(k, []byte(ch.key), ch.data)
	if err != nil { // the store encoded it: never, but a watcher must not miss it
		s.log.Error("cannot publish an event; closing the watches of its resource", "revision", ch.rev, "err", err)
		for w := range s.watchers {
			if w.resource == ch.resource {
				s.dropWatcherLocked(w)
			}
		}
		return false
	}
	ch.obj = obj
	return true
}

// trimLocked drops the oldest events once the log holds more than a tenth
// beyond Config.History revisions; s.mu is held. Failure only leaves more history.
func (s *Badger) trimLocked() {
	keep := int64(s.cfg.History)
	cur := s.rev.Load()
	if cur-s.compacted <= keep+max(1, keep/10) {
		return
	}
	from, to := s.compacted+1, cur-keep
	s.compacted = to // new watches from before it are refused from now on
	wb := s.db.NewWriteBatch()
	defer wb.Cancel()
	// The bound first: after a crash in the middle, no watch starts in the
	// part already deleted.
	if err := wb.Set(metaCompactedKey, encodeInt(to)); err != nil {
		s.log.Warn("trim watch history", "from", from, "to", to, "err", err)
		return
	}
	for rev := from; rev <= to; rev++ {
		if err := wb.Delete(eventKey(rev)); err != nil {
			s.log.Warn("trim watch history", "from", from, "to", to, "err", err)
			return
		}
	}
	if err := wb.Flush(); err != nil {
		s.log.Warn("trim watch history", "from", from, "to", to, "err", err)
		return
	}
	s.log.Debug("trimmed watch history", "from", from, "to", to)
}

// encodeEvent is a log record: type byte, object key, NUL, object JSON.
// (Records written before the key was logged have the resource in its
// place; decodeEvent reads both.)
func encodeEvent(typ EventType, key string, data []byte) []byte {
	b := make([]byte, 0, 2+len(key)+len(data))
	b = append(b, typ[0])
	b = append(b, key...)
	b = append(b, 0)
	return append(b, data...)
}

// decodeEvent reads a log record: its type, resource, object key ("" in an
// old record) and object JSON.
func decodeEvent(v []byte) (typ EventType, resource, key string, data []byte, err error) {
	i := bytes.IndexByte(v, 0)
	if len(v) < 2 || i < 2 {
		return "", "", "", nil, errors.New("malformed event record")
	}
	switch v[0] {
	case 'A':
		typ = Added
	case 'M':
		typ = Modified
	case 'D':
		typ = Deleted
	default:
		return "", "", "", nil, fmt.Errorf("malformed event record: type %q", v[0])
	}
	resource = string(v[1:i])
	if strings.HasPrefix(resource, registryPrefix) {
		key = resource
		resource, _, _ = strings.Cut(key[len(registryPrefix):], "/")
		if resource == "" || !strings.Contains(key[len(registryPrefix):], "/") {
			return "", "", "", nil, fmt.Errorf("malformed event record: key %q", key)
		}
	}
	return typ, resource, key, v[i+1:], nil
}
