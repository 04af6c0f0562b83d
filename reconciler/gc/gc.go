// Package gc is the garbage collector: an object that has ownerReferences
// and none of whose owners exists any more (by UID, not by name) is deleted
// — the ReplicaSets of a deleted Deployment, then their pods; the pods of a
// deleted StatefulSet, and its claims when its claim retention policy is
// whenDeleted: Delete (only then do they carry a reference to it). Objects
// with no ownerReferences (bare pods, retained claims) are never touched. Dangling is the pure
// rule; Controller is the edge over the watch cache and the store.
package gc

import (
	"context"
	"errors"
	"fmt"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/reconciler/cache"
	"github.com/flotilla-dev/flotilla/reconciler/controller"
	"github.com/flotilla-dev/flotilla/schema"
)

// DefaultDependents are the resources collected when Config names none.
var DefaultDependents = []string{"replicasets", "pods", "persistentvolumeclaims"}

// DefaultOwners are the resources whose deletion is watched to find
// dependents promptly (others are still checked, on resync).
var DefaultOwners = []string{"deployments", "replicasets", "statefulsets"}

// OwnerLookup tells whether the owner named by ref (in namespace ns of the
// dependent) exists with ref's UID.
type OwnerLookup func(ns string, ref metav1.OwnerReference) (bool, error)

// Dangling reports whether obj should be collected: it has at least one
// ownerReference and none of its owners exists. Like Kubernetes, an object
// with another live owner is kept even if its controller owner is gone.
func Dangling(obj metav1.Object, exists OwnerLookup) (bool, error) {
	refs := obj.GetOwnerReferences()
	if len(refs) == 0 {
		return false, nil
	}
	for _, ref := range refs {
		ok, err := exists(obj.GetNamespace(), ref)
		if err != nil || ok {
			return false, err
		}
	}
	return true, nil
}

// Config chooses what the collector looks at. Zero values mean the
// defaults.
type Config struct {
	// Dependents are the resources collected (DefaultDependents).
	Dependents []string
	// Owners are the resources whose deletion is watched to find
	// dependents promptly (DefaultOwners).
	Owners []string
}

// Controller deletes dangling dependents. Keys are "resource/namespace/name".
type Controller struct {
	d   controller.Deps
	cfg Config
}

var _ controller.Controller = (*Controller)(nil)

// Subject maps a key to the dependent it names.
func Subject(key string) (controller.Ref, bool) {
	res, rest, ok := strings.Cut(key, "/")
	if !ok {
		return controller.Ref{}, false
	}
	ns, name := cache.SplitKey(rest)
	return controller.Ref{Resource: res, Namespace: ns, Name: name}, true
}

// New returns the garbage collector. It enqueues every dependent with
// ownerReferences when it is added or changed (and on resync), and the
// cached dependents of an owner when the owner is deleted.
func New(d controller.Deps, cfg Config) *Controller {
	if cfg.Dependents == nil {
		cfg.Dependents = DefaultDependents
	}
	if cfg.Owners == nil {
		cfg.Owners = DefaultOwners
	}
	c := &Controller{d: d, cfg: cfg}
	ca, q := d.Cache, d.Queue
	for _, res := range cfg.Dependents {
		enq := func(obj schema.Object) {
			if len(obj.GetOwnerReferences()) > 0 {
				q.Add(res + "/" + cache.Key(obj))
			}
		}
		ca.Informer(res).AddHandler(cache.Handler{OnAdd: enq, OnUpdate: func(_, n schema.Object) { enq(n) }})
	}
	for _, res := range cfg.Owners {
		ca.Informer(res).AddHandler(cache.Handler{OnDelete: func(owner schema.Object) {
			for _, dep := range cfg.Dependents {
				for _, obj := range ca.Informer(dep).ByOwner(owner.GetUID()) {
					q.Add(dep + "/" + cache.Key(obj))
				}
			}
		}})
	}
	return c
}

// Reconcile deletes the object at key if it is dangling. An owner missing
// from the cache is confirmed with the store before anything is deleted,
// and the delete is conditional on the dependent's UID.
func (c *Controller) Reconcile(ctx context.Context, key string) (controller.Result, error) {
	ref, ok := Subject(key)
	if !ok {
		return controller.Done(), nil
	}
	res, ns, name := ref.Resource, ref.Namespace, ref.Name
	inf, ok := c.d.Cache.Lookup(res)
	if !ok {
		return controller.Result{}, nil
	}
	obj, found := inf.Get(ns, name)
	if !found {
		return controller.Result{}, nil
	}
	dangling, err := Dangling(obj, func(ns string, ref metav1.OwnerReference) (bool, error) {
		return c.ownerExists(ctx, ns, ref)
	})
	if err != nil || !dangling {
		return controller.Result{}, err
	}
	_, err = c.d.Store.Delete(ctx, res, ns, name, store.DeleteOptions{UID: string(obj.GetUID())})
	if err != nil && !errors.Is(err, store.ErrNotFound) && !errors.Is(err, store.ErrConflict) {
		return controller.Result{}, fmt.Errorf("collect %s: %w", ref, err)
	}
	c.d.Log.Info("collected object whose owners are gone", "resource", res, "object", cache.KeyOf(ns, name))
	return controller.Result{}, nil
}

func (c *Controller) ownerExists(ctx context.Context, ns string, ref metav1.OwnerReference) (bool, error) {
	k, ok := schema.KindByName(ref.Kind)
	if !ok {
		return true, nil // an owner kind we do not know: never collect
	}
	if !k.Namespaced {
		ns = ""
	}
	if inf, ok := c.d.Cache.Lookup(k.Resource); ok {
		if o, ok := inf.Get(ns, ref.Name); ok && o.GetUID() == ref.UID {
			return true, nil
		}
	}
	o, err := c.d.Store.Get(ctx, k.Resource, ns, ref.Name)
	if errors.Is(err, store.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("look up owner %s %s: %w", ref.Kind, ref.Name, err)
	}
	return o.GetUID() == types.UID(ref.UID), nil
}
