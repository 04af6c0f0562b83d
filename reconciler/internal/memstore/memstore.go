// Package memstore is a small in-memory store.Interface for the
// reconcilers' tests: the same contract as the Badger store (revisions,
// optimistic concurrency, status kept apart from spec, watch with resume),
// none of its persistence. It is a test double, not a second store.
package memstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/rand"

	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/schema"
)

// Store is the in-memory store. The zero value is not usable; use New.
type Store struct {
	mu       sync.Mutex
	rev      int64
	objs     map[string]schema.Object // resource/ns/name
	history  []store.Event            // with resource in histRes
	histRes  []string
	watchers map[*watcher]struct{}
	closed   bool
}

type watcher struct {
	resource string
	since    int64
	opts     store.ListOptions
	ch       chan store.Event
	closed   bool // ch is closed: the receiver fell behind, or its ctx ended
}

var _ store.Interface = (*Store)(nil)

// New returns an empty store at revision 0.
func New() *Store {
	return &Store{objs: map[string]schema.Object{}, watchers: map[*watcher]struct{}{}}
}

// Close closes every watch; later calls fail with store.ErrClosed.
func (s *Store) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for w := range s.watchers {
		close(w.ch)
		w.closed = true
		delete(s.watchers, w)
	}
}

// DropWatches closes every open watch, as a store does with slow receivers.
func (s *Store) DropWatches() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for w := range s.watchers {
		close(w.ch)
		w.closed = true
		delete(s.watchers, w)
	}
}

func key(resource, ns, name string) string { return resource + "/" + ns + "/" + name }

func resourceOf(obj schema.Object) (schema.Kind, error) {
	k, err := schema.KindOf(obj)
	if err != nil {
		return k, fmt.Errorf("%w: %v", store.ErrInvalid, err)
	}
	return k, nil
}

func clone(obj schema.Object) schema.Object {
	c := obj.DeepCopyObject().(schema.Object)
	if k, err := schema.KindOf(c); err == nil {
		schema.SetTypeMeta(c, k)
	}
	return c
}

func matches(obj schema.Object, opts store.ListOptions) (bool, error) {
	if opts.Namespace != "" && obj.GetNamespace() != opts.Namespace {
		return false, nil
	}
	if opts.LabelSelector != "" {
		sel, err := labels.Parse(opts.LabelSelector)
		if err != nil {
			return false, fmt.Errorf("%w: label selector: %v", store.ErrInvalid, err)
		}
		if !sel.Matches(labels.Set(obj.GetLabels())) {
			return false, nil
		}
	}
	if opts.FieldSelector != "" {
		for _, term := range splitComma(opts.FieldSelector) {
			neg := false
			f, v, ok := cut(term, "!=")
			if ok {
				neg = true
			} else {
				f, v, ok = cut(term, "=")
				if ok && len(v) > 0 && v[0] == '=' {
					v = v[1:]
				}
			}
			if !ok {
				return false, fmt.Errorf("%w: field selector %q", store.ErrInvalid, term)
			}
			var got string
			switch f {
			case "metadata.name":
				got = obj.GetName()
			case "metadata.namespace":
				got = obj.GetNamespace()
			case "spec.nodeName":
				if p, ok := obj.(*corev1.Pod); ok {
					got = p.Spec.NodeName
				}
			default:
				return false, fmt.Errorf("%w: field selector %q", store.ErrInvalid, f)
			}
			if (got != v) != neg {
				return false, nil
			}
		}
	}
	return true, nil
}

// view is the state the operations act on: the store's own (writes are
// published at once) or a transaction's copy (published at commit).
type view struct {
	objs    map[string]schema.Object
	rev     int64
	publish func(resource string, ev store.Event)
}

func (v *view) get(resource, ns, name string) (schema.Object, error) {
	obj, ok := v.objs[key(resource, ns, name)]
	if !ok {
		return nil, fmt.Errorf("%s %s/%s: %w", resource, ns, name, store.ErrNotFound)
	}
	return clone(obj), nil
}

func (v *view) list(resource string, opts store.ListOptions) ([]schema.Object, error) {
	var out []schema.Object
	prefix := resource + "/"
	for k, obj := range v.objs {
		if len(k) <= len(prefix) || k[:len(prefix)] != prefix {
			continue
		}
		ok, err := matches(obj, opts)
		if err != nil {
			return nil, err
		}
		if ok {
			out = append(out, clone(obj))
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].GetNamespace() != out[j].GetNamespace() {
			return out[i].GetNamespace() < out[j].GetNamespace()
		}
		return out[i].GetName() < out[j].GetName()
	})
	return out, nil
}

func (v *view) create(in schema.Object) (schema.Object, error) {
	k, err := resourceOf(in)
	if err != nil {
		return nil, err
	}
	obj := clone(in)
	if k.Namespaced && obj.GetNamespace() == "" {
		obj.SetNamespace("default")
	}
	if !k.Namespaced && obj.GetNamespace() != "" {
		return nil, fmt.Errorf("%w: %s is cluster-scoped", store.ErrInvalid, k.Kind)
	}
	if obj.GetName() == "" && obj.GetGenerateName() != "" {
		obj.SetName(obj.GetGenerateName() + rand.String(5))
	}
	if obj.GetName() == "" {
		return nil, fmt.Errorf("%w: no name", store.ErrInvalid)
	}
	kk := key(k.Resource, obj.GetNamespace(), obj.GetName())
	if _, ok := v.objs[kk]; ok {
		return nil, fmt.Errorf("%s %s: %w", k.Resource, obj.GetName(), store.ErrExists)
	}
	v.rev++
	obj.SetUID(types.UID(fmt.Sprintf("%08x-%s", v.rev, rand.String(12))))
	obj.SetCreationTimestamp(metav1.NewTime(time.Now().Truncate(time.Second)))
	obj.SetGeneration(1)
	obj.SetResourceVersion(strconv.FormatInt(v.rev, 10))
	v.objs[kk] = obj
	v.publish(k.Resource, store.Event{Type: store.Added, Object: obj, Revision: v.rev})
	return clone(obj), nil
}

// field returns obj's top-level JSON field ("spec", "status").
func field(obj schema.Object, name string) json.RawMessage {
	b, _ := json.Marshal(obj)
	var m map[string]json.RawMessage
	_ = json.Unmarshal(b, &m)
	return m[name]
}

// with returns a copy of base with its top-level field name taken from src.
func with(k schema.Kind, base, src schema.Object, name string) (schema.Object, error) {
	b, _ := json.Marshal(base)
	var m map[string]json.RawMessage
	_ = json.Unmarshal(b, &m)
	if v := field(src, name); v != nil {
		m[name] = v
	} else {
		delete(m, name)
	}
	b, _ = json.Marshal(m)
	return schema.Decode(k, b)
}

func (v *view) update(in schema.Object, part string) (schema.Object, error) {
	k, err := resourceOf(in)
	if err != nil {
		return nil, err
	}
	if in.GetName() == "" {
		return nil, fmt.Errorf("%w: no name", store.ErrInvalid)
	}
	ns := in.GetNamespace()
	if k.Namespaced && ns == "" {
		ns = "default"
	}
	kk := key(k.Resource, ns, in.GetName())
	cur, ok := v.objs[kk]
	if !ok {
		return nil, fmt.Errorf("%s %s: %w", k.Resource, in.GetName(), store.ErrNotFound)
	}
	if rv := in.GetResourceVersion(); rv != "" && rv != cur.GetResourceVersion() {
		return nil, fmt.Errorf("%s %s: %w", k.Resource, in.GetName(), store.ErrConflict)
	}
	var next schema.Object
	if part == "status" {
		next, err = with(k, cur, in, "status")
	} else {
		next, err = with(k, in, cur, "status")
		if err == nil {
			next.SetUID(cur.GetUID())
			next.SetCreationTimestamp(cur.GetCreationTimestamp())
			next.SetGeneration(cur.GetGeneration())
			next.SetNamespace(ns)
			if string(field(next, "spec")) != string(field(cur, "spec")) {
				next.SetGeneration(cur.GetGeneration() + 1)
			}
		}
	}
	if err != nil {
		return nil, err
	}
	next.SetResourceVersion(cur.GetResourceVersion())
	a, _ := json.Marshal(next)
	b, _ := json.Marshal(cur)
	if string(a) == string(b) {
		return clone(cur), nil
	}
	v.rev++
	next.SetResourceVersion(strconv.FormatInt(v.rev, 10))
	v.objs[kk] = next
	v.publish(k.Resource, store.Event{Type: store.Modified, Object: next, Revision: v.rev})
	return clone(next), nil
}

func (v *view) delete(resource, ns, name string, opts store.DeleteOptions) (schema.Object, error) {
	kk := key(resource, ns, name)
	cur, ok := v.objs[kk]
	if !ok {
		return nil, fmt.Errorf("%s %s/%s: %w", resource, ns, name, store.ErrNotFound)
	}
	if (opts.UID != "" && opts.UID != string(cur.GetUID())) || (opts.ResourceVersion != "" && opts.ResourceVersion != cur.GetResourceVersion()) {
		return nil, fmt.Errorf("%s %s/%s: %w", resource, ns, name, store.ErrConflict)
	}
	delete(v.objs, kk)
	v.rev++
	last := clone(cur)
	last.SetResourceVersion(strconv.FormatInt(v.rev, 10))
	v.publish(resource, store.Event{Type: store.Deleted, Object: last, Revision: v.rev})
	return clone(last), nil
}

// do runs fn on the store's own view, under the lock.
func (s *Store) do(fn func(v *view) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return store.ErrClosed
	}
	v := &view{objs: s.objs, rev: s.rev, publish: s.publishLocked}
	err := fn(v)
	s.rev = v.rev
	return err
}

// Get implements store.Interface.
func (s *Store) Get(_ context.Context, resource, ns, name string) (obj schema.Object, err error) {
	err = s.do(func(v *view) error { obj, err = v.get(resource, ns, name); return err })
	return obj, err
}

// List implements store.Interface.
func (s *Store) List(_ context.Context, resource string, opts store.ListOptions) (objs []schema.Object, rev int64, err error) {
	err = s.do(func(v *view) error { objs, err = v.list(resource, opts); rev = v.rev; return err })
	if err != nil {
		return nil, 0, err
	}
	return objs, rev, nil
}

// Create implements store.Interface.
func (s *Store) Create(_ context.Context, in schema.Object) (obj schema.Object, err error) {
	err = s.do(func(v *view) error { obj, err = v.create(in); return err })
	return obj, err
}

// Update implements store.Interface.
func (s *Store) Update(_ context.Context, in schema.Object) (obj schema.Object, err error) {
	err = s.do(func(v *view) error { obj, err = v.update(in, "spec"); return err })
	return obj, err
}

// UpdateStatus implements store.Interface.
func (s *Store) UpdateStatus(_ context.Context, in schema.Object) (obj schema.Object, err error) {
	err = s.do(func(v *view) error { obj, err = v.update(in, "status"); return err })
	return obj, err
}

// Delete implements store.Interface.
func (s *Store) Delete(_ context.Context, resource, ns, name string, opts store.DeleteOptions) (obj schema.Object, err error) {
	err = s.do(func(v *view) error { obj, err = v.delete(resource, ns, name, opts); return err })
	return obj, err
}

// Txn implements store.Interface: fn works on a copy of the objects, which
// replaces them, and whose events are published, only when fn returns nil.
func (s *Store) Txn(_ context.Context, fn func(store.Tx) error) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, store.ErrClosed
	}
	type staged struct {
		resource string
		ev       store.Event
	}
	var events []staged
	v := &view{objs: make(map[string]schema.Object, len(s.objs)), rev: s.rev,
		publish: func(resource string, ev store.Event) { events = append(events, staged{resource, ev}) }}
	for k, o := range s.objs {
		v.objs[k] = o
	}
	t := &tx{v: v}
	err := fn(t)
	t.done = true
	if err != nil {
		return s.rev, err
	}
	s.objs, s.rev = v.objs, v.rev
	for _, e := range events {
		s.publishLocked(e.resource, e.ev)
	}
	return s.rev, nil
}

// tx is the store.Tx of Txn.
type tx struct {
	v    *view
	done bool
}

var (
	_ store.Tx             = (*tx)(nil)
	_ store.TxStatusWriter = (*tx)(nil)
)

var errTxDone = errors.New("memstore: Tx used after its Txn function returned")

func (t *tx) Get(resource, ns, name string) (schema.Object, error) {
	if t.done {
		return nil, errTxDone
	}
	return t.v.get(resource, ns, name)
}

func (t *tx) List(resource string, opts store.ListOptions) ([]schema.Object, error) {
	if t.done {
		return nil, errTxDone
	}
	return t.v.list(resource, opts)
}

func (t *tx) Create(obj schema.Object) (schema.Object, error) {
	if t.done {
		return nil, errTxDone
	}
	return t.v.create(obj)
}

func (t *tx) Update(obj schema.Object) (schema.Object, error) {
	if t.done {
		return nil, errTxDone
	}
	return t.v.update(obj, "spec")
}

// UpdateStatus implements store.TxStatusWriter.
func (t *tx) UpdateStatus(obj schema.Object) (schema.Object, error) {
	if t.done {
		return nil, errTxDone
	}
	return t.v.update(obj, "status")
}

func (t *tx) Delete(resource, ns, name string, opts store.DeleteOptions) (schema.Object, error) {
	if t.done {
		return nil, errTxDone
	}
	return t.v.delete(resource, ns, name, opts)
}

func (s *Store) publishLocked(resource string, ev store.Event) {
	s.history = append(s.history, ev)
	s.histRes = append(s.histRes, resource)
	for w := range s.watchers {
		s.sendLocked(w, resource, ev)
	}
}

func (s *Store) sendLocked(w *watcher, resource string, ev store.Event) {
	if w.closed || w.resource != resource || ev.Revision <= w.since {
		return
	}
	if ok, _ := matches(ev.Object, w.opts); !ok {
		return
	}
	ev.Object = clone(ev.Object)
	select {
	case w.ch <- ev:
	default: // receiver too far behind: close, it re-lists
		close(w.ch)
		w.closed = true
		delete(s.watchers, w)
	}
}

// Watch implements store.Interface. History is never compacted.
func (s *Store) Watch(ctx context.Context, resource string, opts store.ListOptions, since int64) (<-chan store.Event, error) {
	if _, err := matches(&corev1.Pod{}, opts); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, store.ErrClosed
	}
	w := &watcher{resource: resource, since: since, opts: opts, ch: make(chan store.Event, 4096)}
	if since > 0 {
		for i, ev := range s.history {
			if ev.Revision > since {
				s.sendLocked(w, s.histRes[i], ev)
			}
		}
	}
	if w.closed { // the replay alone overflowed it
		return w.ch, nil
	}
	s.watchers[w] = struct{}{}
	go func() {
		<-ctx.Done()
		s.mu.Lock()
		defer s.mu.Unlock()
		if _, ok := s.watchers[w]; ok {
			close(w.ch)
			w.closed = true
			delete(s.watchers, w)
		}
	}()
	return w.ch, nil
}

// Revision implements store.Interface.
func (s *Store) Revision() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rev
}

func splitComma(s string) []string {
	var out []string
	start := 0
	for i := 0; i <= len(s); i++ {
		if i == len(s) || s[i] == ',' {
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return out
}

func cut(s, sep string) (string, string, bool) {
	for i := 0; i+len(sep) <= len(s); i++ {
		if s[i:i+len(sep)] == sep {
			return s[:i], s[i+len(sep):], true
		}
	}
	return s, "", false
}
