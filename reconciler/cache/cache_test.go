package cache_test

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8stypes "k8s.io/apimachinery/pkg/types"

	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/internal/testkit"
	"github.com/flotilla-dev/flotilla/reconciler/cache"
	"github.com/flotilla-dev/flotilla/reconciler/internal/memstore"
	"github.com/flotilla-dev/flotilla/schema"
)

type recorder struct {
	mu     sync.Mutex
	events []string
}

func (r *recorder) add(s string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, s)
}

func (r *recorder) has(s string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range r.events {
		if e == s {
			return true
		}
	}
	return false
}

func (r *recorder) handler() cache.Handler {
	return cache.Handler{
		OnAdd: func(o schema.Object) { r.add("add " + cache.Key(o)) },
		OnUpdate: func(old, n schema.Object) {
			if old == n {
				r.add("resync " + cache.Key(n))
			} else {
				r.add("update " + cache.Key(n))
			}
		},
		OnDelete: func(o schema.Object) { r.add("delete " + cache.Key(o)) },
	}
}

func newPod(name, owner string) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"}}
	if owner != "" {
		p.OwnerReferences = []metav1.OwnerReference{{Kind: "ReplicaSet", Name: owner, UID: k8stypes.UID("uid-" + owner)}}
	}
	return p
}

func TestInformer(t *testing.T) {
	for name, st := range map[string]store.Interface{"badger": store.MemoryFor(t), "memstore": memstore.New()} {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if _, err := st.Create(ctx, newPod("before", "rs1")); err != nil {
				t.Fatal(err)
			}
			c := cache.New(st, nil, 50*time.Millisecond)
			inf := c.Informer("pods")
			rec := &recorder{}
			inf.AddHandler(rec.handler())
			c.Start(ctx)
			if !c.WaitForSync(ctx) {
				t.Fatal("no sync")
			}
			if _, ok := inf.Get("default", "before"); !ok || !rec.has("add default/before") {
				t.Fatalf("initial list not delivered: %v", rec.events)
			}
			created, err := st.Create(ctx, newPod("after", "rs1"))
			if err != nil {
				t.Fatal(err)
			}
			testkit.EventuallyTrue(t, "add after", 0, func() bool { return rec.has("add default/after") })
			if got := len(inf.ByOwner("uid-rs1")); got != 2 {
				t.Errorf("ByOwner = %d, want 2", got)
			}
			p := created.(*corev1.Pod)
			p.Labels = map[string]string{"x": "y"}
			p.OwnerReferences = nil
			if _, err := st.Update(ctx, p); err != nil {
				t.Fatal(err)
			}
			testkit.EventuallyTrue(t, "update after", 0, func() bool { return rec.has("update default/after") })
			if got := len(inf.ByOwner("uid-rs1")); got != 1 {
				t.Errorf("ByOwner after owner removed = %d, want 1", got)
			}
			if _, err := st.Delete(ctx, "pods", "default", "before", store.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
			testkit.EventuallyTrue(t, "delete before", 0, func() bool { return rec.has("delete default/before") })
			testkit.EventuallyTrue(t, "resync", 0, func() bool { return rec.has("resync default/after") })
			keys := inf.Keys()
			sort.Strings(keys)
			if fmt.Sprint(keys) != "[default/after]" {
				t.Errorf("keys %v", keys)
			}
		})
	}
}

// TestRelistAfterDroppedWatch: changes made while the watch is gone are
// found by the re-list, including deletions.
func TestRelistAfterDroppedWatch(t *testing.T) {
	st := memstore.New()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, n := range []string{"a", "b"} {
		if _, err := st.Create(ctx, newPod(n, "")); err != nil {
			t.Fatal(err)
		}
	}
	c := cache.New(st, nil, 0)
	inf := c.Informer("pods")
	rec := &recorder{}
	inf.AddHandler(rec.handler())
	c.Start(ctx)
	c.WaitForSync(ctx)
	st.DropWatches()
	if _, err := st.Delete(ctx, "pods", "default", "a", store.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Create(ctx, newPod("c", "")); err != nil {
		t.Fatal(err)
	}
	testkit.EventuallyTrue(t, "relist", 0, func() bool { return rec.has("delete default/a") && rec.has("add default/c") })
	if _, ok := inf.Get("default", "a"); ok {
		t.Error("deleted pod still cached")
	}
}

func TestKeys(t *testing.T) {
	if ns, n := cache.SplitKey("default/web"); ns != "default" || n != "web" {
		t.Error(ns, n)
	}
	if ns, n := cache.SplitKey("node-1"); ns != "" || n != "node-1" {
		t.Error(ns, n)
	}
	if cache.KeyOf("", "n") != "n" || cache.KeyOf("a", "b") != "a/b" {
		t.Error("KeyOf")
	}
}

// TestEmptyStoreFirstWrites: an object written right after the first sync
// of a cache over an empty store (revision 0, whose watch starts "from
// now") still reaches the cache and its handlers.
func TestEmptyStoreFirstWrites(t *testing.T) {
	for i := 0; i < 20; i++ {
		st := store.MemoryFor(t)
		ctx, cancel := context.WithCancel(context.Background())
		c := cache.New(st, nil, 0)
		inf := c.Informer("namespaces")
		rec := &recorder{}
		inf.AddHandler(rec.handler())
		c.Start(ctx)
		c.WaitForSync(ctx)
		if _, err := st.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "first"}}); err != nil {
			t.Fatal(err)
		}
		testkit.EventuallyTrue(t, "the first object in the cache", 0, func() bool { _, ok := inf.Get("", "first"); return ok && rec.has("add first") })
		if _, err := st.Delete(ctx, "namespaces", "", "first", store.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		testkit.EventuallyTrue(t, "its deletion", 0, func() bool { return rec.has("delete first") })
		cancel()
		c.Wait()
	}
}

// TestHandlerPanicIsContained: a handler that panics on one object is
// logged and skipped; the informer and the other handlers go on.
func TestHandlerPanicIsContained(t *testing.T) {
	st := store.MemoryFor(t)
	c := cache.New(st, testkit.Logger(t), 0)
	inf := c.Informer("pods")
	inf.AddHandler(cache.Handler{OnAdd: func(o schema.Object) {
		if o.GetName() == "bad" {
			panic("a handler met an object nobody foresaw")
		}
	}})
	r := &recorder{}
	inf.AddHandler(r.handler())
	ctx, cancel := context.WithCancel(context.Background())
	c.Start(ctx)
	t.Cleanup(func() { cancel(); c.Wait() })
	for _, name := range []string{"bad", "good"} {
		if _, err := st.Create(ctx, newPod(name, "")); err != nil {
			t.Fatal(err)
		}
	}
	testkit.EventuallyTrue(t, "both pods seen by the second handler", 0, func() bool { return r.has("add default/bad") && r.has("add default/good") })
	if _, ok := inf.Get("default", "good"); !ok {
		t.Error("the informer stopped after a handler panicked")
	}
}
