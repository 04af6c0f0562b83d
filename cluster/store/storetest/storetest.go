// Package storetest is the conformance suite of store.Interface: one set of
// tests that every implementation runs (the Badger store, test doubles, the
// API client against a served store), so that they all mean the same thing.
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) store.Interface { return store.MemoryFor(t) })
//	}
package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/schema"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Opener returns a new, empty store for one test, released by t.Cleanup.
// Revisions are expected to start at 0 and grow by one per write.
type Opener func(t *testing.T) store.Interface

// Run runs the whole suite, each test on a store of its own. skip names
// tests an implementation cannot pass by design (a remote client without
// transactions skips "Txn", which skips "TxnLarge" too); they are reported
// as skipped.
func Run(t *testing.T, open Opener, skip ...string) {
	for _, tc := range []struct {
		name  string
		fn    func(*testing.T, Opener)
		needs string // a test that skipping skips this one too
	}{
		{"Create", testCreate, ""},
		{"GetErrors", testGetErrors, ""},
		{"Update", testUpdate, ""},
		{"UpdateStatus", testUpdateStatus, ""},
		{"Delete", testDelete, ""},
		{"List", testList, ""},
		{"Txn", testTxn, ""},
		{"TxnLarge", testTxnLarge, "Txn"},
		{"WatchFilters", testWatchFilters, ""},
		{"WatchNoGaps", testWatchNoGaps, ""},
		{"WatchEnds", testWatchEnds, ""},
		{"WatchFutureRevision", testWatchFutureRevision, ""},
		{"WatchEventOwned", testWatchEventOwned, ""},
		{"ArgumentsNotRetained", testNotRetained, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if slices.Contains(skip, tc.name) || (tc.needs != "" && slices.Contains(skip, tc.needs)) {
				t.Skip("skipped by the implementation")
			}
			tc.fn(t, open)
		})
	}
}

func testCreate(t *testing.T, open Opener) {
	tests := []struct {
		name    string
		obj     schema.Object
		wantNS  string
		wantErr error
		check   func(t *testing.T, got schema.Object)
	}{
		{name: "namespaced", obj: Pod("web", "a", nil, ""), wantNS: "web"},
		{name: "default namespace", obj: Pod("", "a", nil, ""), wantNS: "default"},
		{name: "cluster-scoped", obj: &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}}},
		{name: "cluster-scoped with namespace", obj: &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1", Namespace: "x"}}, wantErr: store.ErrInvalid},
		{name: "no name", obj: Pod("web", "", nil, ""), wantErr: store.ErrInvalid},
		{name: "generateName", obj: &corev1.Pod{ObjectMeta: metav1.ObjectMeta{GenerateName: "web-"}}, wantNS: "default",
			check: func(t *testing.T, got schema.Object) {
				suffix, ok := strings.CutPrefix(got.GetName(), "web-")
				if !ok || len(suffix) != 5 || strings.ToLower(suffix) != suffix {
					t.Errorf("generated name %q, want web-xxxxx", got.GetName())
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := open(t)
			in := schema.Copy(tt.obj)
			got, err := s.Create(context.Background(), tt.obj)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err %v, want %v", err, tt.wantErr)
			}
			if err != nil {
				if s.Revision() != 0 {
					t.Errorf("failed create bumped revision to %d", s.Revision())
				}
				return
			}
			if got.GetNamespace() != tt.wantNS {
				t.Errorf("namespace %q, want %q", got.GetNamespace(), tt.wantNS)
			}
			if got.GetUID() == "" || got.GetCreationTimestamp().Time.IsZero() || got.GetGeneration() != 1 {
				t.Errorf("server metadata not set: uid %q created %v generation %d",
					got.GetUID(), got.GetCreationTimestamp(), got.GetGeneration())
			}
			if rv(t, got) != 1 || s.Revision() != 1 {
				t.Errorf("resourceVersion %s, revision %d, want 1", got.GetResourceVersion(), s.Revision())
			}
			if got.GetObjectKind().GroupVersionKind().Kind == "" {
				t.Errorf("kind not set on returned object")
			}
			if in.GetResourceVersion() != tt.obj.GetResourceVersion() || in.GetUID() != tt.obj.GetUID() {
				t.Errorf("Create modified its argument")
			}
			k, _ := schema.KindOf(got)
			stored, err := s.Get(context.Background(), k.Resource, got.GetNamespace(), got.GetName())
			if err != nil {
				t.Fatalf("get: %v", err)
			}
			a, _ := schema.Encode(got)
			b, _ := schema.Encode(stored)
			if string(a) != string(b) {
				t.Errorf("created object differs from stored:\n%s\n%s", a, b)
			}
			if tt.check != nil {
				tt.check(t, got)
			}
			if _, err := s.Create(context.Background(), got); !errors.Is(err, store.ErrExists) {
				t.Errorf("second create: err %v, want ErrExists", err)
			}
		})
	}
}

func testGetErrors(t *testing.T, open Opener) {
	s := open(t)
	if _, err := s.Get(context.Background(), "pods", "default", "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("missing object: err %v, want ErrNotFound", err)
	}
}

func testUpdate(t *testing.T, open Opener) {
	ctx := context.Background()
	tests := []struct {
		name     string
		change   func(p *corev1.Pod)
		wantErr  error
		wantGen  int64
		wantNoop bool
	}{
		{name: "no change writes nothing", change: func(p *corev1.Pod) {}, wantGen: 1, wantNoop: true},
		{name: "no change without resourceVersion", change: func(p *corev1.Pod) { p.ResourceVersion = "" }, wantGen: 1, wantNoop: true},
		{name: "no change without server metadata", change: func(p *corev1.Pod) {
			p.UID, p.CreationTimestamp, p.Generation, p.ResourceVersion, p.TypeMeta = "", metav1.Time{}, 0, "", metav1.TypeMeta{}
		}, wantGen: 1, wantNoop: true},
		{name: "status ignored", change: func(p *corev1.Pod) { p.Status.Phase = corev1.PodFailed }, wantGen: 1, wantNoop: true},
		{name: "label change keeps generation", change: func(p *corev1.Pod) { p.Labels = map[string]string{"x": "y"} }, wantGen: 1},
		{name: "spec change bumps generation", change: func(p *corev1.Pod) { p.Spec.NodeName = "n1" }, wantGen: 2},
		{name: "stale resourceVersion", change: func(p *corev1.Pod) { p.ResourceVersion = "1"; p.Spec.NodeName = "n1" }, wantErr: store.ErrConflict},
		{name: "missing", change: func(p *corev1.Pod) { p.Name = "other" }, wantErr: store.ErrNotFound},
		{name: "no name", change: func(p *corev1.Pod) { p.Name = "" }, wantErr: store.ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := open(t)
			mustCreate(t, s, Pod("web", "filler", nil, ""))
			p := mustCreate(t, s, Pod("web", "a", nil, ""))
			p.Status.Phase = corev1.PodRunning
			st, err := s.UpdateStatus(ctx, p)
			if err != nil {
				t.Fatal(err)
			}
			p = st.(*corev1.Pod)
			before := s.Revision()
			in := schema.Copy(p)
			tt.change(in)
			got, err := s.Update(ctx, in)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err %v, want %v", err, tt.wantErr)
			}
			if err != nil {
				if s.Revision() != before {
					t.Errorf("failed update bumped the revision")
				}
				return
			}
			up := got.(*corev1.Pod)
			if up.Generation != tt.wantGen {
				t.Errorf("generation %d, want %d", up.Generation, tt.wantGen)
			}
			if up.UID != p.UID || !up.CreationTimestamp.Equal(&p.CreationTimestamp) || up.Status.Phase != corev1.PodRunning {
				t.Errorf("server-set fields or status not kept: %+v", up.ObjectMeta)
			}
			if tt.wantNoop {
				if s.Revision() != before || up.ResourceVersion != p.ResourceVersion {
					t.Errorf("no-op update wrote: revision %d -> %d, rv %s", before, s.Revision(), up.ResourceVersion)
				}
				return
			}
			if s.Revision() != before+1 || rv(t, up) != before+1 {
				t.Errorf("revision %d, rv %s, want %d", s.Revision(), up.ResourceVersion, before+1)
			}
			stored, _ := s.Get(ctx, "pods", "web", "a")
			if stored.GetResourceVersion() != up.ResourceVersion || stored.GetGeneration() != tt.wantGen {
				t.Errorf("stored %s gen %d", stored.GetResourceVersion(), stored.GetGeneration())
			}
		})
	}
}

func testUpdateStatus(t *testing.T, open Opener) {
	ctx := context.Background()
	s := open(t)
	p := mustCreate(t, s, Pod("web", "a", map[string]string{"app": "web"}, ""))
	in := schema.Copy(p)
	in.Status.Phase = corev1.PodRunning
	in.Labels = map[string]string{"app": "changed"}
	in.Spec.NodeName = "n9"
	got, err := s.UpdateStatus(ctx, in)
	if err != nil {
		t.Fatal(err)
	}
	up := got.(*corev1.Pod)
	if up.Status.Phase != corev1.PodRunning || up.Labels["app"] != "web" || up.Spec.NodeName != "" || up.Generation != 1 {
		t.Errorf("UpdateStatus took more than status: %+v", up)
	}
	rev := s.Revision()
	if again, err := s.UpdateStatus(ctx, up); err != nil || s.Revision() != rev || again.GetResourceVersion() != up.ResourceVersion {
		t.Errorf("no-op status update wrote: err %v revision %d -> %d", err, rev, s.Revision())
	}
	in.ResourceVersion = p.ResourceVersion
	if _, err := s.UpdateStatus(ctx, in); !errors.Is(err, store.ErrConflict) {
		t.Errorf("stale status update: err %v, want ErrConflict", err)
	}
}

func testDelete(t *testing.T, open Opener) {
	ctx := context.Background()
	tests := []struct {
		name    string
		opts    func(p *corev1.Pod) store.DeleteOptions
		target  string
		wantErr error
	}{
		{name: "plain", opts: func(*corev1.Pod) store.DeleteOptions { return store.DeleteOptions{} }},
		{name: "matching preconditions", opts: func(p *corev1.Pod) store.DeleteOptions {
			return store.DeleteOptions{ResourceVersion: p.ResourceVersion, UID: string(p.UID)}
		}},
		{name: "stale resourceVersion", opts: func(*corev1.Pod) store.DeleteOptions { return store.DeleteOptions{ResourceVersion: "1"} }, wantErr: store.ErrConflict},
		{name: "other uid", opts: func(*corev1.Pod) store.DeleteOptions { return store.DeleteOptions{UID: "nope"} }, wantErr: store.ErrConflict},
		{name: "missing", target: "nope", opts: func(*corev1.Pod) store.DeleteOptions { return store.DeleteOptions{} }, wantErr: store.ErrNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := open(t)
			mustCreate(t, s, Pod("web", "filler", nil, ""))
			p := mustCreate(t, s, Pod("web", "a", nil, ""))
			target := "a"
			if tt.target != "" {
				target = tt.target
			}
			got, err := s.Delete(ctx, "pods", "web", target, tt.opts(p))
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err %v, want %v", err, tt.wantErr)
			}
			if err != nil {
				if s.Revision() != 2 {
					t.Errorf("failed delete bumped the revision")
				}
				return
			}
			if got.GetUID() != p.UID || s.Revision() != 3 {
				t.Errorf("deleted object uid %s, revision %d", got.GetUID(), s.Revision())
			}
			if _, err := s.Get(ctx, "pods", "web", "a"); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("get after delete: %v", err)
			}
		})
	}
}

func testList(t *testing.T, open Opener) {
	ctx := context.Background()
	s := open(t)
	for _, p := range []*corev1.Pod{
		Pod("a-b", "x", map[string]string{"app": "web", "tier": "front"}, "n1"),
		Pod("a", "z", map[string]string{"app": "web", "tier": "db"}, "n2"),
		Pod("a", "y", map[string]string{"app": "db"}, "n1"),
		Pod("b", "x", nil, ""),
	} {
		mustCreate(t, s, p)
	}
	mustCreate(t, s, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "x"}})
	tests := []struct {
		name    string
		opts    store.ListOptions
		want    string
		wantErr error
	}{
		{name: "all, sorted by namespace then name", want: "a/y a/z a-b/x b/x"},
		{name: "namespace", opts: store.ListOptions{Namespace: "a"}, want: "a/y a/z"},
		{name: "label equality", opts: store.ListOptions{LabelSelector: "app=web"}, want: "a/z a-b/x"},
		{name: "label set ops", opts: store.ListOptions{LabelSelector: "app in (web,db),tier!=db"}, want: "a/y a-b/x"},
		{name: "label absent", opts: store.ListOptions{LabelSelector: "!app"}, want: "b/x"},
		{name: "field name", opts: store.ListOptions{FieldSelector: "metadata.name=x"}, want: "a-b/x b/x"},
		{name: "field namespace", opts: store.ListOptions{FieldSelector: "metadata.namespace=a-b"}, want: "a-b/x"},
		{name: "node name", opts: store.ListOptions{FieldSelector: "spec.nodeName=n1"}, want: "a/y a-b/x"},
		{name: "unscheduled", opts: store.ListOptions{FieldSelector: "spec.nodeName="}, want: "b/x"},
		{name: "node and label", opts: store.ListOptions{FieldSelector: "spec.nodeName!=n2", LabelSelector: "app=web"}, want: "a-b/x"},
		{name: "bad label selector", opts: store.ListOptions{LabelSelector: "app=(("}, wantErr: store.ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			objs, rev, err := s.List(ctx, "pods", tt.opts)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err %v, want %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			if got := names(objs); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
			if rev != 5 {
				t.Errorf("revision %d, want 5", rev)
			}
		})
	}
}

func testTxn(t *testing.T, open Opener) {
	ctx := context.Background()
	s := open(t)
	old := mustCreate(t, s, Pod("web", "old", nil, ""))
	w, err := s.Watch(ctx, "pods", store.ListOptions{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	rev, err := s.Txn(ctx, func(tx store.Tx) error {
		if _, err := tx.Create(Pod("web", "a", nil, "")); err != nil {
			return err
		}
		if got, err := tx.Get("pods", "web", "a"); err != nil || got.GetName() != "a" {
			return fmt.Errorf("read your write: %v", err)
		}
		if objs, _ := tx.List("pods", store.ListOptions{}); names(objs) != "web/a web/old" {
			return fmt.Errorf("list in tx: %s", names(objs))
		}
		return boom
	})
	if !errors.Is(err, boom) || s.Revision() != 1 {
		t.Fatalf("rolled back txn: rev %d err %v", rev, err)
	}
	if _, err := s.Get(ctx, "pods", "web", "a"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("rolled back create is visible: %v", err)
	}
	rev, err = s.Txn(ctx, func(tx store.Tx) error {
		a, err := tx.Create(Pod("web", "a", nil, ""))
		if err != nil {
			return err
		}
		a.SetLabels(map[string]string{"v": "2"})
		if _, err := tx.Update(a); err != nil {
			return err
		}
		if _, err := tx.Update(old); err != nil { // no-op
			return err
		}
		_, err = tx.Delete("pods", "web", "old", store.DeleteOptions{})
		return err
	})
	if err != nil || rev != s.Revision() || rev <= 1 {
		t.Fatalf("txn: rev %d revision %d err %v", rev, s.Revision(), err)
	}
	var last int64
	for i, want := range []struct {
		typ  store.EventType
		name string
	}{{store.Added, "a"}, {store.Modified, "a"}, {store.Deleted, "old"}} {
		ev := next(t, w)
		if ev.Type != want.typ || ev.Object.GetName() != want.name || ev.Revision < last || ev.Revision > rev || rv(t, ev.Object) != ev.Revision {
			t.Errorf("event %d: %s %s rev %d, want %+v", i, ev.Type, ev.Object.GetName(), ev.Revision, want)
		}
		last = ev.Revision
	}
	rev2, err := s.Txn(ctx, func(tx store.Tx) error { return nil })
	if err != nil || rev2 != rev {
		t.Errorf("empty txn: rev %d err %v, want %d", rev2, err, rev)
	}
}

// LargeTxn is how many objects testTxnLarge writes in one transaction: the
// 10,000 ConfigMaps of a big Git commit.
const LargeTxn = 10000

// testTxnLarge: a transaction of LargeTxn objects commits whole. A reader
// running meanwhile sees none of it or all of it; a watcher gets its first
// event only once all of it can be read, then every write in order, each at
// its own revision.
func testTxnLarge(t *testing.T, open Opener) {
	const n = LargeTxn
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := open(t)
	mustCreate(t, s, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "big", Name: "before"}})
	start := s.Revision()
	w, err := s.Watch(ctx, "configmaps", store.ListOptions{Namespace: "big"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	name := func(i int) string { return fmt.Sprintf("cm-%05d", i) }

	// The watcher's first event of the txn: the whole txn is readable.
	firstSeen := make(chan error, 1)
	go func() {
		ev, ok := <-w
		if !ok {
			firstSeen <- errors.New("watch closed before the txn's first event")
			return
		}
		_, err := s.Get(ctx, "configmaps", "big", name(n-1))
		if err != nil {
			err = fmt.Errorf("at the first event (revision %d) the last object is not readable: %w", ev.Revision, err)
		}
		firstSeen <- err
	}()
	// A reader meanwhile: none or all.
	readerDone := make(chan error, 1)
	stop := make(chan struct{})
	go func() {
		for {
			objs, rev, err := s.List(ctx, "configmaps", store.ListOptions{Namespace: "big"})
			if err != nil {
				readerDone <- err
				return
			}
			if !(len(objs) == 1 && rev == start) && !(len(objs) == n && rev == start+n+1) {
				readerDone <- fmt.Errorf("a reader saw %d objects at revision %d (before: 1 at %d, after: %d at %d)",
					len(objs), rev, start, n, start+n+1)
				return
			}
			select {
			case <-stop:
				readerDone <- nil
				return
			default:
			}
		}
	}()

	value := strings.Repeat("v", 200)
	rev, err := s.Txn(ctx, func(tx store.Tx) error {
		for i := range n {
			cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "big", Name: name(i)}, Data: map[string]string{"v": value}}
			if _, err := tx.Create(cm); err != nil {
				return err
			}
		}
		_, err := tx.Delete("configmaps", "big", "before", store.DeleteOptions{})
		return err
	})
	if err != nil || rev != start+n+1 || s.Revision() != rev {
		t.Fatalf("txn of %d objects: revision %d (%d), err %v, want %d", n, rev, s.Revision(), err, start+n+1)
	}
	if err := <-firstSeen; err != nil {
		t.Error(err)
	}
	close(stop)
	if err := <-readerDone; err != nil {
		t.Error(err)
	}
	// Every write from the start, in order: one watch from start, or more
	// if the store closes a watch that falls behind (its receiver resumes).
	last := start
	for last < rev {
		w, err := s.Watch(ctx, "configmaps", store.ListOptions{Namespace: "big"}, last)
		if err != nil {
			t.Fatal(err)
		}
		for ev := range w {
			i := int(ev.Revision - start - 1)
			want := fmt.Sprintf("ADDED %s", name(i))
			if i == n {
				want = "DELETED before"
			}
			if got := fmt.Sprintf("%s %s", ev.Type, ev.Object.GetName()); got != want || ev.Revision != last+1 || rv(t, ev.Object) != ev.Revision {
				t.Fatalf("event at revision %d (rv %s): %s, want %s at %d", ev.Revision, ev.Object.GetResourceVersion(), got, want, last+1)
			}
			last = ev.Revision
			if last == rev {
				break
			}
		}
	}
	objs, _, err := s.List(ctx, "configmaps", store.ListOptions{Namespace: "big"})
	if err != nil || len(objs) != n {
		t.Fatalf("after the txn: %d objects, err %v", len(objs), err)
	}
}

func testWatchFilters(t *testing.T, open Opener) {
	ctx := context.Background()
	tests := []struct {
		name string
		opts store.ListOptions
		want []string // "TYPE ns/name"
	}{
		{name: "all", want: []string{"ADDED a/p1", "ADDED b/p2", "MODIFIED a/p1", "ADDED a/p3", "DELETED a/p1"}},
		{name: "namespace", opts: store.ListOptions{Namespace: "b"}, want: []string{"ADDED b/p2"}},
		{name: "label", opts: store.ListOptions{LabelSelector: "app=web"}, want: []string{"ADDED a/p1", "ADDED b/p2", "ADDED a/p3"}},
		{name: "node", opts: store.ListOptions{FieldSelector: "spec.nodeName=n1"}, want: []string{"ADDED a/p1", "MODIFIED a/p1", "DELETED a/p1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := open(t)
			mustCreate(t, s, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "before"}})
			live, err := s.Watch(ctx, "pods", tt.opts, 0)
			if err != nil {
				t.Fatal(err)
			}
			p1 := mustCreate(t, s, Pod("a", "p1", map[string]string{"app": "web"}, "n1"))
			mustCreate(t, s, Pod("b", "p2", map[string]string{"app": "web"}, "n2"))
			p1.Labels["app"] = "db"
			if _, err := s.Update(ctx, p1); err != nil {
				t.Fatal(err)
			}
			mustCreate(t, s, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "other"}})
			mustCreate(t, s, Pod("a", "p3", map[string]string{"app": "web"}, ""))
			del, err := s.Delete(ctx, "pods", "a", "p1", store.DeleteOptions{})
			if err != nil {
				t.Fatal(err)
			}
			replay, err := s.Watch(ctx, "pods", tt.opts, 1)
			if err != nil {
				t.Fatal(err)
			}
			for name, w := range map[string]<-chan store.Event{"live": live, "replay": replay} {
				var last int64
				for i, want := range tt.want {
					ev := next(t, w)
					if got := fmt.Sprintf("%s %s/%s", ev.Type, ev.Object.GetNamespace(), ev.Object.GetName()); got != want {
						t.Errorf("%s event %d: %s, want %s", name, i, got, want)
					}
					if ev.Revision <= last || rv(t, ev.Object) != ev.Revision {
						t.Errorf("%s event %d: revision %d (rv %s) after %d", name, i, ev.Revision, ev.Object.GetResourceVersion(), last)
					}
					if ev.Type == store.Deleted && ev.Revision != rv(t, del) {
						t.Errorf("deleted event revision %d, Delete returned rv %s", ev.Revision, del.GetResourceVersion())
					}
					last = ev.Revision
				}
				select {
				case ev := <-w:
					t.Errorf("%s: unexpected event %s %s", name, ev.Type, ev.Object.GetName())
				case <-time.After(20 * time.Millisecond):
				}
			}
		})
	}
}

// testWatchNoGaps starts watches from many revisions while writers run and
// checks that each sees every later revision exactly once, in order.
func testWatchNoGaps(t *testing.T, open Opener) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := open(t)
	const writers, perWriter = 4, 50 // 400 events: within any watch buffer
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range perWriter {
				p := Pod("ns", fmt.Sprintf("w%d-%d", w, i), nil, "")
				if _, err := s.Create(ctx, p); err != nil {
					t.Error(err)
					return
				}
				p.Spec.NodeName = "n1"
				if _, err := s.Update(ctx, p); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	const total = writers * perWriter * 2
	type watch struct {
		since int64
		ch    <-chan store.Event
	}
	var watches []watch
	for len(watches) < 10 {
		since := s.Revision()
		if len(watches)%2 == 1 {
			since /= 2 // resume from the past while writes go on
		}
		ch, err := s.Watch(ctx, "pods", store.ListOptions{}, since)
		if err != nil {
			t.Fatal(err)
		}
		watches = append(watches, watch{since, ch})
		time.Sleep(time.Millisecond)
	}
	wg.Wait()
	for _, w := range watches {
		if w.since == 0 {
			continue // "from now on", started at an unknown revision
		}
		for want := w.since + 1; want <= total; want++ {
			if ev := next(t, w.ch); ev.Revision != want {
				t.Fatalf("watch from %d: got revision %d, want %d", w.since, ev.Revision, want)
			}
		}
	}
}

func testWatchEnds(t *testing.T, open Opener) {
	s := open(t)
	ctx, cancel := context.WithCancel(context.Background())
	w, err := s.Watch(ctx, "pods", store.ListOptions{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	closed(t, w)
}

func testWatchFutureRevision(t *testing.T, open Opener) {
	s := open(t)
	w, err := s.Watch(context.Background(), "pods", store.ListOptions{}, 2)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		mustCreate(t, s, Pod("ns", fmt.Sprintf("p%d", i), nil, ""))
	}
	if ev := next(t, w); ev.Revision != 3 {
		t.Errorf("first event revision %d, want 3", ev.Revision)
	}
}

func testWatchEventOwned(t *testing.T, open Opener) {
	s := open(t)
	w1, _ := s.Watch(context.Background(), "pods", store.ListOptions{}, 0)
	w2, _ := s.Watch(context.Background(), "pods", store.ListOptions{}, 0)
	mustCreate(t, s, Pod("ns", "p", nil, ""))
	a, b := next(t, w1), next(t, w2)
	a.Object.(*corev1.Pod).Spec.NodeName = "mine"
	if b.Object.(*corev1.Pod).Spec.NodeName != "" {
		t.Error("watchers share one object")
	}
}

// testNotRetained: objects passed in are not retained, so changing them
// after the call changes nothing in the store nor in watch events.
func testNotRetained(t *testing.T, open Opener) {
	ctx := context.Background()
	s := open(t)
	w, err := s.Watch(ctx, "pods", store.ListOptions{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	in := Pod("ns", "p", map[string]string{"app": "web"}, "")
	if _, err := s.Create(ctx, in); err != nil {
		t.Fatal(err)
	}
	in.Labels["app"] = "changed"
	in.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
	if _, err := s.UpdateStatus(ctx, in); err != nil {
		t.Fatal(err)
	}
	in.Status.Conditions[0].Status = corev1.ConditionFalse
	if ev := next(t, w); ev.Object.GetLabels()["app"] != "web" {
		t.Errorf("ADDED event has labels %v", ev.Object.GetLabels())
	}
	if ev := next(t, w); ev.Object.(*corev1.Pod).Status.Conditions[0].Status != corev1.ConditionTrue {
		t.Errorf("MODIFIED event changed with the caller's object")
	}
	got, err := s.Get(ctx, "pods", "ns", "p")
	if err != nil || got.GetLabels()["app"] != "web" || got.(*corev1.Pod).Status.Conditions[0].Status != corev1.ConditionTrue {
		t.Errorf("stored object changed with the caller's: %v %v", got, err)
	}
}
