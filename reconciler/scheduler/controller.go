package scheduler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/reconciler/cache"
	"github.com/flotilla-dev/flotilla/reconciler/controller"
	"github.com/flotilla-dev/flotilla/schema"
	"github.com/flotilla-dev/flotilla/volumes/pvbinding"
)

// passKey is the one key the scheduler's queue holds: every relevant event
// asks for a scheduling pass, and repeated asks merge into one.
const passKey = "pass"

// ReasonUnschedulable is the PodScheduled=False reason of a pod that fits nowhere.
const ReasonUnschedulable = corev1.PodReasonUnschedulable

// assumeTTL is how long a binding written but not yet seen in the cache
// keeps its resources reserved.
const assumeTTL = 30 * time.Second

// retryUnschedulable is how often pods that fit nowhere are retried even
// without an event.
const retryUnschedulable = 10 * time.Second

// Controller runs scheduling passes over the watch cache and writes
// bindings (spec.nodeName, with the pod's resourceVersion) and Unschedulable
// conditions to the store.
type Controller struct {
	store store.Interface
	clock controller.Clock
	log   *slog.Logger

	pods, nodes              *cache.Informer
	claims, volumes, classes *cache.Informer

	mu      sync.Mutex
	assumed map[types.UID]assumption
}

type assumption struct {
	pod  *corev1.Pod // with NodeName set
	when time.Time
}

var _ controller.Controller = (*Controller)(nil)

// New returns the scheduler controller writing to st.
func New(st store.Interface, clock controller.Clock, log *slog.Logger) *Controller {
	return &Controller{store: st, clock: clock, log: log.With("controller", "scheduler"), assumed: map[types.UID]assumption{}}
}

// Name is "scheduler".
func (c *Controller) Name() string { return "scheduler" }

// Setup asks for a pass when an unbound pod appears or changes, when a pod
// goes away (resources freed), when a node changes, and when a claim,
// volume or storage class changes (a claim bound, a volume provisioned).
func (c *Controller) Setup(ca *cache.Cache, q controller.Queue) {
	c.pods = ca.Informer("pods")
	c.nodes = ca.Informer("nodes")
	c.claims = ca.Informer("persistentvolumeclaims")
	c.volumes = ca.Informer("persistentvolumes")
	c.classes = ca.Informer("storageclasses")
	pass := func(schema.Object) { q.Add(passKey) }
	c.pods.AddHandler(cache.Handler{
		OnAdd: func(o schema.Object) {
			if o.(*corev1.Pod).Spec.NodeName == "" {
				q.Add(passKey)
			}
		},
		OnUpdate: func(old, n schema.Object) {
			if n.(*corev1.Pod).Spec.NodeName == "" || isDone(n.(*corev1.Pod)) != isDone(old.(*corev1.Pod)) {
				q.Add(passKey)
			}
		},
		OnDelete: pass,
	})
	c.nodes.AddHandler(cache.Handler{OnAdd: pass, OnUpdate: func(_, n schema.Object) { pass(n) }, OnDelete: pass})
	for _, inf := range []*cache.Informer{c.claims, c.volumes, c.classes} {
		inf.AddHandler(cache.Handler{OnAdd: pass, OnUpdate: func(old, n schema.Object) {
			if old.GetResourceVersion() != n.GetResourceVersion() {
				pass(n)
			}
		}, OnDelete: pass})
	}
}

// storage is the cached persistent storage, when a pending pod has a
// claim (nil otherwise: most passes need none).
func (c *Controller) storage(pending []*corev1.Pod) *Storage {
	need := false
	for _, p := range pending {
		for i := range p.Spec.Volumes {
			if p.Spec.Volumes[i].PersistentVolumeClaim != nil {
				need = true
			}
		}
	}
	if !need {
		return nil
	}
	st := &Storage{Claims: map[string]*corev1.PersistentVolumeClaim{}, Volumes: map[string]*corev1.PersistentVolume{}}
	for _, o := range c.claims.List("") {
		st.Claims[cache.Key(o)] = o.(*corev1.PersistentVolumeClaim)
	}
	for _, o := range c.volumes.List("") {
		st.Volumes[o.GetName()] = o.(*corev1.PersistentVolume)
	}
	for _, o := range c.classes.List("") {
		st.Classes = append(st.Classes, o.(*storagev1.StorageClass))
	}
	st.Classes = pvbinding.WithBuiltin(st.Classes) // the binder keeps it
	return st
}

func isDone(p *corev1.Pod) bool {
	return p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed
}

// Snapshot splits the cached pods into pending (unbound, not being deleted,
// oldest first) and bound, adding the bindings written but not yet seen.
func (c *Controller) snapshot(now time.Time) (pending, bound []*corev1.Pod, nodes []*corev1.Node) {
	c.mu.Lock()
	defer c.mu.Unlock()
	seen := map[types.UID]bool{}
	for _, o := range c.pods.List("") {
		p := o.(*corev1.Pod)
		seen[p.UID] = true
		if p.Spec.NodeName != "" {
			delete(c.assumed, p.UID)
			bound = append(bound, p)
			continue
		}
		if a, ok := c.assumed[p.UID]; ok && now.Sub(a.when) < assumeTTL {
			bound = append(bound, a.pod)
			continue
		}
		delete(c.assumed, p.UID)
		if p.DeletionTimestamp == nil && !isDone(p) {
			pending = append(pending, p)
		}
	}
	for uid := range c.assumed {
		if !seen[uid] {
			delete(c.assumed, uid)
		}
	}
	sort.Slice(pending, func(i, j int) bool {
		a, b := pending[i], pending[j]
		if !a.CreationTimestamp.Equal(&b.CreationTimestamp) {
			return a.CreationTimestamp.Before(&b.CreationTimestamp)
		}
		if a.Namespace != b.Namespace {
			return a.Namespace < b.Namespace
		}
		return a.Name < b.Name
	})
	for _, o := range c.nodes.List("") {
		nodes = append(nodes, o.(*corev1.Node))
	}
	sort.Slice(nodes, func(i, j int) bool { return nodes[i].Name < nodes[j].Name })
	return pending, bound, nodes
}

// Reconcile runs one scheduling pass.
func (c *Controller) Reconcile(ctx context.Context, _ string) (controller.Result, error) {
	now := c.clock.Now()
	pending, bound, nodes := c.snapshot(now)
	if len(pending) == 0 {
		return controller.Result{}, nil
	}
	plan := ScheduleWithStorage(pending, nodes, bound, c.storage(pending))
	var res controller.Result
	if len(plan.Failures) > 0 || len(plan.Selections) > 0 {
		res.RequeueAfter = retryUnschedulable
	}
	errs := c.bind(ctx, plan.Bindings, now)
	for _, sel := range plan.Selections {
		if err := c.selectNode(ctx, sel); err != nil {
			errs = append(errs, err)
		}
	}
	for _, f := range plan.Failures {
		if err := c.markUnschedulable(ctx, f, now); err != nil {
			errs = append(errs, err)
		}
	}
	if len(plan.Bindings) > 0 || len(plan.Failures) > 0 || len(plan.Selections) > 0 {
		c.log.Debug("scheduling pass", "pending", len(pending), "bound", len(plan.Bindings), "unschedulable", len(plan.Failures),
			"waiting for volumes", len(plan.Selections), "nodes", len(nodes))
	}
	return res, errors.Join(errs...)
}

// bind writes the bindings, a few at a time.
func (c *Controller) bind(ctx context.Context, bs []Binding, now time.Time) []error {
	const parallel = 8
	sem := make(chan struct{}, parallel)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	for _, b := range bs {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			p := schema.Copy(b.Pod)
			p.Spec.NodeName = b.NodeName
			_, err := c.store.Update(ctx, p)
			switch {
			case err == nil:
				c.mu.Lock()
				c.assumed[p.UID] = assumption{pod: p, when: now}
				c.mu.Unlock()
				c.log.Info("bound pod", "pod", p.Namespace+"/"+p.Name, "node", b.NodeName)
			case errors.Is(err, store.ErrNotFound):
			default:
				// ErrConflict: the pod changed since the snapshot; the
				// change's event brings another pass.
				mu.Lock()
				errs = append(errs, fmt.Errorf("bind pod %s/%s to %s: %w", p.Namespace, p.Name, b.NodeName, err))
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return errs
}

// selectNode records the node chosen for a pod on its unbound claims
// (volume.kubernetes.io/selected-node), where the binder binds or
// provisions their volumes; the pod is bound by a later pass.
func (c *Controller) selectNode(ctx context.Context, sel VolumeSelection) error {
	var errs []error
	for _, claim := range sel.Claims {
		if claim.Annotations[pvbinding.AnnSelectedNode] == sel.NodeName {
			continue
		}
		cl := schema.Copy(claim)
		if cl.Annotations == nil {
			cl.Annotations = map[string]string{}
		}
		cl.Annotations[pvbinding.AnnSelectedNode] = sel.NodeName
		switch _, err := c.store.Update(ctx, cl); {
		case err == nil:
			c.log.Info("selected node for claim", "pvc", cl.Namespace+"/"+cl.Name, "node", sel.NodeName, "pod", sel.Pod.Namespace+"/"+sel.Pod.Name)
		case errors.Is(err, store.ErrNotFound):
		default:
			errs = append(errs, fmt.Errorf("select node %s for claim %s/%s: %w", sel.NodeName, cl.Namespace, cl.Name, err))
		}
	}
	return errors.Join(errs...)
}

// markUnschedulable sets PodScheduled=False/Unschedulable with the reason,
// only when that changes the pod's status.
func (c *Controller) markUnschedulable(ctx context.Context, f Failure, now time.Time) error {
	for _, cond := range f.Pod.Status.Conditions {
		if cond.Type == corev1.PodScheduled && cond.Status == corev1.ConditionFalse && cond.Reason == ReasonUnschedulable && cond.Message == f.Message {
			return nil
		}
	}
	p := schema.Copy(f.Pod)
	setPodCondition(&p.Status, corev1.PodCondition{
		Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Reason: ReasonUnschedulable,
		Message: f.Message, LastTransitionTime: metav1.NewTime(now.Truncate(time.Second)),
	})
	if p.Status.Phase == "" {
		p.Status.Phase = corev1.PodPending
	}
	if _, err := c.store.UpdateStatus(ctx, p); err != nil && !errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("mark pod %s/%s unschedulable: %w", p.Namespace, p.Name, err)
	}
	c.log.Info("pod unschedulable", "pod", p.Namespace+"/"+p.Name, "reason", f.Message)
	return nil
}

func setPodCondition(st *corev1.PodStatus, c corev1.PodCondition) {
	for i := range st.Conditions {
		if st.Conditions[i].Type == c.Type {
			if st.Conditions[i].Status == c.Status {
				c.LastTransitionTime = st.Conditions[i].LastTransitionTime
			}
			st.Conditions[i] = c
			return
		}
	}
	st.Conditions = append(st.Conditions, c)
}
