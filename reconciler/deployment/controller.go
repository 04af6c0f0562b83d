package deployment

import (
	"context"
	"errors"
	"fmt"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/reconciler/cache"
	"github.com/flotilla-dev/flotilla/reconciler/controller"
	"github.com/flotilla-dev/flotilla/schema"
)

// Controller drives Deployments. Keys are "namespace/name" of Deployments.
type Controller struct {
	d                          controller.Deps
	deploys, replicaSets, pods *cache.Informer
}

var _ controller.Controller = (*Controller)(nil)

// RetryWaiting is how soon a rollout waiting for something that sends no
// event (old pods to be gone) looks again.
const RetryWaiting = 2 * time.Second

// New returns the Deployment controller. It enqueues a Deployment on its
// own changes, on changes of the ReplicaSets it controls, and when a pod of
// those goes away (Recreate waits for that).
func New(d controller.Deps) *Controller {
	d.Events = controller.OrNop(d.Events)
	c := &Controller{d: d, deploys: d.Cache.Informer("deployments"), replicaSets: d.Cache.Informer("replicasets"), pods: d.Cache.Informer("pods")}
	c.deploys.AddHandler(cache.SelfHandler(d.Queue.Add))
	owner := cache.OwnerHandler("Deployment", d.Queue.Add)
	c.replicaSets.AddHandler(owner)
	c.pods.AddHandler(cache.Handler{OnDelete: func(obj schema.Object) {
		ref := metav1.GetControllerOf(obj)
		if ref == nil || ref.Kind != "ReplicaSet" {
			return
		}
		if rs, ok := c.replicaSets.Get(obj.GetNamespace(), ref.Name); ok {
			owner.OnDelete(rs)
		}
	}})
	return c
}

// Reconcile takes the next step for one Deployment and writes its status.
func (c *Controller) Reconcile(ctx context.Context, key string) (res controller.Result, err error) {
	ns, name := cache.SplitKey(key)
	obj, ok := c.deploys.Get(ns, name)
	if !ok {
		return controller.Done(), nil // deleted: the garbage collector removes its ReplicaSets
	}
	cached := obj.(*appsv1.Deployment)
	d := schema.Copy(cached)
	var rss []*appsv1.ReplicaSet
	var pods []*corev1.Pod
	for _, o := range c.replicaSets.ByOwner(d.UID) {
		rs := o.(*appsv1.ReplicaSet)
		if ref := metav1.GetControllerOf(rs); ref == nil || ref.UID != d.UID {
			continue
		}
		rss = append(rss, rs)
		for _, p := range c.pods.ByOwner(rs.UID) {
			pods = append(pods, p.(*corev1.Pod))
		}
	}
	log := c.d.Log.With("deployment", key)
	acts, err := Plan(d, rss, pods, c.d.Clock.Now())
	if err != nil {
		return controller.InvalidSpec(err), nil
	}
	// Status is written whatever happens to the actions below.
	defer func() {
		if serr := c.writeStatus(ctx, cached, d, acts); serr != nil && err == nil {
			err = serr
		}
	}()
	if acts.Create != nil {
		if err := c.createReplicaSet(ctx, d, acts.Create); err != nil {
			return res, err
		}
		log.Info("created replicaset", "replicaset", acts.Create.Name, "replicas", *acts.Create.Spec.Replicas, "revision", acts.Revision)
		c.d.Events.Eventf(d, corev1.EventTypeNormal, "ScalingReplicaSet", "Scaled up replica set %s to %d", acts.Create.Name, *acts.Create.Spec.Replicas)
	}
	before := map[types.UID]int32{}
	for _, rs := range rss {
		before[rs.UID] = replicasOf(rs.Spec.Replicas)
	}
	for _, rs := range acts.Updates {
		if _, uerr := c.d.Store.Update(ctx, rs); uerr != nil {
			return res, fmt.Errorf("scale replicaset %s: %w", rs.Name, uerr)
		}
		log.Info("scaled replicaset", "replicaset", rs.Name, "replicas", *rs.Spec.Replicas)
		if from, to := before[rs.UID], *rs.Spec.Replicas; from != to {
			dir := "up"
			if to < from {
				dir = "down"
			}
			c.d.Events.Eventf(d, corev1.EventTypeNormal, "ScalingReplicaSet", "Scaled %s replica set %s from %d to %d", dir, rs.Name, from, to)
		}
	}
	for _, rs := range acts.Deletes {
		if _, derr := c.d.Store.Delete(ctx, "replicasets", rs.Namespace, rs.Name, store.DeleteOptions{UID: string(rs.UID)}); derr != nil && !errors.Is(derr, store.ErrNotFound) {
			return res, fmt.Errorf("prune replicaset %s: %w", rs.Name, derr)
		}
		log.Info("pruned old replicaset", "replicaset", rs.Name, "revision", Revision(rs))
	}
	res = controller.Requeue(acts.RequeueAfter)
	if acts.Waiting != "" {
		res = controller.Waiting(acts.Waiting, RetryWaiting)
	}
	if c := condition(acts.Status.Conditions, appsv1.DeploymentProgressing); c != nil && c.Reason == ReasonProgressDeadlineExceeded &&
		!(apiequality.Semantic.DeepEqual(d.Status, acts.Status)) {
		log.Warn("rollout stalled", "reason", c.Reason, "message", c.Message)
	}
	return res, nil
}

// createReplicaSet creates rs. If the name is taken by a ReplicaSet that d
// already controls, the cache was only behind: nothing to do.
func (c *Controller) createReplicaSet(ctx context.Context, d *appsv1.Deployment, rs *appsv1.ReplicaSet) error {
	_, err := c.d.Store.Create(ctx, rs)
	if !errors.Is(err, store.ErrExists) {
		if err != nil {
			return fmt.Errorf("create replicaset %s: %w", rs.Name, err)
		}
		return nil
	}
	cur, gerr := c.d.Store.Get(ctx, "replicasets", rs.Namespace, rs.Name)
	if gerr != nil {
		return fmt.Errorf("create replicaset %s: %w", rs.Name, err)
	}
	if ref := metav1.GetControllerOf(cur); ref != nil && ref.UID == d.UID {
		return nil
	}
	return fmt.Errorf("create replicaset %s: the name is taken by an object this deployment does not control (it is collected if its owner is gone): %w", rs.Name, err)
}

// writeStatus records the revision annotation and the status, each only
// when it changed.
func (c *Controller) writeStatus(ctx context.Context, cached, d *appsv1.Deployment, acts Actions) error {
	before := schema.Object(cached)
	if acts.Revision > 0 && Revision(d) != acts.Revision {
		setRevision(d, acts.Revision)
		out, err := c.d.Store.Update(ctx, d)
		if err != nil {
			return fmt.Errorf("set revision of deployment %s: %w", d.Name, err)
		}
		d.ResourceVersion = out.GetResourceVersion()
	}
	d.Status = acts.Status
	_, err := c.d.Status.Update(ctx, before, d)
	return err
}
