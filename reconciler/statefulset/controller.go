package statefulset

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"

	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/reconciler/cache"
	"github.com/flotilla-dev/flotilla/reconciler/controller"
	"github.com/flotilla-dev/flotilla/schema"
)

// Controller drives StatefulSets. Keys are "namespace/name" of StatefulSets.
type Controller struct {
	store store.Interface
	clock controller.Clock
	log   *slog.Logger

	sets, pods, claims *cache.Informer
}

var _ controller.Controller = (*Controller)(nil)

// New returns the StatefulSet controller writing to st.
func New(st store.Interface, clock controller.Clock, log *slog.Logger) *Controller {
	return &Controller{store: st, clock: clock, log: log.With("controller", "statefulset")}
}

// Name is "statefulset".
func (c *Controller) Name() string { return "statefulset" }

// Setup enqueues a StatefulSet on its own changes and on any change or
// deletion of a pod whose controller is a StatefulSet of that name (its
// own, or a previous set's pod still holding one of its names).
func (c *Controller) Setup(ca *cache.Cache, q controller.Queue) {
	c.sets = ca.Informer("statefulsets")
	c.pods = ca.Informer("pods")
	c.claims = ca.Informer("persistentvolumeclaims")
	c.sets.AddHandler(cache.SelfHandler(q.Add))
	owner := cache.OwnerHandler("StatefulSet", q.Add)
	c.pods.AddHandler(owner)
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
		return res, nil // deleted: the garbage collector removes its pods; claims stay
	}
	set := schema.Copy(obj.(*appsv1.StatefulSet))
	log := c.log.With("statefulset", key)
	acts, err := Plan(set, c.podsOf(set), c.claimsIn(ns), c.clock.Now())
	if err != nil {
		// Stalled: only a new spec can fix it; report, do not retry.
		log.Warn("invalid statefulset", "err", err)
		return res, nil
	}
	defer func() {
		if serr := c.writeStatus(ctx, set, acts.Status); serr != nil && err == nil {
			err = serr
		}
	}()
	res.RequeueAfter = acts.RequeueAfter
	if acts.Waiting != "" {
		log.Debug("waiting", "for", acts.Waiting)
	}
	for _, cl := range acts.CreateClaims {
		_, err := c.store.Create(ctx, cl)
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
		_, err := c.store.Create(ctx, p)
		switch {
		case errors.Is(err, store.ErrExists):
			// The name is still held (the cache is behind): its event
			// brings another pass.
			log.Debug("pod name still taken", "pod", p.Name)
		case err != nil:
			return res, fmt.Errorf("create pod %s: %w", p.Name, err)
		default:
			log.Info("created pod", "pod", p.Name, "revision", p.Labels[LabelRevision])
		}
	}
	for _, d := range acts.Delete {
		_, err := c.store.Delete(ctx, "pods", d.Pod.Namespace, d.Pod.Name, store.DeleteOptions{UID: string(d.Pod.UID)})
		switch {
		case errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrConflict):
			// Gone already, or replaced (the cache is behind).
		case err != nil:
			return res, fmt.Errorf("delete pod %s: %w", d.Pod.Name, err)
		default:
			log.Info("deleted pod", "pod", d.Pod.Name, "why", d.Why)
		}
	}
	for _, cl := range acts.UpdateClaims {
		if _, err := c.store.Update(ctx, cl); err != nil && !errors.Is(err, store.ErrNotFound) {
			return res, fmt.Errorf("set owners of claim %s (persistentVolumeClaimRetentionPolicy.whenDeleted): %w", cl.Name, err)
		}
	}
	for _, cl := range acts.DeleteClaims {
		_, err := c.store.Delete(ctx, "persistentvolumeclaims", cl.Namespace, cl.Name, store.DeleteOptions{UID: string(cl.UID)})
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
// its names in range (shared: Plan does not change them).
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
	for ord := start; ord < start+replicas; ord++ {
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

func (c *Controller) writeStatus(ctx context.Context, set *appsv1.StatefulSet, st appsv1.StatefulSetStatus) error {
	if apiequality.Semantic.DeepEqual(set.Status, st) {
		return nil
	}
	set.Status = st
	if _, err := c.store.UpdateStatus(ctx, set); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return nil
		}
		return fmt.Errorf("update status of statefulset %s: %w", set.Name, err)
	}
	return nil
}
