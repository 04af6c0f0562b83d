// Package cache is the controllers' shared watch cache: for each resource it
// lists and watches the store into an in-memory map indexed by key and by
// owner UID, re-lists when a watch closes or its revision is compacted,
// tells registered handlers what changed, and re-delivers every object on a
// resync period. Objects handed out are shared: callers copy them
// (schema.Copy) before changing them.
package cache

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/schema"
)

// Handler receives the changes of one informer. Each func may be nil. They
// run on the informer's goroutine, after the cache has been updated, and
// must not block (turn the object into a key and enqueue it). For a resync
// OnUpdate is called with old == new.
type Handler struct {
	OnAdd    func(obj schema.Object)
	OnUpdate func(old, new schema.Object)
	OnDelete func(obj schema.Object)
}

// SelfHandler calls add with the key of every added or updated object: a
// controller's handler on its own kind.
func SelfHandler(add func(key string)) Handler {
	self := func(obj schema.Object) { add(Key(obj)) }
	return Handler{OnAdd: self, OnUpdate: func(_, n schema.Object) { self(n) }}
}

// OwnerHandler calls add with "namespace/name" of the controller of every
// added, updated or deleted object whose controller reference is of kind:
// a controller's handler on the objects it owns.
func OwnerHandler(kind string, add func(key string)) Handler {
	owner := func(obj schema.Object) {
		if ref := metav1.GetControllerOf(obj); ref != nil && ref.Kind == kind {
			add(KeyOf(obj.GetNamespace(), ref.Name))
		}
	}
	return Handler{OnAdd: owner, OnUpdate: func(_, n schema.Object) { owner(n) }, OnDelete: owner}
}

// Cache holds one Informer per resource. Informers are created with
// Informer before Start; Start runs them all.
type Cache struct {
	st     store.Interface
	log    *slog.Logger
	resync time.Duration

	mu        sync.Mutex
	informers map[string]*Informer
	started   bool
	wg        sync.WaitGroup
}

// New returns an empty cache over st. resync <= 0 disables periodic resync.
func New(st store.Interface, log *slog.Logger, resync time.Duration) *Cache {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Cache{st: st, log: log, resync: resync, informers: map[string]*Informer{}}
}

// Informer returns the informer of resource ("pods"), creating it if needed.
// Informers created after Start are not run.
func (c *Cache) Informer(resource string) *Informer {
	c.mu.Lock()
	defer c.mu.Unlock()
	inf, ok := c.informers[resource]
	if !ok {
		inf = &Informer{
			resource: resource,
			st:       c.st,
			log:      c.log.With("resource", resource),
			resync:   c.resync,
			items:    map[string]schema.Object{},
			byOwner:  map[types.UID]map[string]struct{}{},
			synced:   make(chan struct{}),
		}
		c.informers[resource] = inf
	}
	return inf
}

// Lookup returns the informer of resource if one was created.
func (c *Cache) Lookup(resource string) (*Informer, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	inf, ok := c.informers[resource]
	return inf, ok
}

// Start runs every informer until ctx ends.
func (c *Cache) Start(ctx context.Context) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.started {
		return
	}
	c.started = true
	for _, inf := range c.informers {
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			inf.run(ctx)
		}()
	}
}

// Wait blocks until every informer started by Start has returned (after
// Start's ctx ended).
func (c *Cache) Wait() { c.wg.Wait() }

// WaitForSync blocks until every informer has completed its first list, or
// ctx ends (false).
func (c *Cache) WaitForSync(ctx context.Context) bool {
	c.mu.Lock()
	infs := make([]*Informer, 0, len(c.informers))
	for _, inf := range c.informers {
		infs = append(infs, inf)
	}
	c.mu.Unlock()
	for _, inf := range infs {
		select {
		case <-inf.synced:
		case <-ctx.Done():
			return false
		}
	}
	return true
}

// Informer is the cached state of one resource.
type Informer struct {
	resource string
	st       store.Interface
	log      *slog.Logger
	resync   time.Duration

	mu       sync.RWMutex
	items    map[string]schema.Object // key → object
	byOwner  map[types.UID]map[string]struct{}
	handlers []Handler
	synced   chan struct{}
	once     sync.Once
	revision int64
}

// Key is the cache key of an object: "namespace/name", or "name" for
// cluster-scoped objects.
func Key(obj schema.Object) string { return KeyOf(obj.GetNamespace(), obj.GetName()) }

// KeyOf builds a key from its parts.
func KeyOf(namespace, name string) string {
	if namespace == "" {
		return name
	}
	return namespace + "/" + name
}

// SplitKey is the inverse of KeyOf.
func SplitKey(key string) (namespace, name string) {
	for i := 0; i < len(key); i++ {
		if key[i] == '/' {
			return key[:i], key[i+1:]
		}
	}
	return "", key
}

// AddHandler registers h. Call it before the cache starts so that h sees the
// initial list as OnAdd events.
func (i *Informer) AddHandler(h Handler) {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.handlers = append(i.handlers, h)
}

// HasSynced reports whether the first list has completed.
func (i *Informer) HasSynced() bool {
	select {
	case <-i.synced:
		return true
	default:
		return false
	}
}

// Get returns the cached object (shared: copy before changing).
func (i *Informer) Get(namespace, name string) (schema.Object, bool) {
	i.mu.RLock()
	defer i.mu.RUnlock()
	obj, ok := i.items[KeyOf(namespace, name)]
	return obj, ok
}

// List returns the cached objects of namespace ("" for all), in no order
// (shared: copy before changing).
func (i *Informer) List(namespace string) []schema.Object {
	i.mu.RLock()
	defer i.mu.RUnlock()
	out := make([]schema.Object, 0, len(i.items))
	for _, obj := range i.items {
		if namespace == "" || obj.GetNamespace() == namespace {
			out = append(out, obj)
		}
	}
	return out
}

// ByOwner returns the cached objects that have an ownerReference to uid
// (shared: copy before changing).
func (i *Informer) ByOwner(uid types.UID) []schema.Object {
	i.mu.RLock()
	defer i.mu.RUnlock()
	keys := i.byOwner[uid]
	out := make([]schema.Object, 0, len(keys))
	for k := range keys {
		out = append(out, i.items[k])
	}
	return out
}

// Keys returns the keys of all cached objects.
func (i *Informer) Keys() []string {
	i.mu.RLock()
	defer i.mu.RUnlock()
	out := make([]string, 0, len(i.items))
	for k := range i.items {
		out = append(out, k)
	}
	return out
}

func (i *Informer) run(ctx context.Context) {
	backoff := 50 * time.Millisecond
	var resync <-chan time.Time
	if i.resync > 0 {
		t := time.NewTicker(i.resync)
		defer t.Stop()
		resync = t.C
	}
	for ctx.Err() == nil {
		err := i.listAndWatch(ctx, resync)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			if errors.Is(err, store.ErrClosed) {
				i.log.Info("store closed, informer stops")
				return
			}
			i.log.Warn("list/watch failed, retrying", "err", err, "backoff", backoff)
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, 5*time.Second)
			continue
		}
		backoff = 50 * time.Millisecond
	}
}

// listAndWatch lists, replaces the cache, and applies watch events until the
// watch closes (nil: re-list) or fails.
func (i *Informer) listAndWatch(ctx context.Context, resync <-chan time.Time) error {
	objs, rev, err := i.st.List(ctx, i.resource, store.ListOptions{})
	if err != nil {
		return err
	}
	i.replace(objs, rev)
	i.once.Do(func() { close(i.synced) })
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch, err := i.st.Watch(wctx, i.resource, store.ListOptions{}, rev)
	if err != nil {
		if errors.Is(err, store.ErrCompacted) {
			i.log.Info("watch revision compacted, re-listing", "revision", rev)
			return nil
		}
		return err
	}
	seen := int64(0) // events up to this revision are in the cache already
	if rev == 0 {
		// Watch from 0 means "from now on": writes to a store that was
		// empty at the list, made before the watch began (by a controller
		// acting on the first sync), would never be seen. List again now
		// that the watch is in place; the watch's events up to that list
		// are already in it.
		objs, rev, err := i.st.List(ctx, i.resource, store.ListOptions{})
		if err != nil {
			return err
		}
		i.replace(objs, rev)
		seen = rev
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-resync:
			i.resyncAll()
		case ev, ok := <-ch:
			if !ok {
				i.log.Debug("watch closed, re-listing")
				return nil
			}
			if ev.Revision > seen {
				i.apply(ev)
			}
		}
	}
}

func (i *Informer) replace(objs []schema.Object, rev int64) {
	type change struct{ old, new schema.Object }
	var changes []change
	i.mu.Lock()
	seen := make(map[string]struct{}, len(objs))
	for _, obj := range objs {
		k := Key(obj)
		seen[k] = struct{}{}
		old := i.items[k]
		if old != nil && old.GetResourceVersion() == obj.GetResourceVersion() {
			continue
		}
		i.setLocked(k, obj)
		changes = append(changes, change{old, obj})
	}
	for k, old := range i.items {
		if _, ok := seen[k]; !ok {
			i.deleteLocked(k)
			changes = append(changes, change{old, nil})
		}
	}
	i.revision = rev
	hs := i.handlers
	i.mu.Unlock()
	for _, c := range changes {
		i.dispatch(hs, c.old, c.new)
	}
}

func (i *Informer) apply(ev store.Event) {
	if ev.Object == nil {
		return
	}
	k := Key(ev.Object)
	i.mu.Lock()
	old := i.items[k]
	var cur schema.Object
	if ev.Type == store.Deleted {
		if old == nil {
			i.mu.Unlock()
			return
		}
		i.deleteLocked(k)
	} else {
		i.setLocked(k, ev.Object)
		cur = ev.Object
	}
	if ev.Revision > i.revision {
		i.revision = ev.Revision
	}
	hs := i.handlers
	i.mu.Unlock()
	i.dispatch(hs, old, cur)
}

func (i *Informer) resyncAll() {
	i.mu.RLock()
	objs := make([]schema.Object, 0, len(i.items))
	for _, obj := range i.items {
		objs = append(objs, obj)
	}
	hs := i.handlers
	i.mu.RUnlock()
	for _, obj := range objs {
		i.dispatch(hs, obj, obj)
	}
}

// dispatch calls each handler, under recover: a handler that panics on an
// object is logged with its stack, and the informer and the other handlers
// go on (the resync delivers the object again).
func (i *Informer) dispatch(hs []Handler, old, cur schema.Object) {
	for _, h := range hs {
		func() {
			defer func() {
				if r := recover(); r != nil {
					obj := cur
					if obj == nil {
						obj = old
					}
					i.log.Error("event handler panicked; the object is skipped", "object", Key(obj), "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
				}
			}()
			switch {
			case old == nil && cur != nil:
				if h.OnAdd != nil {
					h.OnAdd(cur)
				}
			case old != nil && cur != nil:
				if h.OnUpdate != nil {
					h.OnUpdate(old, cur)
				}
			case old != nil:
				if h.OnDelete != nil {
					h.OnDelete(old)
				}
			}
		}()
	}
}

func (i *Informer) setLocked(k string, obj schema.Object) {
	if old := i.items[k]; old != nil {
		i.unindexLocked(k, old)
	}
	i.items[k] = obj
	for _, ref := range obj.GetOwnerReferences() {
		m := i.byOwner[ref.UID]
		if m == nil {
			m = map[string]struct{}{}
			i.byOwner[ref.UID] = m
		}
		m[k] = struct{}{}
	}
}

func (i *Informer) deleteLocked(k string) {
	if old := i.items[k]; old != nil {
		i.unindexLocked(k, old)
	}
	delete(i.items, k)
}

func (i *Informer) unindexLocked(k string, obj schema.Object) {
	for _, ref := range obj.GetOwnerReferences() {
		if m := i.byOwner[ref.UID]; m != nil {
			delete(m, k)
			if len(m) == 0 {
				delete(i.byOwner, ref.UID)
			}
		}
	}
}
