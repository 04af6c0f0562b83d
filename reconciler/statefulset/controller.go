package statefulset

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

// Controller drives StatefulSets. Keys are "namespace/name" of StatefulSets.
type Controller struct {
	d                  controller.Deps
	sets, pods, claims *cache.Informer
}

var _ controller.Controller = (*Controller)(nil)

// New returns the StatefulSet controller. It enqueues a StatefulSet on its
// own changes and on any change or deletion of a pod whose controller is a
// StatefulSet of that name (its own, or a previous set's pod still holding
// one of its names).
func New(d controller.Deps) *Controller {
	d.Events = controller.OrNop(d.Events)
	c := &Controller{d: d, sets: d.Cache.Informer("statefulsets"), pods: d.Cache.Informer("pods"), claims: d.Cache.Informer("persistentvolumeclaims")}
	c.sets.AddHandler(cache.SelfHandler(d.Queue.Add))
	c.pods.AddHandler(cache.OwnerHandler("StatefulSet", d.Queue.Add))
	return c
}

// Reconcile takes the next step for one StatefulSet and writes its status.
//
// Pod names are fixed, so a lagging cache cannot make a duplicate: a
// create under a name the store already holds fails (ErrExists) and waits
// for the cache to catch up, and deletes are conditional on the pod's UID.
func (c *Controller) Reconcile(ctx context.Context, key string) (res controller.Result, err error) {
	ns, name := cache.SplitKey(key)
	obj, ok := c.sets.Get(ns, name)
	if !ok {
		return controller.Done(), nil // deleted: the garbage collector removes its pods; claims stay
	}
	cached := obj.(*appsv1.StatefulSet)
	set := schema.Copy(cached)
	log := c.d.Log.With("statefulset", key)
	acts, err := Plan(set, c.podsOf(set), c.claimsIn(ns), c.d.Clock.Now())
	if err != nil {
		return controller.InvalidSpec(err), nil
	}
	defer func() {
		set.Status = acts.Status
		if _, serr := c.d.Status.Update(ctx, cached, set); serr != nil && err == nil {
			err = serr
		}
	}()
	res = controller.Requeue(acts.RequeueAfter)
	if acts.Waiting != "" {
		res = controller.Waiting(acts.Waiting, acts.RequeueAfter)
	}
	for _, cl := range acts.CreateClaims {
		_, err := c.d.Store.Create(ctx, cl)
		switch {
		case errors.Is(err, store.ErrExists):
			// Made already (the cache is behind) or by someone else: used as it is.
		case err != nil:
			return res, fmt.Errorf("create claim %s: %w", cl.Name, err)
		default:
			log.Info("created claim", "claim", cl.Name)
		}
	}
	for _, p := range acts.Create {
		_, err := c.d.Store.Create(ctx, p)
		switch {
		case errors.Is(err, store.ErrExists):
			// The name is still held (the cache is behind): its event
			// brings another pass.
			log.Debug("pod name still taken", "pod", p.Name)
		case err != nil:
			c.d.Events.Eventf(set, corev1.EventTypeWarning, "FailedCreate", "create Pod %s in StatefulSet %s failed error: %v", p.Name, set.Name, err)
			return res, fmt.Errorf("create pod %s: %w", p.Name, err)
		default:
			log.Info("created pod", "pod", p.Name, "revision", p.Labels[LabelRevision])
			c.d.Events.Eventf(set, corev1.EventTypeNormal, "SuccessfulCreate", "create Pod %s in StatefulSet %s successful", p.Name, set.Name)
		}
	}
	for _, d := range acts.Delete {
		_, err := c.d.Store.Delete(ctx, "pods", d.Pod.Namespace, d.Pod.Name, store.DeleteOptions{UID: string(d.Pod.UID)})
		switch {
		case errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrConflict):
			// Gone already, or replaced (the cache is behind).
		case err != nil:
			return res, fmt.Errorf("delete pod %s: %w", d.Pod.Name, err)
		default:
			log.Info("deleted pod", "pod", d.Pod.Name, "why", d.Why)
			c.d.Events.Eventf(set, corev1.EventTypeNormal, "SuccessfulDelete", "delete Pod %s in StatefulSet %s successful", d.Pod.Name, set.Name)
		}
	}
	for _, cl := range acts.UpdateClaims {
		if _, err := c.d.Store.Update(ctx, cl); err != nil && !errors.Is(err, store.ErrNotFound) {
			return res, fmt.Errorf("set owners of claim %s (persistentVolumeClaimRetentionPolicy.whenDeleted): %w", cl.Name, err)
		}
	}
	for _, cl := range acts.DeleteClaims {
		_, err := c.d.Store.Delete(ctx, "persistentvolumeclaims", cl.Namespace, cl.Name, store.DeleteOptions{UID: string(cl.UID)})
		switch {
		case errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrConflict):
		case err != nil:
			return res, fmt.Errorf("delete claim %s (persistentVolumeClaimRetentionPolicy.whenScaled: Delete): %w", cl.Name, err)
		default:
			log.Info("deleted claim of a scaled-down pod (whenScaled: Delete)", "claim", cl.Name)
		}
	}
	return res, nil
}

// podsOf returns the cached pods set controls plus any pod holding one of
// its names that Plan may look at (shared: Plan does not change them).
// Plan visits the ordinals in range up to the first missing one, or
// BurstReplicas missing ones, so only that many names are looked up,
// whatever spec.replicas says.
func (c *Controller) podsOf(set *appsv1.StatefulSet) []*corev1.Pod {
	var out []*corev1.Pod
	seen := map[string]bool{}
	for _, o := range c.pods.ByOwner(set.UID) {
		p := o.(*corev1.Pod)
		if controlledBy(p, set) {
			out = append(out, p)
			seen[p.Name] = true
		}
	}
	replicas, start := 1, 0
	if set.Spec.Replicas != nil {
		replicas = int(*set.Spec.Replicas)
	}
	if set.Spec.Ordinals != nil {
		start = int(set.Spec.Ordinals.Start)
	}
	for ord := start; ord < start+min(replicas, len(out)+BurstReplicas+1); ord++ {
		name := PodName(set, ord)
		if seen[name] {
			continue
		}
		if o, ok := c.pods.Get(set.Namespace, name); ok {
			out = append(out, o.(*corev1.Pod))
		}
	}
	return out
}

// claimsIn returns the cached claims of namespace.
func (c *Controller) claimsIn(ns string) []*corev1.PersistentVolumeClaim {
	objs := c.claims.List(ns)
	out := make([]*corev1.PersistentVolumeClaim, 0, len(objs))
	for _, o := range objs {
		out = append(out, o.(*corev1.PersistentVolumeClaim))
	}
	return out
}
