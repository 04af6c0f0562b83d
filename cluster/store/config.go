package store

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	"github.com/dgraph-io/badger/v4"
)

// Defaults of Config.
const (
	DefaultHistory     = 10000 // revisions of watch history kept
	DefaultWatchBuffer = 1024  // events a watcher may lag behind before it is closed
)

// Config configures a Badger store.
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
	// SyncWrites makes every commit fsync before it returns. Off by default:
	// a power loss may then lose the last writes (never corrupt the store),
	// which the level-triggered components and Git as the source of truth
	// recover from, while the disk of an edge node is spared.
	SyncWrites bool
	// Logger receives the store's and Badger's logs (Badger's info at debug
	// level). nil: slog.Default().
	Logger *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.History <= 0 {
		c.History = DefaultHistory
	}
	if c.WatchBuffer <= 0 {
		c.WatchBuffer = DefaultWatchBuffer
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// badgerOptions sizes Badger for a small cluster's state (megabytes, not
// gigabytes): few memtables, small caches, and no conflict detection since
// the store has one writer. Badger caps one transaction at 15% of a
// memtable: about 9 MB on disk and 2.4 MB in memory, objects and their
// events (each write logs its object twice) together.
func (c Config) badgerOptions() badger.Options {
	opts := badger.DefaultOptions(c.Dir).
		WithLogger(badgerLogger{c.Logger.With("component", "badger")}).
		WithSyncWrites(c.SyncWrites).
		WithDetectConflicts(false).
		WithMetricsEnabled(false).
		WithNumCompactors(2).
		WithNumGoroutines(2).
		WithNumMemtables(2).
		WithMemTableSize(64 << 20). // a transaction may write 15% of it
		WithBlockCacheSize(16 << 20).
		WithValueLogFileSize(64 << 20).
		WithCompactL0OnClose(true)
	if c.Dir == "" {
		opts = opts.WithInMemory(true).
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
