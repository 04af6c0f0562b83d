package admission

import (
	"context"
	"errors"
	"fmt"

	"github.com/flotilla-dev/flotilla/cluster/auth"
	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/schema"
)

// Store is a store.Interface whose writes pass the pipeline: what the API
// server, the controllers and the in-process agent write through. Reads
// and watches go straight to the store underneath.
//
// A single Create or Update runs defaults and validation (the CUE schema
// included) before it takes the store's writer lock, then the admission
// plugins and the write in one store transaction. In a Txn every write is
// admitted inside the transaction, under the lock; the CUE schema then runs
// only for writes whose body changed (a binding, a status or a
// metadata-only update never runs it).
//
// Refusals are *Error (errors.Is store.ErrInvalid or ErrForbidden); the
// store's own errors come through unchanged.
type Store struct {
	inner  store.Interface
	p      *Pipeline
	origin Origin
}

// Store returns inner with its writes admitted as origin's.
func (p *Pipeline) Store(inner store.Interface, origin Origin) *Store {
	return &Store{inner: inner, p: p, origin: origin}
}

// Options are a write's request options.
type Options struct {
	// DryRun runs the whole pipeline and the store's own checks and
	// returns what would be stored, writing nothing (an address allocated
	// for it is shown but not held).
	DryRun bool
	// Warn, if set, is told each warning of an admitted write (Pod
	// Security's warn level), after the write.
	Warn func(string)
}

// warn tells o.Warn w's warnings, once the write is done.
func (o Options) warn(w *Write, err error) {
	if err != nil || o.Warn == nil {
		return
	}
	for _, m := range w.Warnings {
		o.Warn(m)
	}
}

var (
	_ store.Interface      = (*Store)(nil)
	_ store.Tx             = (*tx)(nil)
	_ store.TxStatusWriter = (*tx)(nil)
)

// Get reads from the store.
func (s *Store) Get(ctx context.Context, resource, namespace, name string) (schema.Object, error) {
	return s.inner.Get(ctx, resource, namespace, name)
}

// List reads from the store.
func (s *Store) List(ctx context.Context, resource string, opts store.ListOptions) ([]schema.Object, int64, error) {
	return s.inner.List(ctx, resource, opts)
}

// Watch watches the store.
func (s *Store) Watch(ctx context.Context, resource string, opts store.ListOptions, since int64) (<-chan store.Event, error) {
	return s.inner.Watch(ctx, resource, opts, since)
}

// Revision is the store's.
func (s *Store) Revision() int64 { return s.inner.Revision() }

// Create admits and stores a new object.
func (s *Store) Create(ctx context.Context, obj schema.Object) (schema.Object, error) {
	return s.CreateWith(ctx, obj, Options{})
}

// Update admits and stores an object's new metadata and spec.
func (s *Store) Update(ctx context.Context, obj schema.Object) (schema.Object, error) {
	return s.UpdateWith(ctx, obj, false, Options{})
}

// UpdateStatus admits and stores an object's new status.
func (s *Store) UpdateStatus(ctx context.Context, obj schema.Object) (schema.Object, error) {
	return s.UpdateWith(ctx, obj, true, Options{})
}

// Delete admits and performs a deletion.
func (s *Store) Delete(ctx context.Context, resource, namespace, name string, opts store.DeleteOptions) (schema.Object, error) {
	return s.DeleteWith(ctx, resource, namespace, name, opts, Options{})
}

func kindOf(obj schema.Object) (schema.Kind, error) {
	k, err := schema.KindOf(obj)
	if err != nil {
		return k, fmt.Errorf("%w: %w", err, store.ErrInvalid)
	}
	return k, nil
}

// CreateWith is Create with request options.
func (s *Store) CreateWith(ctx context.Context, obj schema.Object, o Options) (schema.Object, error) {
	k, err := kindOf(obj)
	if err != nil {
		return nil, err
	}
	w := &Write{Op: Create, Kind: k, Object: schema.Copy(obj), Origin: s.origin, User: s.user(ctx)}
	s.p.prepare(w)
	if err := w.Err(); err != nil {
		return nil, err
	}
	var out schema.Object
	err = s.txn(ctx, o, func(t store.Tx) error {
		if err := s.p.Admit(t, []*Write{w}); err != nil {
			return err
		}
		if err := w.Err(); err != nil {
			return err
		}
		var err error
		out, err = t.Create(w.Object)
		return err
	})
	o.warn(w, err)
	return out, err
}

// UpdateWith is Update (status false) or UpdateStatus (status true) with
// request options.
func (s *Store) UpdateWith(ctx context.Context, obj schema.Object, status bool, o Options) (schema.Object, error) {
	k, err := kindOf(obj)
	if err != nil {
		return nil, err
	}
	ns := obj.GetNamespace()
	if k.Namespaced && ns == "" {
		ns = "default"
	}
	// Read outside the lock what the object is compared against, so that
	// validation (the CUE schema) runs there too; the transaction checks
	// that the stored object is still this one.
	old, err := s.inner.Get(ctx, k.Resource, ns, obj.GetName())
	if err != nil {
		return nil, fmt.Errorf("update: %w", err)
	}
	if err := precondition(obj, old); err != nil {
		return nil, err
	}
	w := &Write{Op: Update, Kind: k, Object: schema.Copy(obj), Old: old, Status: status, Origin: s.origin, User: s.user(ctx)}
	s.p.prepare(w)
	if err := w.Err(); err != nil {
		return nil, err
	}
	var out schema.Object
	err = s.txn(ctx, o, func(t store.Tx) error {
		var err error
		out, err = s.update(t, w)
		return err
	})
	o.warn(w, err)
	return out, err
}

// update is the part of an update inside the transaction.
func (s *Store) update(t store.Tx, w *Write) (schema.Object, error) {
	cur, err := t.Get(w.Kind.Resource, w.Object.GetNamespace(), w.Object.GetName())
	if err != nil {
		return nil, fmt.Errorf("update: %w", err)
	}
	return s.finishUpdate(t, w, cur)
}

// finishUpdate admits and writes an update prepared against w.Old, cur
// being what the transaction reads now.
func (s *Store) finishUpdate(t store.Tx, w *Write, cur schema.Object) (schema.Object, error) {
	if err := precondition(w.Object, cur); err != nil {
		return nil, err
	}
	if cur.GetResourceVersion() != w.Old.GetResourceVersion() {
		// Written in between: validate against what is stored now (w has
		// no errors yet, or it would not be here).
		w.Old = cur
		s.p.validate(w, false)
		s.p.recheck(w)
		if err := w.Err(); err != nil {
			return nil, err
		}
	}
	if err := s.p.Admit(t, []*Write{w}); err != nil {
		return nil, err
	}
	if err := w.Err(); err != nil {
		return nil, err
	}
	if w.Status {
		sw, ok := t.(store.TxStatusWriter)
		if !ok {
			return nil, errors.New("admission: the store's transactions cannot write a status")
		}
		return sw.UpdateStatus(w.Object)
	}
	return t.Update(w.Object)
}

// precondition is the store's optimistic concurrency, checked before the
// pipeline so that a stale write gets 409 Conflict, not a validation error.
func precondition(obj, stored schema.Object) error {
	if rv := obj.GetResourceVersion(); rv != "" && rv != stored.GetResourceVersion() {
		return fmt.Errorf("update %s: resourceVersion %s, stored %s: %w", obj.GetName(), rv, stored.GetResourceVersion(), store.ErrConflict)
	}
	return nil
}

// user is who asks, for a User store: the API server's authenticated user.
func (s *Store) user(ctx context.Context) *auth.User {
	if s.origin != User {
		return nil
	}
	return auth.UserFrom(ctx)
}

// DeleteWith is Delete with request options.
func (s *Store) DeleteWith(ctx context.Context, resource, namespace, name string, opts store.DeleteOptions, o Options) (schema.Object, error) {
	var out schema.Object
	err := s.txn(ctx, o, func(t store.Tx) error {
		var err error
		out, err = s.delete(t, resource, namespace, name, opts)
		return err
	})
	return out, err
}

func (s *Store) delete(t store.Tx, resource, namespace, name string, opts store.DeleteOptions) (schema.Object, error) {
	k, ok := schema.KindByResource(resource)
	if !ok {
		return nil, fmt.Errorf("delete: unknown resource %q: %w", resource, store.ErrInvalid)
	}
	cur, err := t.Get(resource, namespace, name)
	if err != nil {
		return nil, fmt.Errorf("delete: %w", err)
	}
	w := &Write{Op: Delete, Kind: k, Old: cur, Origin: s.origin}
	if err := s.p.Admit(t, []*Write{w}); err != nil {
		return nil, err
	}
	if err := w.Err(); err != nil {
		return nil, err
	}
	return t.Delete(resource, namespace, name, opts)
}

// txn runs fn in a store transaction; a dry run rolls it back after fn
// succeeded.
func (s *Store) txn(ctx context.Context, o Options, fn func(store.Tx) error) error {
	_, err := s.inner.Txn(ctx, func(t store.Tx) error {
		if err := fn(t); err != nil {
			return err
		}
		if o.DryRun {
			return errDryRun
		}
		return nil
	})
	if errors.Is(err, errDryRun) {
		return nil
	}
	return err
}

// Txn runs fn with a view whose writes are admitted: batched writes pass
// the pipeline like single ones, inside the transaction.
func (s *Store) Txn(ctx context.Context, fn func(tx store.Tx) error) (int64, error) {
	return s.inner.Txn(ctx, func(t store.Tx) error {
		return fn(&tx{s: s, t: t})
	})
}

// tx is a transaction's view with admitted writes.
type tx struct {
	s *Store
	t store.Tx
}

func (x *tx) Get(resource, namespace, name string) (schema.Object, error) {
	return x.t.Get(resource, namespace, name)
}

func (x *tx) List(resource string, opts store.ListOptions) ([]schema.Object, error) {
	return x.t.List(resource, opts)
}

func (x *tx) Create(obj schema.Object) (schema.Object, error) {
	k, err := kindOf(obj)
	if err != nil {
		return nil, err
	}
	w := &Write{Op: Create, Kind: k, Object: schema.Copy(obj), Origin: x.s.origin}
	x.s.p.prepare(w)
	if err := w.Err(); err != nil {
		return nil, err
	}
	if err := x.s.p.Admit(x.t, []*Write{w}); err != nil {
		return nil, err
	}
	if err := w.Err(); err != nil {
		return nil, err
	}
	return x.t.Create(w.Object)
}

func (x *tx) Update(obj schema.Object) (schema.Object, error) { return x.update(obj, false) }

func (x *tx) UpdateStatus(obj schema.Object) (schema.Object, error) { return x.update(obj, true) }

func (x *tx) update(obj schema.Object, status bool) (schema.Object, error) {
	k, err := kindOf(obj)
	if err != nil {
		return nil, err
	}
	ns := obj.GetNamespace()
	if k.Namespaced && ns == "" {
		ns = "default"
	}
	old, err := x.t.Get(k.Resource, ns, obj.GetName())
	if err != nil {
		return nil, fmt.Errorf("update: %w", err)
	}
	if err := precondition(obj, old); err != nil {
		return nil, err
	}
	w := &Write{Op: Update, Kind: k, Object: schema.Copy(obj), Old: old, Status: status, Origin: x.s.origin}
	x.s.p.prepare(w)
	if err := w.Err(); err != nil {
		return nil, err
	}
	return x.s.finishUpdate(x.t, w, old)
}

func (x *tx) Delete(resource, namespace, name string, opts store.DeleteOptions) (schema.Object, error) {
	return x.s.delete(x.t, resource, namespace, name, opts)
}
