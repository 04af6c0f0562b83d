package replicaset

import (
	"context"
	"errors"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/reconciler/cache"
	"github.com/flotilla-dev/flotilla/reconciler/controller"
	"github.com/flotilla-dev/flotilla/schema"
)

// Controller drives ReplicaSets. Keys are "namespace/name" of ReplicaSets.
type Controller struct {
	d                 controller.Deps
	replicaSets, pods *cache.Informer
}

var _ controller.Controller = (*Controller)(nil)

// New returns the ReplicaSet controller. It enqueues a ReplicaSet on its
// own changes and on any change of a pod it controls.
func New(d controller.Deps) *Controller {
	d.Events = controller.OrNop(d.Events)
	c := &Controller{d: d, replicaSets: d.Cache.Informer("replicasets"), pods: d.Cache.Informer("pods")}
	c.replicaSets.AddHandler(cache.SelfHandler(d.Queue.Add))
	c.pods.AddHandler(cache.OwnerHandler("ReplicaSet", d.Queue.Add))
	return c
}

// Reconcile creates or deletes pods of one ReplicaSet and writes its status.
//
// The cache may lag behind the store (our own creations not seen yet), so
// whenever the cached pods say "create" or "delete", the pods are listed
// again from the store and the plan recomputed from that before acting:
// a re-list is cheaper than a duplicate pod, and needs no memory that a
// restart would lose. At most BurstReplicas pods are created or deleted by
// one reconcile, created in slow-start batches (1, 2, 4, …): the pods'
// events bring the next reconcile.
func (c *Controller) Reconcile(ctx context.Context, key string) (res controller.Result, err error) {
	ns, name := cache.SplitKey(key)
	obj, ok := c.replicaSets.Get(ns, name)
	if !ok {
		return controller.Done(), nil
	}
	cached := obj.(*appsv1.ReplicaSet)
	rs := schema.Copy(cached)
	var pods []*corev1.Pod
	for _, o := range c.pods.ByOwner(rs.UID) {
		pods = append(pods, o.(*corev1.Pod))
	}
	now := c.d.Clock.Now()
	acts, err := Plan(rs, pods, now)
	if err != nil {
		return controller.InvalidSpec(err), nil
	}
	if acts.Create > 0 || len(acts.Delete) > 0 {
		fresh, err := c.listPods(ctx, rs)
		if err != nil {
			return res, err
		}
		if acts, err = Plan(rs, fresh, now); err != nil {
			return controller.InvalidSpec(err), nil
		}
	}
	log := c.d.Log.With("replicaset", key)
	defer func() {
		rs.Status = acts.Status
		if _, serr := c.d.Status.Update(ctx, cached, rs); serr != nil && err == nil {
			err = serr
		}
	}()
	res = controller.Requeue(acts.RequeueAfter)
	if acts.Create > 0 {
		made, err := c.createPods(ctx, rs, acts.Create, func(p *corev1.Pod) {
			c.d.Events.Eventf(rs, corev1.EventTypeNormal, "SuccessfulCreate", "Created pod: %s", p.Name)
		})
		if made > 0 {
			log.Info("created pods", "count", made, "replicas", *rs.Spec.Replicas)
		}
		if err != nil {
			return res, err
		}
	}
	for _, p := range acts.Delete {
		if _, err := c.d.Store.Delete(ctx, "pods", p.Namespace, p.Name, store.DeleteOptions{UID: string(p.UID)}); err != nil && !errors.Is(err, store.ErrNotFound) {
			return res, fmt.Errorf("delete pod %s: %w", p.Name, err)
		}
		log.Info("deleted pod", "pod", p.Name)
		c.d.Events.Eventf(rs, corev1.EventTypeNormal, "SuccessfulDelete", "Deleted pod: %s", p.Name)
	}
	return res, nil
}

func (c *Controller) listPods(ctx context.Context, rs *appsv1.ReplicaSet) ([]*corev1.Pod, error) {
	objs, _, err := c.d.Store.List(ctx, "pods", store.ListOptions{Namespace: rs.Namespace})
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

// createPods creates n pods in slow-start batches, stopping at the first
// batch with a failure; a random name that is taken is retried. It returns
// how many were made.
func (c *Controller) createPods(ctx context.Context, rs *appsv1.ReplicaSet, n int, created func(*corev1.Pod)) (int, error) {
	made, err := controller.SlowStart(n, func(int) error {
		var err error
		var out schema.Object
		for range 3 {
			if out, err = c.d.Store.Create(ctx, NewPod(rs)); !errors.Is(err, store.ErrExists) {
				break
			}
		}
		if p, ok := out.(*corev1.Pod); ok && err == nil {
			created(p)
		}
		if err != nil {
			c.d.Events.Eventf(rs, corev1.EventTypeWarning, "FailedCreate", "Error creating: %v", err)
		}
		return err
	})
	if err != nil {
		return made, fmt.Errorf("create pods of replicaset %s: %w", rs.Name, err)
	}
	return made, nil
}
