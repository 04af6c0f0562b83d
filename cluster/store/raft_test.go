package store_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flotilla-dev/flotilla/cluster/raftlog"
	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/cluster/store/storetest"
	"github.com/flotilla-dev/flotilla/internal/testkit"
)

// raftGroup starts n Replicated stores, each the state machine of a Node of
// one Raft group on an in-process network, and waits for a leader. They
// stop when the test ends.
func raftGroup(t *testing.T, n int) ([]*store.Badger, []*raftlog.Node) {
	t.Helper()
	nw := raftlog.NewMemNetwork()
	t.Cleanup(nw.Close)
	var peers []raftlog.Peer
	for i := 1; i <= n; i++ {
		peers = append(peers, raftlog.Peer{ID: uint64(i), Addr: fmt.Sprint("s", i)})
	}
	stores := make([]*store.Badger, n)
	nodes := make([]*raftlog.Node, n)
	for i := range n {
		dir := t.TempDir()
		st, err := store.Open(store.Config{Dir: filepath.Join(dir, "db"), Replicated: true, Logger: testkit.LoggerAt(t, slog.LevelWarn)})
		if err != nil {
			t.Fatal(err)
		}
		node, err := raftlog.Start(raftlog.Config{ID: uint64(i + 1), Dir: filepath.Join(dir, "raft"), Bootstrap: peers,
			Transport: nw.Transport(uint64(i + 1)), StateMachine: st, TickInterval: 20 * time.Millisecond,
			Logger: testkit.LoggerAt(t, slog.LevelWarn)})
		if err != nil {
			t.Fatal(err)
		}
		nw.Register(uint64(i+1), node)
		st.Replicate(node)
		stores[i], nodes[i] = st, node
		t.Cleanup(func() {
			node.Stop()
			if err := st.Close(); err != nil {
				t.Error(err)
			}
		})
	}
	testkit.Eventually(t, "a leader", 20*time.Second, func() error {
		if nodes[0].Status().Leader == 0 {
			return fmt.Errorf("no leader yet")
		}
		return nil
	})
	return stores, nodes
}

// follower returns the index of a server that is not the leader.
func follower(nodes []*raftlog.Node) int {
	for i, n := range nodes {
		if st := n.Status(); st.Leader != st.ID {
			return i
		}
	}
	return 0
}

// TestConformanceOverRaft runs the store's suite on a follower of a
// three-server group: its writes reach the log through the leader, its
// reads wait for the read index, its watches see the log's events.
func TestConformanceOverRaft(t *testing.T) {
	if testing.Short() {
		t.Skip("three Raft groups per subtest")
	}
	storetest.Run(t, func(t *testing.T) store.Interface {
		stores, nodes := raftGroup(t, 3)
		return stores[follower(nodes)]
	})
}

// TestConcurrentWritersOverRaft: every server writes at once; every write
// succeeds (one computed on a revision another server's write moved past
// is computed again), and the servers end with the same objects at the same
// revisions, their watches with the same events in the same order.
func TestConcurrentWritersOverRaft(t *testing.T) {
	stores, _ := raftGroup(t, 3)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	watches := make([]<-chan store.Event, len(stores))
	for i, st := range stores {
		w, err := st.Watch(ctx, "pods", store.ListOptions{}, 0)
		if err != nil {
			t.Fatal(err)
		}
		watches[i] = w
	}
	const each = 15
	var wg sync.WaitGroup
	for i, st := range stores {
		wg.Go(func() {
			for j := range each {
				if _, err := st.Create(ctx, pod(fmt.Sprintf("p%d-%d", i, j))); err != nil {
					t.Errorf("server %d, create %d: %v", i+1, j, err)
					return
				}
			}
		})
	}
	wg.Wait()
	total := each * len(stores)
	var first string
	for i, w := range watches {
		var seen []string
		for range total {
			select {
			case ev := <-w:
				seen = append(seen, ev.Object.GetName()+"@"+ev.Object.GetResourceVersion())
			case <-ctx.Done():
				t.Fatalf("server %d's watch: %d events, then nothing", i+1, len(seen))
			}
		}
		if i == 0 {
			first = strings.Join(seen, " ")
		} else if got := strings.Join(seen, " "); got != first {
			t.Errorf("server %d's watch differs from server 1's:\n%s\n%s", i+1, got, first)
		}
	}
	for i, st := range stores {
		objs, rev, err := st.List(ctx, "pods", store.ListOptions{})
		if err != nil || len(objs) != total || rev != int64(total) {
			t.Errorf("server %d lists %d pods at revision %d (%v), want %d at %d", i+1, len(objs), rev, err, total, total)
		}
	}
}

// TestGroupCommit: writers that call at once share log entries (a batch),
// and each still gets the answer of a write of its own: two creates of one
// name, one wins and the other gets ErrExists; a Txn that fails leaves
// none of its writes; each write's revision is its own and the watches
// see exactly the writes that succeeded, in revision order.
func TestGroupCommit(t *testing.T) {
	stores, nodes := raftGroup(t, 3)
	lead := 0
	for i, n := range nodes {
		if st := n.Status(); st.Leader == st.ID {
			lead = i
		}
	}
	s := stores[lead]
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	w, err := stores[(lead+1)%3].Watch(ctx, "pods", store.ListOptions{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	before := s.AppliedIndex()
	const names = 40
	var (
		mu      sync.Mutex
		won     = map[string]string{} // name → resourceVersion of its create
		exists  int
		wg      sync.WaitGroup
		failure = errors.New("the transaction's own failure")
	)
	for i := range 2 * names {
		wg.Go(func() {
			name := fmt.Sprint("p", i%names) // two writers per name
			if i%names == 7 {
				// A Txn that writes, then fails: nothing of it stays.
				_, err := s.Txn(ctx, func(tx store.Tx) error {
					if _, err := tx.Create(pod("txn-" + fmt.Sprint(i))); err != nil {
						return err
					}
					return failure
				})
				if !errors.Is(err, failure) {
					t.Errorf("the failing Txn: %v, want its own error", err)
				}
				return
			}
			obj, err := s.Create(ctx, pod(name))
			mu.Lock()
			defer mu.Unlock()
			switch {
			case errors.Is(err, store.ErrExists):
				exists++
			case err != nil:
				t.Errorf("create %s: %v", name, err)
			default:
				if prev, ok := won[name]; ok {
					t.Errorf("create %s succeeded twice (revisions %s and %s)", name, prev, obj.GetResourceVersion())
				}
				won[name] = obj.GetResourceVersion()
			}
		})
	}
	wg.Wait()
	if len(won) != names-1 || exists != names-1 {
		t.Fatalf("%d names created and %d ErrExists, want %d of each", len(won), exists, names-1)
	}
	entries := s.AppliedIndex() - before
	if entries >= uint64(len(won)) {
		t.Errorf("%d writes took %d log entries: no two shared one", len(won), entries)
	}
	t.Logf("%d writes in %d log entries", len(won), entries)
	seen := map[string]bool{}
	last := int64(0)
	for range len(won) {
		select {
		case ev := <-w:
			name, rv := ev.Object.GetName(), ev.Object.GetResourceVersion()
			if won[name] != rv || seen[name] {
				t.Errorf("watch: %s %s@%s, the create returned revision %q", ev.Type, name, rv, won[name])
			}
			seen[name] = true
			if r, _ := strconv.ParseInt(rv, 10, 64); r <= last {
				t.Errorf("watch: %s@%s after revision %d", name, rv, last)
			} else {
				last = r
			}
		case <-ctx.Done():
			t.Fatalf("the watch saw %d of %d creates", len(seen), len(won))
		}
	}
	objs, _, err := s.List(ctx, "pods", store.ListOptions{})
	if err != nil || len(objs) != len(won) {
		t.Errorf("list: %d pods (%v), want %d: the failing Txn's pod must not be there", len(objs), err, len(won))
	}
}

// TestJoinAfterRestore: a store restored from a backup founds a new group
// (`flotilla snapshot restore`), so its objects are in no log entry; a
// server that joins it afterwards gets them all the same (a snapshot, not
// the log from its first entry), and so does a server that joins later.
func TestJoinAfterRestore(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	backup := store.MemoryFor(t)
	restored, err := backup.Create(ctx, pod("restored"))
	if err != nil {
		t.Fatal(err)
	}
	var snap bytes.Buffer
	if err := backup.Snapshot(&snap); err != nil {
		t.Fatal(err)
	}

	nw := raftlog.NewMemNetwork()
	t.Cleanup(nw.Close)
	start := func(id uint64, cfg raftlog.Config) (*store.Badger, *raftlog.Node) {
		dir := t.TempDir()
		st, err := store.Open(store.Config{Dir: filepath.Join(dir, "db"), Replicated: true, Logger: testkit.LoggerAt(t, slog.LevelWarn)})
		if err != nil {
			t.Fatal(err)
		}
		if id == 1 {
			if err := st.Restore(&snap, 0); err != nil {
				t.Fatal(err)
			}
		}
		cfg.ID, cfg.Dir, cfg.Transport, cfg.StateMachine = id, filepath.Join(dir, "raft"), nw.Transport(id), st
		cfg.TickInterval, cfg.Logger = 20*time.Millisecond, testkit.LoggerAt(t, slog.LevelWarn)
		node, err := raftlog.Start(cfg)
		if err != nil {
			t.Fatal(err)
		}
		nw.Register(id, node)
		st.Replicate(node)
		t.Cleanup(func() {
			node.Stop()
			if err := st.Close(); err != nil {
				t.Error(err)
			}
		})
		return st, node
	}
	_, first := start(1, raftlog.Config{Bootstrap: []raftlog.Peer{{ID: 1, Addr: "s1"}}})
	testkit.Eventually(t, "a leader", 20*time.Second, func() error {
		if first.Status().Leader != 1 {
			return fmt.Errorf("no leader yet")
		}
		return nil
	})
	for id := uint64(2); id <= 3; id++ {
		if err := first.AddLearner(ctx, raftlog.Peer{ID: id, Addr: fmt.Sprint("s", id)}); err != nil {
			t.Fatal(err)
		}
		joined, _ := start(id, raftlog.Config{Join: true})
		got, err := joined.Get(ctx, "pods", restored.GetNamespace(), restored.GetName())
		if err != nil {
			t.Fatalf("server %d, joined after the restore: %v", id, err)
		}
		if got.GetUID() != restored.GetUID() {
			t.Fatalf("server %d has pod %s with UID %s, want %s", id, got.GetName(), got.GetUID(), restored.GetUID())
		}
	}
}
