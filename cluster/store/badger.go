package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/dgraph-io/badger/v4"
	"github.com/flotilla-dev/flotilla/schema"
)

// Interface guards.
var (
	_ Interface      = (*Badger)(nil)
	_ Tx             = (*txn)(nil)
	_ TxStatusWriter = (*txn)(nil)
)

// Badger is the store on an embedded Badger database.
//
// Writes are serialised by one mutex (a single writer), so revisions are
// strictly ordered and every revision is one change of one object; reads
// run concurrently on Badger snapshots. Each change is also appended to an
// event log, in the same Badger transaction, from which watches resume (see
// watch.go). Objects are stored as their JSON (schema.Encode) under
// /registry/<resource>/<namespace>/<name>.
//
// Where the contract leaves room, Badger chooses:
//   - Create keeps the status it is given (an agent registers its Node with
//     its status in one write).
//   - metadata.generation is bumped when the JSON of "spec" changes; for
//     kinds without a spec (ConfigMap, Secret, Endpoints, Event) when any
//     field outside metadata changes (data, binaryData, subsets, …).
//   - An update is a no-op, writing nothing and keeping the revision, when
//     the object it would store is byte-identical to the stored one.
//   - Each write in a Txn gets its own revision; a no-op gets none.
//   - Delete returns the last state with the deletion's revision as its
//     resourceVersion, as Kubernetes does and as the Deleted event carries.
//   - An unknown resource, a namespace on a cluster-scoped kind, a name or
//     namespace containing '/', and an unsupported field selector are
//     ErrInvalid. Get, Delete and List take the namespace as given; only
//     objects passed in get "default" for a namespaced kind.
type Badger struct {
	db  *badger.DB
	cfg Config
	log *slog.Logger

	rev atomic.Int64 // current revision, published after each commit

	mu        sync.Mutex // the single writer; also guards the fields below
	compacted int64      // history holds the events with revision > compacted
	watchers  map[*watcher]struct{}
	closed    bool

	closing   atomic.Bool
	done      chan struct{} // closed by Close: watcher goroutines stop
	wg        sync.WaitGroup
	closeMu   sync.RWMutex // readers hold it shared; Close holds it to close the DB
	closeOnce sync.Once
	closeErr  error
}

// Open opens (or creates) the store in cfg.Dir, or in memory when Dir is "".
// It continues the revision counter and the history of a previous run.
func Open(cfg Config) (*Badger, error) {
	cfg = cfg.withDefaults()
	db, err := badger.Open(cfg.badgerOptions())
	if err != nil {
		return nil, fmt.Errorf("open badger store in %q: %w", cfg.Dir, err)
	}
	s := &Badger{
		db:       db,
		cfg:      cfg,
		log:      cfg.Logger.With("component", "store"),
		watchers: map[*watcher]struct{}{},
		done:     make(chan struct{}),
	}
	err = db.View(func(btx *badger.Txn) error {
		rev, err := readInt(btx, metaRevisionKey)
		if err != nil {
			return err
		}
		s.rev.Store(rev)
		s.compacted, err = readInt(btx, metaCompactedKey)
		return err
	})
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open badger store in %q: read revision: %w", cfg.Dir, err)
	}
	s.log.Debug("store opened", "dir", cfg.Dir, "revision", s.rev.Load(), "compacted", s.compacted)
	return s, nil
}

// Close stops every watch (their channels are closed) and closes the
// database. Calls after the first return the first result.
func (s *Badger) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.closing.Store(true)
		for w := range s.watchers {
			s.dropWatcherLocked(w)
		}
		close(s.done)
		s.mu.Unlock()
		s.wg.Wait()

		s.closeMu.Lock()
		defer s.closeMu.Unlock()
		if err := s.db.Close(); err != nil {
			s.closeErr = fmt.Errorf("close badger store in %q: %w", s.cfg.Dir, err)
		}
	})
	return s.closeErr
}

// Revision is the current store revision.
func (s *Badger) Revision() int64 { return s.rev.Load() }

// view runs fn on a read snapshot, unless the store is closed.
func (s *Badger) view(fn func(btx *badger.Txn) error) error {
	s.closeMu.RLock()
	defer s.closeMu.RUnlock()
	if s.closing.Load() {
		return ErrClosed
	}
	return s.db.View(fn)
}

// Get returns one object.
func (s *Badger) Get(ctx context.Context, resource, namespace, name string) (schema.Object, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var obj schema.Object
	err := s.view(func(btx *badger.Txn) error {
		var err error
		obj, _, err = getObject(btx, resource, namespace, name)
		return err
	})
	return obj, err
}

// List returns the matching objects sorted by namespace then name, and the
// revision of the snapshot they were read from.
func (s *Badger) List(ctx context.Context, resource string, opts ListOptions) ([]schema.Object, int64, error) {
	if err := ctx.Err(); err != nil {
		return nil, 0, err
	}
	var (
		objs []schema.Object
		rev  int64
	)
	err := s.view(func(btx *badger.Txn) error {
		var err error
		if rev, err = readInt(btx, metaRevisionKey); err != nil {
			return err
		}
		objs, err = listObjects(btx, resource, opts)
		return err
	})
	if err != nil {
		return nil, 0, err
	}
	return objs, rev, nil
}

// Create stores a new object. See Interface.Create; the store keeps the
// status that obj carries.
func (s *Badger) Create(ctx context.Context, obj schema.Object) (schema.Object, error) {
	var out schema.Object
	_, err := s.write(ctx, func(t *txn) error {
		var err error
		out, err = t.Create(obj)
		return err
	})
	return out, err
}

// Update replaces an object's metadata and spec. See Interface.Update.
func (s *Badger) Update(ctx context.Context, obj schema.Object) (schema.Object, error) {
	var out schema.Object
	_, err := s.write(ctx, func(t *txn) error {
		var err error
		out, err = t.Update(obj)
		return err
	})
	return out, err
}

// UpdateStatus replaces only the status. See Interface.UpdateStatus.
func (s *Badger) UpdateStatus(ctx context.Context, obj schema.Object) (schema.Object, error) {
	var out schema.Object
	_, err := s.write(ctx, func(t *txn) error {
		var err error
		out, err = t.UpdateStatus(obj)
		return err
	})
	return out, err
}

// Delete removes an object and returns its last state, whose
// resourceVersion is the revision of the deletion (as in the Deleted event).
func (s *Badger) Delete(ctx context.Context, resource, namespace, name string, opts DeleteOptions) (schema.Object, error) {
	var out schema.Object
	_, err := s.write(ctx, func(t *txn) error {
		var err error
		out, err = t.Delete(resource, namespace, name, opts)
		return err
	})
	return out, err
}

// Txn runs fn on a view whose writes are staged in one Badger transaction,
// committed atomically when fn returns nil. Each write in it gets its own
// revision, strictly increasing in the order of the calls; its events are
// published to watchers together, after the commit. A Txn that changes
// nothing writes nothing. The Tx passed to fn also has UpdateStatus; it
// must not be used after fn returns.
func (s *Badger) Txn(ctx context.Context, fn func(tx Tx) error) (int64, error) {
	return s.write(ctx, func(t *txn) error { return fn(t) })
}

// write runs fn as the single writer on a new Badger transaction, commits
// it when fn succeeded and changed something, then publishes the events.
// It returns the revision after the commit.
func (s *Badger) write(ctx context.Context, fn func(t *txn) error) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, ErrClosed
	}
	btx := s.db.NewTransaction(true)
	defer btx.Discard()
	start := s.rev.Load()
	t := &txn{btx: btx, rev: start}
	err := fn(t)
	t.finished = true
	if err != nil {
		return start, err
	}
	if len(t.events) == 0 {
		return start, nil // nothing changed: nothing written
	}
	if err := btx.Set(metaRevisionKey, encodeInt(t.rev)); err != nil {
		return start, fmt.Errorf("commit revision %d: %w", t.rev, err)
	}
	if err := btx.Commit(); err != nil {
		return start, fmt.Errorf("commit revision %d: %w", t.rev, err)
	}
	s.rev.Store(t.rev)
	s.publishLocked(t.events)
	s.trimLocked()
	return t.rev, nil
}

// getObject reads and decodes one object; it also returns the stored bytes.
func getObject(btx *badger.Txn, resource, namespace, name string) (schema.Object, []byte, error) {
	k, err := kindOf(resource)
	if err != nil {
		return nil, nil, err
	}
	key := objectKey(resource, namespace, name)
	item, err := btx.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, nil, fmt.Errorf("get %s: %w", key, ErrNotFound)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("get %s: %w", key, err)
	}
	data, err := item.ValueCopy(nil)
	if err != nil {
		return nil, nil, fmt.Errorf("get %s: %w", key, err)
	}
	obj, err := schema.Decode(k, data)
	if err != nil {
		return nil, nil, fmt.Errorf("get %s: %w", key, err)
	}
	return obj, data, nil
}

// listObjects scans one resource (and namespace) and filters, sorted by
// namespace then name (key order is not that order: '-' sorts before '/').
func listObjects(btx *badger.Txn, resource string, opts ListOptions) ([]schema.Object, error) {
	k, err := kindOf(resource)
	if err != nil {
		return nil, err
	}
	f, err := newFilter(k, opts)
	if err != nil {
		return nil, err
	}
	prefix := listPrefix(resource, opts.Namespace)
	it := btx.NewIterator(badger.IteratorOptions{PrefetchValues: true, PrefetchSize: 64, Prefix: prefix})
	defer it.Close()
	var objs []schema.Object
	for it.Seek(prefix); it.ValidForPrefix(prefix); it.Next() {
		item := it.Item()
		var obj schema.Object
		err := item.Value(func(v []byte) error {
			var err error
			obj, err = schema.Decode(k, v)
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("list %s: %w", item.Key(), err)
		}
		if f.matches(obj) {
			objs = append(objs, obj)
		}
	}
	sort.Slice(objs, func(i, j int) bool {
		a, b := objs[i], objs[j]
		if a.GetNamespace() != b.GetNamespace() {
			return a.GetNamespace() < b.GetNamespace()
		}
		return a.GetName() < b.GetName()
	})
	return objs, nil
}

func encodeInt(v int64) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, uint64(v))
	return b
}

// readInt reads an 8-byte counter; an absent key is 0.
func readInt(btx *badger.Txn, key []byte) (int64, error) {
	item, err := btx.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", key, err)
	}
	var v int64
	err = item.Value(func(b []byte) error {
		if len(b) != 8 {
			return fmt.Errorf("read %s: %d bytes, want 8", key, len(b))
		}
		v = int64(binary.BigEndian.Uint64(b))
		return nil
	})
	return v, err
}

func eventKey(rev int64) []byte {
	return append(bytes.Clone(eventPrefix), encodeInt(rev)...)
}
