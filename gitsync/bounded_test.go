package gitsync

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/internal/testkit"
	"github.com/flotilla-dev/flotilla/schema"
)

// stalledRemote is a TCP listener on loopback that accepts every
// connection and never answers: the remote of a hung Git server. It
// returns the address and the number of connections accepted so far.
func stalledRemote(t *testing.T) (string, *atomic.Int32) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var accepted atomic.Int32
	var mu sync.Mutex
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			mu.Lock()
			conns = append(conns, c) // held open, never read or written
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return ln.Addr().String(), &accepted
}

func condition(b schema.SyncStatusBody, typ string) *metav1.Condition {
	return meta.FindStatusCondition(b.Conditions, typ)
}

// TestStalledRemote: a remote that accepts TCP and never answers fails
// each attempt within FetchTimeout with a clear error in the SyncStatus;
// 100 sync requests meanwhile all answer (saying a sync is in progress),
// merge into a few syncs, and leave no goroutine behind.
func TestStalledRemote(t *testing.T) {
	for _, scheme := range []string{"http", "git"} {
		t.Run(scheme, func(t *testing.T) {
			addr, accepted := stalledRemote(t)
			const timeout = 300 * time.Millisecond
			h := newHarness(t, func(c *Config) {
				c.URL = scheme + "://" + addr + "/org/repo.git"
				c.FetchTimeout = timeout
			})
			before := runtime.NumGoroutine()
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- h.syncer.Run(ctx) }()

			testkit.Eventually(t, "the first attempt fails on its timeout", 0, func() error {
				st := h.statusOrZero()
				if st.Result != schema.SyncFetchFailed {
					return fmt.Errorf("result %q", st.Result)
				}
				if !strings.Contains(st.Message, "no answer within "+timeout.String()) {
					return fmt.Errorf("message %q does not name the timeout", st.Message)
				}
				return nil
			})
			st := h.statusOrZero()
			if c := condition(st, ConditionReady); c == nil || c.Status != metav1.ConditionFalse || c.Reason != ReasonFetchFailed {
				t.Errorf("Ready = %+v, want False/FetchFailed", c)
			}
			if c := condition(st, ConditionReconciling); c == nil || c.Reason != ReasonRetrying {
				t.Errorf("Reconciling = %+v, want %s", c, ReasonRetrying)
			}

			startedBefore := h.syncer.State().Started
			var wg sync.WaitGroup
			var inProgress, answered atomic.Int32
			for range 100 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					rctx, rcancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
					defer rcancel()
					ss, err := h.syncer.Request(rctx)
					if err != nil {
						t.Errorf("Request: %v", err)
						return
					}
					answered.Add(1)
					if c := condition(ss.Status, ConditionReconciling); c != nil && c.Reason == ReasonProgressing {
						inProgress.Add(1)
					}
				}()
			}
			wg.Wait() // each answered within its own 50ms bound, or the test hangs
			if answered.Load() != 100 || inProgress.Load() == 0 {
				t.Errorf("%d requests answered, %d saying a sync is in progress", answered.Load(), inProgress.Load())
			}
			// Let the merged sync run and fail too, then stop.
			testkit.EventuallyTrue(t, "the merged request's sync ran", 0, func() bool {
				s := h.syncer.State()
				return s.Finished > startedBefore
			})
			cancel()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			syncs := h.syncer.State().Started - startedBefore
			t.Logf("100 requests → %d syncs, %d connections accepted in all", syncs, accepted.Load())
			if syncs > 5 {
				t.Errorf("100 requests made %d syncs; they should merge", syncs)
			}
			// go-git speaks HTTP through http.DefaultTransport, whose idle pool
			// (at most 2 connections per host, closed after 90s) may keep a
			// connection dialed for a cancelled request: a bounded cache, not
			// a leak. Empty it, then nothing may be left.
			http.DefaultTransport.(*http.Transport).CloseIdleConnections()
			testkit.Eventually(t, "no goroutine left behind", 0, func() error {
				if n := runtime.NumGoroutine(); n > before {
					buf := make([]byte, 1<<20)
					return fmt.Errorf("%d goroutines, %d before:\n%s", n, before, buf[:runtime.Stack(buf, true)])
				}
				return nil
			})
		})
	}
}

// TestSyncNowWaitsWithinItsContext: a caller of SyncNow behind a stalled
// sync gives up when its context ends.
func TestSyncNowWaitsWithinItsContext(t *testing.T) {
	addr, _ := stalledRemote(t)
	h := newHarness(t, func(c *Config) { c.URL = "http://" + addr + "/r.git"; c.FetchTimeout = time.Minute })
	go func() { _, _ = h.syncer.SyncNow(t.Context()) }()
	testkit.EventuallyTrue(t, "a sync is running", 0, func() bool { return h.syncer.State().Syncing })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := h.syncer.SyncNow(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("SyncNow = %v, want the context's deadline", err)
	}
}

// countingLoader counts the evaluations of commits.
type countingLoader struct {
	Loader
	n atomic.Int32
}

func (l *countingLoader) Load(fsys fs.FS, paths ...string) ([]schema.Manifest, schema.Problems) {
	l.n.Add(1)
	return l.Loader.Load(fsys, paths...)
}

// TestRefusedCommitIsNotRetried: a refused commit is evaluated once;
// polls and resyncs never load it again, and its status says why.
func TestRefusedCommitIsNotRetried(t *testing.T) {
	loader := &countingLoader{Loader: yamlLoader{}}
	h := newHarness(t, func(c *Config) { c.Loader = loader; c.Resync = time.Minute })
	h.remote.commit("bad", map[string]string{"a.yaml": configMap("Bad_Name", "", "1")})
	if _, err := h.poll(); !errors.Is(err, ErrRefused) {
		t.Fatalf("poll = %v", err)
	}
	st := h.status()
	if c := condition(st, ConditionStalled); c == nil || c.Status != metav1.ConditionTrue || c.Reason != ReasonValidationFailed {
		t.Errorf("Stalled = %+v", c)
	}
	if c := condition(st, ConditionReady); c == nil || c.Status != metav1.ConditionFalse || c.Reason != ReasonValidationFailed {
		t.Errorf("Ready = %+v", c)
	}
	rev := h.store.Revision()
	for range 5 {
		h.clock.Step(time.Hour) // past Resync
		if _, err := h.poll(); !errors.Is(err, ErrRefused) {
			t.Fatalf("poll = %v", err)
		}
	}
	if n := loader.n.Load(); n != 1 {
		t.Errorf("the refused commit was loaded %d times, want once", n)
	}
	if h.store.Revision() != rev {
		t.Error("polling a refused commit wrote to the store")
	}
	// An explicit `flotilla sync` evaluates it again (the store may have changed).
	if _, err := h.sync(); !errors.Is(err, ErrRefused) || loader.n.Load() != 2 {
		t.Errorf("SyncNow = %v after %d loads", err, loader.n.Load())
	}
	h.remote.commit("fixed", map[string]string{"a.yaml": configMap("good", "", "1")})
	body, err := h.poll()
	if err != nil || body.Result != schema.SyncApplied {
		t.Fatalf("poll = %+v, %v", body, err)
	}
	if c := condition(h.status(), ConditionReady); c == nil || c.Status != metav1.ConditionTrue || c.Reason != ReasonApplied {
		t.Errorf("Ready = %+v", c)
	}
	if condition(h.status(), ConditionStalled) != nil {
		t.Error("Stalled stays after a good commit")
	}
}

// faultyStore fails transactions as told.
type faultyStore struct {
	*store.Badger
	txns atomic.Int32
	err  atomic.Pointer[error]
}

func (s *faultyStore) Txn(ctx context.Context, fn func(tx store.Tx) error) (int64, error) {
	s.txns.Add(1)
	if p := s.err.Load(); p != nil {
		return 0, *p
	}
	return s.Badger.Txn(ctx, fn)
}

// TestStoreLimitStallsAndStoreFailureRetries: a transaction beyond the
// store's limit refuses the commit once (LimitExceeded); another store
// failure is transient and retried with back-off.
func TestStoreLimitStallsAndStoreFailureRetries(t *testing.T) {
	fs := &faultyStore{Badger: newTestStore(t)}
	h := newHarness(t, func(c *Config) { c.Store = fs })
	h.store = fs.Badger
	var tooBig error = &store.LimitError{Limit: "MaxTxnBytes", Value: 160 << 20, Msg: "the transaction writes more than …"}
	fs.err.Store(&tooBig)
	h.remote.commit("big", map[string]string{"a.yaml": configMap("a", "", "1")})
	if _, err := h.poll(); !errors.Is(err, ErrRefused) {
		t.Fatalf("poll = %v", err)
	}
	st := h.status()
	if c := condition(st, ConditionStalled); c == nil || c.Reason != ReasonLimitExceeded {
		t.Errorf("Stalled = %+v, want LimitExceeded", c)
	}
	if !strings.Contains(st.Message, "more than the store takes in one transaction; split the change over several commits (limit: MaxTxnBytes = 160 MiB)") {
		t.Errorf("message = %q", st.Message)
	}
	if p := schema.Problems(st.Problems).Errors(); len(p) != 1 || p[0].Limit != "MaxTxnBytes" {
		t.Errorf("problems = %+v, want one naming MaxTxnBytes", p)
	}
	n := fs.txns.Load()
	for range 3 {
		h.clock.Step(time.Hour)
		_, _ = h.poll()
	}
	if fs.txns.Load() != n {
		t.Errorf("a commit over the store's limit was retried (%d transactions, then %d)", n, fs.txns.Load())
	}

	h.remote.commit("next", map[string]string{"a.yaml": configMap("a", "", "2")})
	broken := errors.New("disk on fire")
	fs.err.Store(&broken)
	for i := 1; i <= 3; i++ {
		if _, err := h.poll(); !errors.Is(err, ErrTransient) {
			t.Fatalf("poll = %v", err)
		}
		if c := condition(h.status(), ConditionReady); c == nil || c.Reason != ReasonStoreFailed {
			t.Errorf("Ready = %+v, want StoreFailed", c)
		}
		h.syncer.end(true) // as Run sees it: one more transient failure
		want := min(retryBase<<(i*2-1), retryMax)
		if got := h.syncer.nextWait(); got < want || got > want+want/10 {
			t.Errorf("after %d failures the next attempt waits %s, want %s (+10%%)", i*2, got, want)
		}
	}
	fs.err.Store(nil)
	if body, err := h.poll(); err != nil || body.Result != schema.SyncApplied {
		t.Fatalf("poll after the store recovered = %+v, %v", body, err)
	}
	if got := h.syncer.nextWait(); got < DefaultInterval || got > DefaultInterval+DefaultInterval/10 {
		t.Errorf("after a success the next poll waits %s, want the interval", got)
	}
}

// panicky panics on a manifest file named boom.yaml.
type panicky struct{ Loader }

func (p panicky) Load(fsys fs.FS, paths ...string) ([]schema.Manifest, schema.Problems) {
	if _, err := fs.Stat(fsys, "boom.yaml"); err == nil {
		var m map[string]int
		m["boom"]++ // a nil map write: a real runtime panic
	}
	return p.Loader.Load(fsys, paths...)
}

// TestPanicRefusesOnlyThatCommit: a panic in loading, or in admission
// inside the store transaction, refuses the commit as an internal error
// naming it; the store stays usable and the next commit applies.
func TestPanicRefusesOnlyThatCommit(t *testing.T) {
	admit := func(_ Reader, objs []Admission) (schema.Problems, error) {
		for _, o := range objs {
			if o.Object != nil && o.Object.GetName() == "admit-boom" {
				panic("admission exploded")
			}
		}
		return nil, nil
	}
	h := newHarness(t, func(c *Config) { c.Loader = panicky{yamlLoader{}}; c.Admit = admit })
	good := h.remote.commit("one", map[string]string{"a.yaml": configMap("a", "", "1")})
	if _, err := h.sync(); err != nil {
		t.Fatal(err)
	}
	for _, files := range []map[string]string{
		{"boom.yaml": configMap("b", "", "1")},
		{"boom.yaml": "", "c.yaml": configMap("admit-boom", "", "1")},
	} {
		bad := h.remote.commit("boom", files)
		body, err := h.poll()
		if !errors.Is(err, ErrRefused) || body.LastAttemptedCommit != bad || body.LastAppliedCommit != good {
			t.Fatalf("poll = %+v, %v", body, err)
		}
		st := h.status()
		if c := condition(st, ConditionStalled); c == nil || c.Reason != ReasonInternalError {
			t.Errorf("Stalled = %+v, want InternalError", c)
		}
		if !strings.Contains(st.Message, "internal error while syncing commit "+short(bad)) {
			t.Errorf("message = %q", st.Message)
		}
		if h.get("configmaps", "default", "a") == nil {
			t.Fatal("the live commit's object is gone")
		}
	}
	h.absent("configmaps", "default", "admit-boom")
	next := h.remote.commit("fine", map[string]string{"c.yaml": "", "d.yaml": configMap("d", "", "1")})
	body, err := h.poll()
	if err != nil || body.LastAppliedCommit != next {
		t.Fatalf("the next commit after a panic: %+v, %v", body, err)
	}
	h.get("configmaps", "default", "d")
}

// TestFetchSizeLimit: a fetch over MaxFetchSize refuses the head
// (LimitExceeded), leaves no partial pack, and is not fetched again.
func TestFetchSizeLimit(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.MaxFetchSize = 16 << 10 })
	noise := make([]byte, 64<<10) // incompressible
	if _, err := rand.Read(noise); err != nil {
		t.Fatal(err)
	}
	h.remote.commit("big", map[string]string{"a.yaml": configMap("a", "", "1"), "blob.bin": fmt.Sprintf("%x", noise)})
	body, err := h.poll()
	if !errors.Is(err, ErrRefused) {
		t.Fatalf("poll = %+v, %v", body, err)
	}
	if c := condition(h.status(), ConditionStalled); c == nil || c.Reason != ReasonLimitExceeded || !strings.Contains(c.Message, "MaxFetchSize") {
		t.Errorf("Stalled = %+v, want LimitExceeded naming MaxFetchSize", c)
	}
	if tmps, _ := filepath.Glob(filepath.Join(h.syncer.cfg.WorkDir, "objects", "pack", "tmp_*")); len(tmps) > 0 {
		t.Errorf("partial packs left: %v", tmps)
	}
	rev := h.store.Revision()
	h.clock.Step(time.Hour)
	if _, err := h.poll(); !errors.Is(err, ErrRefused) || h.store.Revision() != rev {
		t.Errorf("second poll = %v, revision %d → %d", err, rev, h.store.Revision())
	}
}
