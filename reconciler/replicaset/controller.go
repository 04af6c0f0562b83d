package replicaset

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"

	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/reconciler/cache"
	"github.com/flotilla-dev/flotilla/reconciler/controller"
	"github.com/flotilla-dev/flotilla/schema"
)

// Controller drives ReplicaSets. Keys are "namespace/name" of ReplicaSets.
type Controller struct {
	store store.Interface
	clock controller.Clock
	log   *slog.Logger

	replicaSets, pods *cache.Informer
}

var _ controller.Controller = (*Controller)(nil)

// New returns the ReplicaSet controller writing to st.
func New(st store.Interface, clock controller.Clock, log *slog.Logger) *Controller {
	return &Controller{store: st, clock: clock, log: log.With("controller", "replicaset")}
}

// Name is "replicaset".
func (c *Controller) Name() string { return "replicaset" }

// Setup enqueues a ReplicaSet on its own changes and on any change of a pod
// it controls.
func (c *Controller) Setup(ca *cache.Cache, q controller.Queue) {
	c.replicaSets = ca.Informer("replicasets")
	c.pods = ca.Informer("pods")
	c.replicaSets.AddHandler(cache.SelfHandler(q.Add))
	owner := cache.OwnerHandler("ReplicaSet", q.Add)
	c.pods.AddHandler(owner)
}

// Reconcile creates or deletes pods of one ReplicaSet and writes its status.
//
// The cache may lag behind the store (our own creations not seen yet), so
// whenever the cached pods say "create" or "delete", the pods are listed
// again from the store and the plan recomputed from that before acting:
// a re-list is cheaper than a duplicate pod, and needs no memory that a
// restart would lose.
func (c *Controller) Reconcile(ctx context.Context, key string) (res controller.Result, err error) {
	ns, name := cache.SplitKey(key)
	obj, ok := c.replicaSets.Get(ns, name)
	if !ok {
		return res, nil
	}
	rs := schema.Copy(obj.(*appsv1.ReplicaSet))
	var pods []*corev1.Pod
	for _, o := range c.pods.ByOwner(rs.UID) {
		pods = append(pods, o.(*corev1.Pod))
	}
	now := c.clock.Now()
	acts := Plan(rs, pods, now)
	if acts.Create > 0 || len(acts.Delete) > 0 {
		fresh, err := c.listPods(ctx, rs)
		if err != nil {
			return res, err
		}
		acts = Plan(rs, fresh, now)
	}
	log := c.log.With("replicaset", key)
	defer func() {
		if serr := c.writeStatus(ctx, rs, acts.Status); serr != nil && err == nil {
			err = serr
		}
	}()
	res.RequeueAfter = acts.RequeueAfter
	if acts.Create > 0 {
		if err := c.createPods(ctx, rs, acts.Create); err != nil {
			return res, err
		}
		log.Info("created pods", "count", acts.Create, "replicas", *rs.Spec.Replicas)
	}
	for _, p := range acts.Delete {
		if _, err := c.store.Delete(ctx, "pods", p.Namespace, p.Name, store.DeleteOptions{UID: string(p.UID)}); err != nil && !errors.Is(err, store.ErrNotFound) {
			return res, fmt.Errorf("delete pod %s: %w", p.Name, err)
		}
		log.Info("deleted pod", "pod", p.Name)
	}
	return res, nil
}

func (c *Controller) listPods(ctx context.Context, rs *appsv1.ReplicaSet) ([]*corev1.Pod, error) {
	objs, _, err := c.store.List(ctx, "pods", store.ListOptions{Namespace: rs.Namespace})
	if err != nil {
		return nil, fmt.Errorf("list pods of replicaset %s: %w", rs.Name, err)
	}
	pods := make([]*corev1.Pod, 0, len(objs))
	for _, o := range objs {
		if p, ok := o.(*corev1.Pod); ok {
			pods = append(pods, p)
		}
	}
	return pods, nil
}

// createPods creates n pods, a few at a time; a taken random name is retried.
func (c *Controller) createPods(ctx context.Context, rs *appsv1.ReplicaSet, n int) error {
	const parallel = 8
	sem := make(chan struct{}, parallel)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	for i := 0; i < n; i++ {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			var err error
			for try := 0; try < 3; try++ {
				if _, err = c.store.Create(ctx, NewPod(rs)); !errors.Is(err, store.ErrExists) {
					break
				}
			}
			if err != nil {
				mu.Lock()
				if first == nil {
					first = fmt.Errorf("create pod of replicaset %s: %w", rs.Name, err)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return first
}

func (c *Controller) writeStatus(ctx context.Context, rs *appsv1.ReplicaSet, st appsv1.ReplicaSetStatus) error {
	if apiequality.Semantic.DeepEqual(rs.Status, st) {
		return nil
	}
	rs.Status = st
	if _, err := c.store.UpdateStatus(ctx, rs); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return nil
		}
		return fmt.Errorf("update status of replicaset %s: %w", rs.Name, err)
	}
	return nil
}
