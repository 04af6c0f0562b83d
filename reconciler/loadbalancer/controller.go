package loadbalancer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
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

// Controller publishes LoadBalancer addresses. Keys are "namespace/name"
// of Services.
type Controller struct {
	store    store.Interface
	pool     ipalloc.Pool
	log      *slog.Logger
	services *cache.Informer
	queue    controller.Queue

	// mu serialises assignments, so that two Services never get the same
	// address; each assignment re-reads the Services from the store.
	mu      sync.Mutex
	pending map[string]string // Service key → why it has no address, as last logged
}

var _ controller.Controller = (*Controller)(nil)

// New returns the controller writing to st.
func New(st store.Interface, cfg Config, log *slog.Logger) *Controller {
	return &Controller{store: st, pool: cfg.Pool, log: log.With("controller", "loadbalancer"), pending: map[string]string{}}
}

// Name is "loadbalancer".
func (c *Controller) Name() string { return "loadbalancer" }

// Setup enqueues a Service that is a LoadBalancer or publishes an address;
// when one releases an address or stops asking for one, it enqueues the
// LoadBalancers still waiting for an address.
func (c *Controller) Setup(ca *cache.Cache, q controller.Queue) {
	c.services = ca.Informer("services")
	c.queue = q
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
				c.queue.Add(cache.Key(s)) // forgets why it was pending
				c.wakePending()
			}
		},
	})
}

func (c *Controller) enqueue(obj schema.Object) {
	if s, ok := obj.(*corev1.Service); ok && (s.Spec.Type == corev1.ServiceTypeLoadBalancer || len(s.Status.LoadBalancer.Ingress) > 0) {
		c.queue.Add(cache.Key(s))
	}
}

// wakePending enqueues the LoadBalancers without an address.
func (c *Controller) wakePending() {
	for _, obj := range c.services.List("") {
		if s, ok := obj.(*corev1.Service); ok && s.Spec.Type == corev1.ServiceTypeLoadBalancer && len(s.Status.LoadBalancer.Ingress) == 0 {
			c.queue.Add(cache.Key(s))
		}
	}
}

// Reconcile publishes the address Assign decides for the Service, writing
// only when it differs from the published one.
func (c *Controller) Reconcile(ctx context.Context, key string) (controller.Result, error) {
	ns, name := cache.SplitKey(key)
	c.mu.Lock()
	defer c.mu.Unlock()
	obj, err := c.store.Get(ctx, "services", ns, name)
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
		objs, _, err := c.store.List(ctx, "services", store.ListOptions{})
		if err != nil {
			return controller.Result{}, fmt.Errorf("list services: %w", err)
		}
		for _, o := range objs {
			others = append(others, o.(*corev1.Service))
		}
	}
	d := Assign(c.pool, svc, others)
	c.notePending(key, d.Pending)
	want := d.Ingress()
	if sameIngress(svc.Status.LoadBalancer.Ingress, want) {
		return controller.Result{}, nil
	}
	var old string
	if in := svc.Status.LoadBalancer.Ingress; len(in) > 0 {
		old = in[0].IP
	}
	svc.Status.LoadBalancer.Ingress = want
	if _, err := c.store.UpdateStatus(ctx, svc); errors.Is(err, store.ErrNotFound) {
		return controller.Result{}, nil
	} else if err != nil {
		return controller.Result{}, fmt.Errorf("publish the load balancer address of service %s: %w", key, err)
	}
	if d.IP.IsValid() {
		c.log.Info("load balancer address assigned", "service", key, "ip", d.IP.String())
	} else {
		c.log.Info("load balancer address released", "service", key, "ip", old)
	}
	return controller.Result{}, nil
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
	c.log.Warn("load balancer address pending", "service", key, "reason", why)
}
