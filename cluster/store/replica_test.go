package store_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/cluster/store/encrypt"
	"github.com/flotilla-dev/flotilla/cluster/store/storetest"
)

// fakeLog is a replicated log in one process, in order and without
// failures: Propose appends the entry and applies it to every replica at
// once. (cluster/raftlog's tests run the store over the real log.)
type fakeLog struct {
	mu       sync.Mutex
	replicas []*store.Badger
	entries  [][]byte
	before   func() // called in Propose before the proposal is appended
}

func (l *fakeLog) Propose(ctx context.Context, data []byte) (any, uint64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.before != nil {
		before := l.before
		l.before = nil
		before()
	}
	res, index := l.append(data)
	return res, index, nil
}

// append appends an entry and applies it everywhere; the result is the
// first replica's. l.mu is held.
func (l *fakeLog) append(data []byte) (any, uint64) {
	l.entries = append(l.entries, bytes.Clone(data))
	index := uint64(len(l.entries))
	var first any
	for i, r := range l.replicas {
		res := r.Apply(index, 1, data)
		if i == 0 {
			first = res
		}
	}
	return first, index
}

func (l *fakeLog) ReadIndex(context.Context) error { return nil }

// replicas opens n Replicated stores on disk over one fakeLog; the first is
// the one the tests write to.
func replicas(t *testing.T, n int, keys *encrypt.KeySet) ([]*store.Badger, *fakeLog, []string) {
	t.Helper()
	l := &fakeLog{}
	var dirs []string
	for range n {
		dir := t.TempDir()
		s, err := store.Open(store.Config{Dir: dir, Replicated: true, Keys: keys})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		s.Replicate(l)
		l.replicas = append(l.replicas, s)
		dirs = append(dirs, dir)
	}
	return l.replicas, l, dirs
}

// TestReplicatedConformance: a Replicated store behaves as the plain one.
func TestReplicatedConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Interface {
		s, _, _ := replicas(t, 1, nil)
		return s[0]
	})
}

func pod(name string) *corev1.Pod {
	return storetest.Pod("default", name, map[string]string{"app": "x"}, "")
}

// TestReplicasAgree: two replicas applying the same log hold the same
// objects at the same revisions, and their watches see the same events.
func TestReplicasAgree(t *testing.T) {
	ctx := t.Context()
	rs, _, _ := replicas(t, 2, nil)
	w0, err := rs[0].Watch(ctx, "pods", store.ListOptions{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	w1, err := rs[1].Watch(ctx, "pods", store.ListOptions{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	a, err := rs[0].Create(ctx, pod("a"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rs[0].Txn(ctx, func(tx store.Tx) error {
		if _, err := tx.Create(pod("b")); err != nil {
			return err
		}
		_, err := tx.Delete("pods", "default", "a", store.DeleteOptions{})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if rs[0].Revision() != 3 || rs[1].Revision() != 3 {
		t.Fatalf("revisions %d and %d, want 3", rs[0].Revision(), rs[1].Revision())
	}
	for i, w := range []<-chan store.Event{w0, w1} {
		var got []string
		for range 3 {
			select {
			case ev := <-w:
				got = append(got, string(ev.Type)+" "+ev.Object.GetName()+" "+ev.Object.GetResourceVersion())
			case <-time.After(10 * time.Second):
				t.Fatalf("replica %d: watch got %v, then nothing", i, got)
			}
		}
		if want := "ADDED a 1,ADDED b 2,DELETED a 3"; strings.Join(got, ",") != want {
			t.Errorf("replica %d's watch: %s, want %s", i, strings.Join(got, ","), want)
		}
	}
	b1, err := rs[1].Get(ctx, "pods", "default", "b")
	if err != nil || b1.GetResourceVersion() != "2" || b1.GetUID() == a.GetUID() {
		t.Fatalf("replica 1 has b = %v, %v", b1, err)
	}
	b0, _ := rs[0].Get(ctx, "pods", "default", "b")
	if b0.GetUID() != b1.GetUID() || b0.GetCreationTimestamp() != b1.GetCreationTimestamp() {
		t.Errorf("b differs: uid %s/%s", b0.GetUID(), b1.GetUID())
	}
	if rs[0].AppliedIndex() != 2 || rs[1].AppliedIndex() != 2 {
		t.Errorf("applied indexes %d and %d, want 2", rs[0].AppliedIndex(), rs[1].AppliedIndex())
	}
}

// TestStaleWriteSetRefused: a write set computed on a revision that another
// entry moved past before it was applied (two servers' writes at once, or
// a deposed leader's) is refused by every replica alike, and the writer
// computes it again over the new revision.
func TestStaleWriteSetRefused(t *testing.T) {
	ctx := t.Context()
	rs, l, _ := replicas(t, 2, nil)
	if _, err := rs[0].Create(ctx, pod("a")); err != nil {
		t.Fatal(err)
	}
	// Replica 1 computes a write at revision 1 (its entry kept, not applied).
	var other []byte
	rs[1].Replicate(capture{&other})
	if _, err := rs[1].Create(ctx, pod("b")); !errors.Is(err, errCaptured) {
		t.Fatal(err)
	}
	rs[1].Replicate(l)
	// Replica 0 computes one at revision 1 too, but the other gets into the
	// log first: replica 0's is refused, then computed again at 2.
	l.before = func() { l.append(other) }
	c, err := rs[0].Create(ctx, pod("c"))
	if err != nil {
		t.Fatalf("a write beaten to the log: %v", err)
	}
	if c.GetResourceVersion() != "3" {
		t.Errorf("c's resourceVersion %s, want 3", c.GetResourceVersion())
	}
	for i, r := range rs {
		// entries: a, b, c at revision 1 (refused), c at 2
		if r.Revision() != 3 || r.AppliedIndex() != 4 {
			t.Errorf("replica %d: revision %d, applied %d; want 3 and 4", i, r.Revision(), r.AppliedIndex())
		}
		for _, name := range []string{"a", "b", "c"} {
			if _, err := r.Get(ctx, "pods", "default", name); err != nil {
				t.Errorf("replica %d lacks %s: %v", i, name, err)
			}
		}
	}
	if base := l.entries[2]; len(base) < 12 || string(base[:4]) != "FWS1" || base[11] != 1 {
		t.Errorf("the refused entry is not c's write set at revision 1")
	}
}

var errCaptured = errors.New("captured")

// capture is a Replicator that keeps the proposed entry and fails.
type capture struct{ data *[]byte }

func (c capture) Propose(_ context.Context, data []byte) (any, uint64, error) {
	*c.data = bytes.Clone(data)
	return nil, 0, errCaptured
}
func (c capture) ReadIndex(context.Context) error { return nil }

// TestReplicaRestartSkipsApplied: after a restart the store keeps its
// applied index, and the log's replay of entries up to it changes nothing.
func TestReplicaRestartSkipsApplied(t *testing.T) {
	ctx := t.Context()
	rs, l, dirs := replicas(t, 1, nil)
	for _, n := range []string{"a", "b"} {
		if _, err := rs[0].Create(ctx, pod(n)); err != nil {
			t.Fatal(err)
		}
	}
	if err := rs[0].Close(); err != nil {
		t.Fatal(err)
	}
	s, err := store.Open(store.Config{Dir: dirs[0], Replicated: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.AppliedIndex() != 2 || s.Revision() != 2 {
		t.Fatalf("reopened: applied %d, revision %d; want 2 and 2", s.AppliedIndex(), s.Revision())
	}
	for i, e := range l.entries {
		s.Apply(uint64(i+1), 1, e)
	}
	if s.Revision() != 2 {
		t.Errorf("replaying applied entries moved the revision to %d", s.Revision())
	}
}

// TestReplicaSnapshotRestore: a replica restored from another's snapshot
// holds the same objects, revision, history and applied index, and applies
// the log from there.
func TestReplicaSnapshotRestore(t *testing.T) {
	ctx := t.Context()
	rs, l, _ := replicas(t, 1, nil)
	for _, n := range []string{"a", "b", "c"} {
		if _, err := rs[0].Create(ctx, pod(n)); err != nil {
			t.Fatal(err)
		}
	}
	var snap bytes.Buffer
	if err := rs[0].Snapshot(&snap); err != nil {
		t.Fatal(err)
	}
	fresh, err := store.Open(store.Config{Dir: t.TempDir(), Replicated: true})
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	if _, err := fresh.Create(ctx, pod("old")); !errors.Is(err, store.ErrNotReplicating) {
		t.Fatalf("write before Replicate: %v, want ErrNotReplicating", err)
	}
	w, err := fresh.Watch(ctx, "pods", store.ListOptions{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := fresh.Restore(&snap, 3); err != nil {
		t.Fatal(err)
	}
	if _, ok := <-w; ok {
		t.Error("a watch from before the restore goes on")
	}
	l.replicas = append(l.replicas, fresh)
	fresh.Replicate(l)
	if fresh.Revision() != 3 || fresh.AppliedIndex() != 3 {
		t.Fatalf("restored: revision %d, applied %d; want 3 and 3", fresh.Revision(), fresh.AppliedIndex())
	}
	objs, rev, err := fresh.List(ctx, "pods", store.ListOptions{})
	if err != nil || len(objs) != 3 || rev != 3 {
		t.Fatalf("restored list: %d objects at %d, %v", len(objs), rev, err)
	}
	hist, err := fresh.Watch(ctx, "pods", store.ListOptions{}, 1)
	if err != nil {
		t.Fatalf("watch of the restored history: %v", err)
	}
	if ev := <-hist; ev.Object.GetName() != "b" || ev.Object.GetResourceVersion() != "2" {
		t.Errorf("history after revision 1 starts with %s at %s, want b at 2", ev.Object.GetName(), ev.Object.GetResourceVersion())
	}
	if _, err := rs[0].Create(ctx, pod("d")); err != nil {
		t.Fatal(err)
	}
	if _, err := fresh.Get(ctx, "pods", "default", "d"); err != nil || fresh.Revision() != 4 {
		t.Errorf("after the restore the replica applies the log: %v, revision %d", err, fresh.Revision())
	}
}

// TestWriteSetSealsSecrets: with Secrets encrypted at rest, neither the
// log's entries nor the replicas' files hold a Secret's value in clear,
// and every replica reads it.
func TestWriteSetSealsSecrets(t *testing.T) {
	ctx := t.Context()
	rs, l, _ := replicas(t, 2, newKeySet(t))
	const value = "sup3r-s3cret-value-in-the-log"
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "s"}, StringData: map[string]string{"v": value}}
	sec.Data = map[string][]byte{"v": []byte(value)}
	sec.StringData = nil
	if _, err := rs[0].Create(ctx, sec); err != nil {
		t.Fatal(err)
	}
	for _, e := range l.entries {
		if bytes.Contains(e, []byte(value)) || bytes.Contains(e, []byte("c3VwM3Itcz")) {
			t.Fatal("a log entry holds the Secret's value in clear")
		}
	}
	for i, r := range rs {
		got, err := r.Get(ctx, "secrets", "default", "s")
		if err != nil || string(got.(*corev1.Secret).Data["v"]) != value {
			t.Errorf("replica %d reads the Secret as %v, %v", i, got, err)
		}
	}
}

// TestReplicaWithoutTheKeyStops: a server that lacks the Secrets key the
// others seal with cannot apply their Secret; it stops (reads and writes
// fail, saying which key to give it) instead of going on without the
// write, and its applied index stays before the entry, for the replay.
func TestReplicaWithoutTheKeyStops(t *testing.T) {
	ctx := t.Context()
	l := &fakeLog{}
	for _, ks := range []*encrypt.KeySet{newKeySet(t), newKeySet(t)} {
		s, err := store.Open(store.Config{Dir: t.TempDir(), Replicated: true, Keys: ks})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		s.Replicate(l)
		l.replicas = append(l.replicas, s)
	}
	rs := l.replicas
	if _, err := rs[0].Create(ctx, pod("a")); err != nil {
		t.Fatal(err)
	}
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "s"}, Data: map[string][]byte{"v": []byte("x")}}
	if _, err := rs[0].Create(ctx, sec); err != nil {
		t.Fatalf("the server with the key: %v", err)
	}
	if _, err := rs[1].Get(ctx, "pods", "default", "a"); err == nil || !strings.Contains(err.Error(), "Secrets key") {
		t.Errorf("the server without the key still reads: %v", err)
	}
	if rs[1].AppliedIndex() != 1 || rs[0].AppliedIndex() != 2 {
		t.Errorf("applied %d and %d, want 2 on the server with the key and 1 without", rs[0].AppliedIndex(), rs[1].AppliedIndex())
	}
}
