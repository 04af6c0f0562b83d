package deployment

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/reconciler/cache"
	"github.com/flotilla-dev/flotilla/reconciler/controller"
	"github.com/flotilla-dev/flotilla/schema"
)

// Controller drives Deployments. Keys are "namespace/name" of Deployments.
type Controller struct {
	store store.Interface
	clock controller.Clock
	log   *slog.Logger

	deploys, replicaSets, pods *cache.Informer
}

var _ controller.Controller = (*Controller)(nil)

// New returns the Deployment controller writing to st.
func New(st store.Interface, clock controller.Clock, log *slog.Logger) *Controller {
	return &Controller{store: st, clock: clock, log: log.With("controller", "deployment")}
}

// Name is "deployment".
func (c *Controller) Name() string { return "deployment" }

// Setup enqueues a Deployment on its own changes, on changes of the
// ReplicaSets it controls, and when a pod of those goes away (Recreate
// waits for that).
func (c *Controller) Setup(ca *cache.Cache, q controller.Queue) {
	c.deploys = ca.Informer("deployments")
	c.replicaSets = ca.Informer("replicasets")
	c.pods = ca.Informer("pods")
	c.deploys.AddHandler(cache.SelfHandler(q.Add))
	owner := cache.OwnerHandler("Deployment", q.Add)
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
}

// Reconcile takes the next step for one Deployment and writes its status.
func (c *Controller) Reconcile(ctx context.Context, key string) (res controller.Result, err error) {
	ns, name := cache.SplitKey(key)
	obj, ok := c.deploys.Get(ns, name)
	if !ok {
		return res, nil // deleted: the garbage collector removes its ReplicaSets
	}
	d := schema.Copy(obj.(*appsv1.Deployment))
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
	log := c.log.With("deployment", key)
	acts, err := Plan(d, rss, pods, c.clock.Now())
	if err != nil {
		// Stalled: only a new spec can fix it; report, do not retry.
		log.Warn("invalid deployment", "err", err)
		return res, nil
	}
	// Status is written whatever happens to the actions below.
	defer func() {
		if serr := c.writeStatus(ctx, d, acts); serr != nil && err == nil {
			err = serr
		}
	}()
	if acts.Create != nil {
		if err := c.createReplicaSet(ctx, d, acts.Create); err != nil {
			return res, err
		}
		log.Info("created replicaset", "replicaset", acts.Create.Name, "replicas", *acts.Create.Spec.Replicas, "revision", acts.Revision)
	}
	for _, rs := range acts.Updates {
		if _, uerr := c.store.Update(ctx, rs); uerr != nil {
			return res, fmt.Errorf("scale replicaset %s: %w", rs.Name, uerr)
		}
		log.Info("scaled replicaset", "replicaset", rs.Name, "replicas", *rs.Spec.Replicas)
	}
	for _, rs := range acts.Deletes {
		if _, derr := c.store.Delete(ctx, "replicasets", rs.Namespace, rs.Name, store.DeleteOptions{UID: string(rs.UID)}); derr != nil && !errors.Is(derr, store.ErrNotFound) {
			return res, fmt.Errorf("prune replicaset %s: %w", rs.Name, derr)
		}
		log.Info("pruned old replicaset", "replicaset", rs.Name, "revision", Revision(rs))
	}
	res.RequeueAfter = acts.RequeueAfter
	if acts.Waiting != "" {
		log.Debug("rollout waiting", "for", acts.Waiting)
		res.RequeueAfter = 2 * time.Second
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
	_, err := c.store.Create(ctx, rs)
	if !errors.Is(err, store.ErrExists) {
		if err != nil {
			return fmt.Errorf("create replicaset %s: %w", rs.Name, err)
		}
		return nil
	}
	cur, gerr := c.store.Get(ctx, "replicasets", rs.Namespace, rs.Name)
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
func (c *Controller) writeStatus(ctx context.Context, d *appsv1.Deployment, acts Actions) error {
	if acts.Revision > 0 && Revision(d) != acts.Revision {
		setRevision(d, acts.Revision)
		out, err := c.store.Update(ctx, d)
		if err != nil {
			return fmt.Errorf("set revision of deployment %s: %w", d.Name, err)
		}
		d.ResourceVersion = out.GetResourceVersion()
	}
	if apiequality.Semantic.DeepEqual(d.Status, acts.Status) {
		return nil
	}
	d.Status = acts.Status
	if _, err := c.store.UpdateStatus(ctx, d); err != nil {
		return fmt.Errorf("update status of deployment %s: %w", d.Name, err)
	}
	return nil
}
