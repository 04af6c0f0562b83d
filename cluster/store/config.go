package store

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"

	"github.com/flotilla-dev/flotilla/cluster/store/encrypt"
)

// Defaults of Config.
const (
	DefaultHistory     = 10000 // revisions of watch history kept
	DefaultWatchBuffer = 1024  // events a watcher may lag behind before it is closed

	// The store's limits leave room above schema's (schema.DefaultLimits:
	// 25,000 objects, 1.5 MiB an object, 64 MiB a commit), so that a Git
	// commit within those always fits in one transaction: gitsync applies
	// a commit in one Txn, where it also deletes what the previous commit
	// had (a deletion is a write, and counts its object's last state), and
	// what it writes carries more than Git's fields (Flotilla's
	// annotations, the store's metadata, Kubernetes' defaults). A test of
	// gitsync (TestStoreLimitsAboveSchemaLimits) holds the two together.

	// DefaultMaxTxnBytes is how much object JSON one transaction may write,
	// summed over its writes (a deletion counts its object's last state):
	// 160 MiB, a commit of 64 MiB of objects that replaces another as big,
	// and 32 MiB for what the cluster adds to their 50,000 objects. Such a
	// transaction peaks at about 920 MB of RSS (64 MiB: 400 MB); a usual
	// one, far smaller, costs nothing more for the higher limit.
	DefaultMaxTxnBytes = 160 << 20
	// DefaultMaxTxnWrites is how many writes one transaction may make:
	// 120,000, room for a commit of 25,000 objects, each in a namespace of
	// its own, that replaces as many (100,000 writes).
	DefaultMaxTxnWrites = 120000
	// DefaultMaxObjectBytes is how big one object's JSON may be: 2 MiB,
	// Kubernetes' 1.5 MiB (schema's limit, which the API and Git apply to
	// what users send) and room for what Flotilla adds (annotations,
	// metadata, defaults, status).
	DefaultMaxObjectBytes = 2 << 20
)

// inMemoryMaxObjectBytes caps objects in an in-memory store: Badger keeps
// every value of an in-memory database in its LSM tree, which takes values
// up to 1 MiB, and the event record of a write is the object and its key.
const inMemoryMaxObjectBytes = 1<<20 - 64<<10

// Config configures a Badger store. Every field's zero value means its
// default: Config{Dir: dir} is a store on disk that fsyncs every commit.
type Config struct {
	// Dir is the database directory; "" keeps everything in memory (tests,
	// benchmarks, throw-away clusters).
	Dir string
	// History is how many revisions of watch history are kept (default
	// DefaultHistory). A Watch from an older revision gets ErrCompacted. The
	// history is trimmed in batches of about a tenth of it, on writes only,
	// so an idle store writes nothing.
	History int
	// WatchBuffer is how many events a watcher may lag behind before its
	// channel is closed (default DefaultWatchBuffer). Writers never block on
	// watchers.
	WatchBuffer int
	// NoSync turns off the fsync of every commit. By default (false) a
	// write returns only once it is on the disk, so a power loss never loses
	// a write that was acknowledged; it costs a few milliseconds per commit
	// (see BenchmarkDisk* for this machine's figures), and nothing while the
	// cluster is idle, since an idle store writes nothing. With NoSync a
	// power loss may lose the last writes (never corrupt the store, nor
	// split a transaction), which the level-triggered components and Git as
	// the source of truth recover from; a crash of the process alone loses
	// nothing either way.
	NoSync bool
	// MaxTxnBytes bounds the object JSON one transaction writes (default
	// DefaultMaxTxnBytes); MaxTxnWrites bounds its writes (default
	// DefaultMaxTxnWrites). A Txn past either fails with ErrTooLarge and
	// writes nothing. Within them a transaction commits atomically whatever
	// its size: one that does not fit in one Badger transaction goes through
	// a redo journal (see commit.go).
	MaxTxnBytes  int64
	MaxTxnWrites int
	// MaxObjectBytes bounds one object's JSON (default
	// DefaultMaxObjectBytes). A write of a bigger object fails with
	// ErrTooLarge. An in-memory store also caps it at 960 KiB (Badger keeps
	// in-memory values under 1 MiB).
	MaxObjectBytes int
	// Keys, when set, encrypt Secrets at rest (and their copies in the
	// watch history): see encryption.go. Open fails with ErrEncryptionKeys
	// when they lack a key the store's values are under, or when Keys is
	// nil and the store holds encrypted values. The first Open with Keys
	// encrypts the Secrets stored in clear. nil (the default): Secrets are
	// stored in clear, as every other object.
	Keys *encrypt.KeySet
	// Replicated makes the store the state machine of a replicated log
	// (replica.go): writes are proposed to the Replicator that Replicate
	// gives, and commit when the log applies them (Apply), on every server
	// alike; reads wait for the log's read index. The log's own fsync
	// makes writes durable, so such a store runs with NoSync.
	Replicated bool
	// Logger receives the store's and Badger's logs (Badger's info at debug
	// level). nil: slog.Default().
	Logger *slog.Logger

	// testHook, when set, is called at each phase of a large commit (see
	// commit.go), so that a test can crash the process there.
	testHook func(phase commitPhase)
	// testNoCompression turns off Badger's block compression (snappy), so
	// that a test's grep of the files finds whatever is stored in clear.
	testNoCompression bool
}

func (c Config) withDefaults() Config {
	if c.History <= 0 {
		c.History = DefaultHistory
	}
	if c.WatchBuffer <= 0 {
		c.WatchBuffer = DefaultWatchBuffer
	}
	if c.MaxTxnBytes <= 0 {
		c.MaxTxnBytes = DefaultMaxTxnBytes
	}
	if c.MaxTxnWrites <= 0 {
		c.MaxTxnWrites = DefaultMaxTxnWrites
	}
	if c.MaxObjectBytes <= 0 {
		c.MaxObjectBytes = DefaultMaxObjectBytes
	}
	if c.Dir == "" {
		c.MaxObjectBytes = min(c.MaxObjectBytes, inMemoryMaxObjectBytes)
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Replicated {
		c.NoSync = true // the log is fsynced; after a power loss it replays what the store lost
	}
	return c
}

// badgerOptions sizes Badger for a small cluster's state (megabytes, not
// gigabytes): few, small memtables (8 MiB on disk: Badger allocates each
// one's arena, about 1.3 times its size, on the Go heap, where the garbage
// collector's pacing doubles it), small caches, and no conflict detection
// since the store has one writer. Badger caps one transaction at 15% of a
// memtable (1.2 MB, objects and their events together: each write logs its
// object twice); a bigger commit is written in several, through the
// journal of commit.go. Measured: an idle `up` with 100 pods has about
// 15 MB less RSS with 8 MiB memtables than with 16 MiB ones; the commit of
// 64 MiB of objects peaks at about 340 MB of RSS with 16 MiB memtables,
// 540 MB with 64 MiB ones, in the same time. An in-memory store keeps
// 16 MiB ones: its values (up to 960 KiB) all stay in the LSM tree, and one
// write's object and event must fit in one Badger transaction.
func (c Config) badgerOptions() badger.Options {
	opts := badger.DefaultOptions(c.Dir).
		WithLogger(badgerLogger{c.Logger.With("component", "badger")}).
		WithSyncWrites(!c.NoSync).
		WithDetectConflicts(false).
		WithMetricsEnabled(false).
		WithNumCompactors(2).
		WithNumGoroutines(2).
		WithNumMemtables(2).
		WithMemTableSize(8 << 20).
		WithBlockCacheSize(16 << 20).
		WithValueLogFileSize(64 << 20).
		WithCompactL0OnClose(true)
	if c.testNoCompression {
		opts = opts.WithCompression(options.None)
	}
	if c.Dir == "" {
		opts = opts.WithInMemory(true).
			WithSyncWrites(false).
			WithMemTableSize(16 << 20).
			WithBlockCacheSize(1 << 20).
			WithCompactL0OnClose(false)
	}
	return opts
}

// Memory opens an in-memory store, for other packages' tests. It panics if
// Badger cannot start (it only allocates memory). Close it when done, or use
// MemoryFor.
func Memory() *Badger {
	s, err := Open(Config{})
	if err != nil {
		panic(fmt.Sprintf("store: open in-memory store: %v", err))
	}
	return s
}

// MemoryFor opens an in-memory store that is closed when the test (any
// testing.TB) ends.
func MemoryFor(tb interface{ Cleanup(func()) }) *Badger {
	s := Memory()
	tb.Cleanup(func() { _ = s.Close() })
	return s
}

// badgerLogger adapts slog to Badger's logger; Badger's chatty info lines
// go to debug.
type badgerLogger struct{ l *slog.Logger }

func (b badgerLogger) Errorf(f string, a ...any)   { b.log(slog.LevelError, f, a) }
func (b badgerLogger) Warningf(f string, a ...any) { b.log(slog.LevelWarn, f, a) }
func (b badgerLogger) Infof(f string, a ...any)    { b.log(slog.LevelDebug, f, a) }
func (b badgerLogger) Debugf(f string, a ...any)   { b.log(slog.LevelDebug-4, f, a) }

func (b badgerLogger) log(level slog.Level, f string, a []any) {
	ctx := context.Background()
	if !b.l.Enabled(ctx, level) {
		return
	}
	b.l.Log(ctx, level, strings.TrimRight(fmt.Sprintf(f, a...), "\n "))
}
