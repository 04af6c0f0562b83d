package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/dgraph-io/badger/v4"
	"github.com/flotilla-dev/flotilla/cluster/store/encrypt"
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
// run concurrently on Badger snapshots. A write's changes are staged in
// memory (txn.go) and committed at the end, together with their events in
// an event log from which watches resume (see watch.go), in one Badger
// transaction or, when they do not fit in one, through a redo journal that
// keeps the commit atomic for readers and across a crash (see commit.go).
// Objects are stored as their JSON (schema.Encode) under
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
//   - Limits (Config): an object over MaxObjectBytes of JSON, a transaction
//     over MaxTxnWrites writes or MaxTxnBytes of JSON, are ErrTooLarge.
//   - With Config.Keys, Secrets are encrypted at rest, their history too
//     (encryption.go); one that does not decrypt is ErrCorrupt as below.
//   - A stored value that does not decode is ErrCorrupt for its key only:
//     Get of it and List of its resource fail naming it, a watch replaying
//     it ends (its receiver relists), everything else works, and Delete
//     without preconditions removes it.
type Badger struct {
	db  *badger.DB
	cfg Config
	log *slog.Logger
	lim limits

	rev atomic.Int64 // current revision, published after each commit

	// Of a Replicated store (replica.go): its log, the writes being
	// proposed, and the index of the last entry applied.
	repl     atomic.Pointer[Replicator]
	queueMu  sync.Mutex
	queue    []*proposal   // writes waiting for the proposer's turn
	propTurn chan struct{} // holds a value while a batch is staged and proposed
	applied  atomic.Uint64

	// keys seal and open Secrets (encryption.go); nil: stored in clear.
	// Swapped by RotateKey, with mu held.
	keys     atomic.Pointer[encrypt.KeySet]
	rotateMu sync.Mutex // one RotateKey at a time

	mu        sync.Mutex // the single writer; also guards the fields below
	compacted int64      // history holds the events with revision > compacted
	watchers  map[*watcher]struct{}
	closed    bool

	closing   atomic.Bool
	done      chan struct{} // closed by Close: watcher goroutines stop
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error

	// viewMu is held shared by every read, and exclusively by Close (to
	// close the DB) and by the apply of a large commit, so that no read
	// sees one half applied.
	viewMu sync.RWMutex
	// broken, once set, fails every read and write: a large commit that
	// was sealed could not be applied (an I/O error). Open finishes it, so
	// the way out is a restart. Set with mu and viewMu held.
	broken error
}

// Open opens (or creates) the store in cfg.Dir, or in memory when Dir is "".
// It continues the revision counter and the history of a previous run, and
// finishes or discards a large commit that a crash interrupted (see
// commit.go): after Open the store holds all of every transaction or none.
func Open(cfg Config) (*Badger, error) {
	cfg = cfg.withDefaults()
	if err := removeEmptyLogs(cfg.Dir, cfg.Logger); err != nil {
		return nil, fmt.Errorf("open badger store in %q: %w", cfg.Dir, err)
	}
	db, err := badger.Open(cfg.badgerOptions())
	if err != nil {
		return nil, fmt.Errorf("open badger store in %q: %w", cfg.Dir, err)
	}
	s := &Badger{
		db:  db,
		cfg: cfg,
		log: cfg.Logger.With("component", "store"),
		lim: limits{
			txnBytes:    cfg.MaxTxnBytes,
			txnWrites:   cfg.MaxTxnWrites,
			objectBytes: int64(cfg.MaxObjectBytes),
		},
		watchers: map[*watcher]struct{}{},
		done:     make(chan struct{}),
		propTurn: make(chan struct{}, 1),
	}
	rev, compacted, err := s.recover()
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open badger store in %q: %w", cfg.Dir, err)
	}
	s.rev.Store(rev)
	s.compacted = compacted
	applied, err := s.readApplied()
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open badger store in %q: %w", cfg.Dir, err)
	}
	s.applied.Store(applied)
	if err := s.initEncryption(); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open badger store in %q: %w", cfg.Dir, err)
	}
	s.log.Debug("store opened", "dir", cfg.Dir, "revision", rev, "compacted", compacted, "sync", !cfg.NoSync)
	return s, nil
}

// removeEmptyLogs deletes the empty write-ahead (.mem) and value log
// (.vlog) files in dir. A crash between the creation of one and its first
// write leaves it empty, and Badger then refuses to open
// (dgraph-io/badger#2207: "while opening memtables … Create a new file").
// An empty file holds nothing, so removing it loses nothing.
func removeEmptyLogs(dir string, log *slog.Logger) error {
	if dir == "" {
		return nil
	}
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range entries {
		name := e.Name()
		if !e.Type().IsRegular() || (!strings.HasSuffix(name, ".mem") && !strings.HasSuffix(name, ".vlog")) {
			continue
		}
		info, err := e.Info()
		if err != nil || info.Size() != 0 {
			continue
		}
		if err := os.Remove(filepath.Join(dir, name)); err != nil {
			return fmt.Errorf("remove the empty log file a crash left: %w", err)
		}
		log.Warn("removed an empty log file that a crash left", "component", "store", "file", name)
	}
	return nil
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

		s.viewMu.Lock()
		defer s.viewMu.Unlock()
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
	s.viewMu.RLock()
	defer s.viewMu.RUnlock()
	if s.closing.Load() {
		return ErrClosed
	}
	if s.broken != nil {
		return s.broken
	}
	return s.db.View(fn)
}

// Get returns one object.
func (s *Badger) Get(ctx context.Context, resource, namespace, name string) (schema.Object, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := s.readIndex(ctx); err != nil {
		return nil, err
	}
	var obj schema.Object
	err := s.view(func(btx *badger.Txn) error {
		var err error
		obj, err = readObject(btx, s.openValue, resource, namespace, name)
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
	if err := s.readIndex(ctx); err != nil {
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
		objs, err = listObjects(btx, s.openValue, resource, opts, nil)
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

// Txn runs fn on a view whose writes are staged in memory, committed
// atomically when fn returns nil: readers and watchers see all of them or
// none, and so does the store after a crash. Each write in it gets its own
// revision, strictly increasing in the order of the calls; its events are
// published to watchers together, after the commit. A Txn that changes
// nothing writes nothing. One past the limits of Config fails with
// ErrTooLarge, even if fn ignored the error of the write that went past.
// The Tx passed to fn also has UpdateStatus; it must not be used after fn
// returns.
func (s *Badger) Txn(ctx context.Context, fn func(tx Tx) error) (int64, error) {
	return s.write(ctx, func(t *txn) error { return fn(t) })
}

// write runs fn as the single writer on a new txn, commits it when fn
// succeeded and changed something, then publishes the events. It returns
// the revision after the commit.
func (s *Badger) write(ctx context.Context, fn func(t *txn) error) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if s.cfg.Replicated {
		return s.writeReplicated(ctx, fn)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, ErrClosed
	}
	if s.broken != nil {
		return 0, s.broken
	}
	snap := s.db.NewTransaction(false)
	defer snap.Discard()
	start := s.rev.Load()
	t, err := s.stageTxn(snap, start, fn)
	if err != nil || t == nil {
		return start, err // failed, or nothing changed: nothing written
	}
	if err := s.commitLocked(t); err != nil {
		return start, err
	}
	s.rev.Store(t.rev)
	s.publishLocked(t.events)
	s.trimLocked()
	return t.rev, nil
}

// stageTxn runs fn on a new txn over snap at revision start: the staged
// txn, or nil when fn changed nothing, or fn's error (or the limit it went
// past, even if fn ignored that error).
func (s *Badger) stageTxn(snap *badger.Txn, start int64, fn func(t *txn) error) (*txn, error) {
	t := newTxn(snap, start, s.lim, s.openValue)
	err := fn(t)
	t.finished = true
	if err == nil {
		err = t.tooLarge
	}
	if err != nil || len(t.events) == 0 {
		return nil, err
	}
	return t, nil
}

func encodeInt(v int64) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, uint64(v))
	return b
}

// errMalformed marks a record of the store's own that does not have its
// format: only a corrupted store has one.
var errMalformed = errors.New("malformed")

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
			return fmt.Errorf("read %s: %d bytes, want 8: %w", key, len(b), errMalformed)
		}
		v = int64(binary.BigEndian.Uint64(b))
		return nil
	})
	return v, err
}

func eventKey(rev int64) []byte {
	return append(bytes.Clone(eventPrefix), encodeInt(rev)...)
}

// eventRev is the revision of an event key; ok is false for a key that is
// not one (a hostile or corrupted store).
func eventRev(key []byte) (rev int64, ok bool) {
	if len(key) != len(eventPrefix)+8 || !bytes.HasPrefix(key, eventPrefix) {
		return 0, false
	}
	return int64(binary.BigEndian.Uint64(key[len(eventPrefix):])), true
}
