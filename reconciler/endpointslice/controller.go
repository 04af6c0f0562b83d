package endpointslice

import (
	"context"
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/reconciler/cache"
	"github.com/flotilla-dev/flotilla/reconciler/controller"
	"github.com/flotilla-dev/flotilla/schema"
)

// Controller keeps the EndpointSlices of Services. Keys are
// "namespace/name" of Services (which may no longer exist).
type Controller struct {
	d                      controller.Deps
	services, pods, slices *cache.Informer
}

var _ controller.Controller = (*Controller)(nil)

// New returns the EndpointSlice controller. It enqueues a Service on its
// own changes (deletion included), on a change of any pod its selector
// matches before or after the change (a pod whose labels changed leaves the
// old service and joins the new), and on a change of a slice it owns.
func New(d controller.Deps) *Controller {
	c := &Controller{d: d, services: d.Cache.Informer("services"), pods: d.Cache.Informer("pods"), slices: d.Cache.Informer("endpointslices")}
	q := d.Queue

	self := func(obj schema.Object) { q.Add(cache.Key(obj)) }
	c.services.AddHandler(cache.Handler{OnAdd: self, OnUpdate: func(_, n schema.Object) { self(n) }, OnDelete: self})

	selecting := func(objs ...schema.Object) {
		for _, obj := range objs {
			pod, ok := obj.(*corev1.Pod)
			if !ok {
				continue
			}
			for _, s := range c.services.List(pod.Namespace) {
				if svc, ok := s.(*corev1.Service); ok && Selects(svc, pod) {
					q.Add(cache.Key(svc))
				}
			}
		}
	}
	c.pods.AddHandler(cache.Handler{
		OnAdd:    func(o schema.Object) { selecting(o) },
		OnUpdate: func(o, n schema.Object) { selecting(o, n) },
		OnDelete: func(o schema.Object) { selecting(o) },
	})

	owner := func(obj schema.Object) {
		if name := ServiceOf(obj); name != "" {
			q.Add(cache.KeyOf(obj.GetNamespace(), name))
		}
	}
	c.slices.AddHandler(cache.Handler{OnAdd: owner, OnUpdate: func(_, n schema.Object) { owner(n) }, OnDelete: owner})
	return c
}

// ServiceOf names the Service a slice belongs to: its controlling Service
// owner, else its kubernetes.io/service-name label if this controller
// manages it; "" if neither.
func ServiceOf(slice metav1.Object) string {
	if ref := metav1.GetControllerOf(slice); ref != nil && ref.Kind == "Service" {
		return ref.Name
	}
	if l := slice.GetLabels(); l[LabelManagedBy] == ManagedBy {
		return l[LabelServiceName]
	}
	return ""
}

// Reconcile makes the slices of one Service match its pods. The pods and
// slices come from the cache; when that plan says "write", the service's
// slices are listed again from the store and the plan recomputed, so that a
// lagging cache never re-creates a slice that exists or updates a stale
// copy. A Service missing from the cache and the store has its managed
// slices deleted (the garbage collector would too, but only if it watches
// slices).
func (c *Controller) Reconcile(ctx context.Context, key string) (controller.Result, error) {
	ns, name := cache.SplitKey(key)
	svc, err := c.service(ctx, ns, name)
	if err != nil || svc == nil {
		return controller.Result{}, err
	}
	if Wanted(svc) && len(svc.Name) > maxNameLength {
		// Its slices carry the name in a label, at most 63 characters.
		return controller.Stalled(controller.ReasonInvalidSpec, fmt.Sprintf(
			"metadata.name is %d characters long; a Service's name is a DNS label of at most %d", len(svc.Name), maxNameLength)), nil
	}
	var pods []*corev1.Pod
	if Wanted(svc) {
		for _, o := range c.pods.List(ns) {
			if p, ok := o.(*corev1.Pod); ok {
				pods = append(pods, p)
			}
		}
	}
	var cached []*discoveryv1.EndpointSlice
	for _, o := range c.slices.List(ns) {
		if s, ok := o.(*discoveryv1.EndpointSlice); ok && s.Labels[LabelServiceName] == name {
			cached = append(cached, s)
		}
	}
	acts := Plan(svc, pods, cached)
	if acts.Empty() {
		return controller.Result{}, nil
	}
	fresh, err := c.listSlices(ctx, ns, name)
	if err != nil {
		return controller.Result{}, err
	}
	acts = Plan(svc, pods, fresh)
	return controller.Result{}, c.apply(ctx, key, acts)
}

// service returns the Service at ns/name, a stub (no selector) if it is
// gone from both cache and store, or nil if the cache lags behind a
// Service the store has (its event will come).
func (c *Controller) service(ctx context.Context, ns, name string) (*corev1.Service, error) {
	if o, ok := c.services.Get(ns, name); ok {
		return o.(*corev1.Service), nil
	}
	_, err := c.d.Store.Get(ctx, "services", ns, name)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}, nil
	case err != nil:
		return nil, fmt.Errorf("get service %s/%s: %w", ns, name, err)
	}
	return nil, nil
}

func (c *Controller) listSlices(ctx context.Context, ns, service string) ([]*discoveryv1.EndpointSlice, error) {
	objs, _, err := c.d.Store.List(ctx, "endpointslices", store.ListOptions{
		Namespace: ns, LabelSelector: LabelServiceName + "=" + service,
	})
	if err != nil {
		return nil, fmt.Errorf("list endpointslices of service %s/%s: %w", ns, service, err)
	}
	out := make([]*discoveryv1.EndpointSlice, 0, len(objs))
	for _, o := range objs {
		if s, ok := o.(*discoveryv1.EndpointSlice); ok {
			out = append(out, s)
		}
	}
	return out, nil
}

// apply writes acts: creates and updates first, deletes last, so readers
// never see the service without its endpoints in between.
func (c *Controller) apply(ctx context.Context, key string, acts Actions) error {
	log := c.d.Log.With("service", key)
	for _, s := range acts.Create {
		if _, err := c.d.Store.Create(ctx, s); err != nil {
			return fmt.Errorf("create endpointslice %s/%s: %w", s.Namespace, s.Name, err)
		}
		log.Info("created endpointslice", "slice", s.Name, "endpoints", len(s.Endpoints))
	}
	for _, s := range acts.Update {
		if _, err := c.d.Store.Update(ctx, s); err != nil {
			return fmt.Errorf("update endpointslice %s/%s: %w", s.Namespace, s.Name, err)
		}
		log.Debug("updated endpointslice", "slice", s.Name, "endpoints", len(s.Endpoints))
	}
	for _, s := range acts.Delete {
		_, err := c.d.Store.Delete(ctx, "endpointslices", s.Namespace, s.Name, store.DeleteOptions{UID: string(s.UID)})
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("delete endpointslice %s/%s: %w", s.Namespace, s.Name, err)
		}
		log.Info("deleted endpointslice", "slice", s.Name)
	}
	return nil
}
