package loadbalancer

import (
	"context"
	"errors"
	"fmt"
	"sync"

	corev1 "k8s.io/api/core/v1"

	"github.com/flotilla-dev/flotilla/cluster/ipalloc"
	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/reconciler/cache"
	"github.com/flotilla-dev/flotilla/reconciler/controller"
	"github.com/flotilla-dev/flotilla/schema"
)

// Config configures the controller.
type Config struct {
	// Pool is where LoadBalancer addresses come from (server flag
	// --lb-pool, parsed by ipalloc.ParsePool). Default empty: Services of
	// type LoadBalancer get no address (kubectl shows <pending>) and the
	// log says why, once per Service. The addresses must be reachable on
	// the nodes' network and used by nothing else.
	Pool ipalloc.Pool
}

// ReasonLoadBalancerIP is the Stalled reason of a Service whose
// spec.loadBalancerIP cannot be given.
const ReasonLoadBalancerIP = "LoadBalancerIPUnavailable"

// Controller publishes LoadBalancer addresses. Keys are "namespace/name"
// of Services.
type Controller struct {
	d        controller.Deps
	pool     ipalloc.Pool
	services *cache.Informer

	// mu serialises assignments, so that two Services never get the same
	// address; each assignment re-reads the Services from the store.
	mu      sync.Mutex
	pending map[string]string // Service key → why it has no address, as last logged
}

var _ controller.Controller = (*Controller)(nil)

// New returns the controller. It enqueues a Service that is a LoadBalancer
// or publishes an address; when one releases an address or stops asking
// for one, it enqueues the LoadBalancers still waiting for an address.
func New(d controller.Deps, cfg Config) *Controller {
	c := &Controller{d: d, pool: cfg.Pool, services: d.Cache.Informer("services"), pending: map[string]string{}}
	c.services.AddHandler(cache.Handler{
		OnAdd: c.enqueue,
		OnUpdate: func(old, cur schema.Object) {
			c.enqueue(cur)
			o, ok1 := old.(*corev1.Service)
			n, ok2 := cur.(*corev1.Service)
			if ok1 && ok2 && (len(o.Status.LoadBalancer.Ingress) > 0 && !sameIngress(o.Status.LoadBalancer.Ingress, n.Status.LoadBalancer.Ingress) ||
				o.Spec.LoadBalancerIP != n.Spec.LoadBalancerIP) {
				c.wakePending()
			}
		},
		OnDelete: func(obj schema.Object) {
			if s, ok := obj.(*corev1.Service); ok && (s.Spec.Type == corev1.ServiceTypeLoadBalancer || len(s.Status.LoadBalancer.Ingress) > 0) {
				c.d.Queue.Add(cache.Key(s)) // forgets why it was pending
				c.wakePending()
			}
		},
	})
	return c
}

func (c *Controller) enqueue(obj schema.Object) {
	if s, ok := obj.(*corev1.Service); ok && (s.Spec.Type == corev1.ServiceTypeLoadBalancer || len(s.Status.LoadBalancer.Ingress) > 0) {
		c.d.Queue.Add(cache.Key(s))
	}
}

// wakePending enqueues the LoadBalancers without an address.
func (c *Controller) wakePending() {
	for _, obj := range c.services.List("") {
		if s, ok := obj.(*corev1.Service); ok && s.Spec.Type == corev1.ServiceTypeLoadBalancer && len(s.Status.LoadBalancer.Ingress) == 0 {
			c.d.Queue.Add(cache.Key(s))
		}
	}
}

// Reconcile publishes the address Assign decides for the Service, writing
// only when it differs from the published one.
func (c *Controller) Reconcile(ctx context.Context, key string) (controller.Result, error) {
	ns, name := cache.SplitKey(key)
	c.mu.Lock()
	defer c.mu.Unlock()
	obj, err := c.d.Store.Get(ctx, "services", ns, name)
	if errors.Is(err, store.ErrNotFound) {
		delete(c.pending, key)
		return controller.Result{}, nil
	} else if err != nil {
		return controller.Result{}, err
	}
	svc := obj.(*corev1.Service)
	if svc.Spec.Type != corev1.ServiceTypeLoadBalancer && len(svc.Status.LoadBalancer.Ingress) == 0 {
		delete(c.pending, key)
		return controller.Result{}, nil
	}
	var others []*corev1.Service
	if svc.Spec.Type == corev1.ServiceTypeLoadBalancer && !c.pool.Empty() {
		objs, _, err := c.d.Store.List(ctx, "services", store.ListOptions{})
		if err != nil {
			return controller.Result{}, fmt.Errorf("list services: %w", err)
		}
		for _, o := range objs {
			others = append(others, o.(*corev1.Service))
		}
	}
	d := Assign(c.pool, svc, others)
	c.notePending(key, d.Pending)
	res := controller.Done()
	switch {
	case d.Stalled:
		res = controller.Stalled(ReasonLoadBalancerIP, d.Pending)
	case d.Pending != "":
		res = controller.Waiting(d.Pending, 0)
	}
	want := d.Ingress()
	if sameIngress(svc.Status.LoadBalancer.Ingress, want) {
		return res, nil
	}
	var old string
	if in := svc.Status.LoadBalancer.Ingress; len(in) > 0 {
		old = in[0].IP
	}
	svc.Status.LoadBalancer.Ingress = want
	if _, err := c.d.Store.UpdateStatus(ctx, svc); errors.Is(err, store.ErrNotFound) {
		return controller.Done(), nil
	} else if err != nil {
		return controller.Done(), fmt.Errorf("publish the load balancer address of service %s: %w", key, err)
	}
	if d.IP.IsValid() {
		c.d.Log.Info("load balancer address assigned", "service", key, "ip", d.IP.String())
	} else {
		c.d.Log.Info("load balancer address released", "service", key, "ip", old)
	}
	return res, nil
}

// notePending logs why a Service has no address, once per reason.
func (c *Controller) notePending(key, why string) {
	if why == "" {
		delete(c.pending, key)
		return
	}
	if c.pending[key] == why {
		return
	}
	c.pending[key] = why
	c.d.Log.Warn("load balancer address pending", "service", key, "reason", why)
}
