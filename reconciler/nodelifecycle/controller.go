package nodelifecycle

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/reconciler/cache"
	"github.com/flotilla-dev/flotilla/reconciler/controller"
	"github.com/flotilla-dev/flotilla/schema"
)

// Controller keeps Node health. Keys are node names. It is enqueued by Node
// events, by membership events (at once, so that a failure detected by
// gossip shows in Ready within one reconcile), and by pods landing on a
// node that is not Ready.
type Controller struct {
	d                   controller.Deps
	membership          Membership // nil: heartbeat only
	cfg                 Config
	nodes, pods, leases *cache.Informer

	mu    sync.Mutex
	marks map[string]*spellMarks // by node name; only nodes not Ready
}

// spellMarks records the pods this controller marked not Ready during one
// not-Ready spell of a node, so that a pod its agent marks Ready again is
// not marked again (Plan's marked). It is memory only: after a restart a
// pod shown Ready is marked once more, and its agent, if alive, corrects
// it once more.
type spellMarks struct {
	since time.Time // Actions.NotReadySince of the spell
	pods  map[types.UID]bool
}

var (
	_ controller.Controller = (*Controller)(nil)
	_ controller.Starter    = (*Controller)(nil)
)

// New returns the node lifecycle controller. m may be nil (no gossip:
// nodes are judged by heartbeat alone); cfg zero values mean the defaults.
// It enqueues a node on its own changes (deletion included), and on a pod
// being added or changed while bound to a node that is not Ready (a pod to
// mark not Ready, a straggler to evict) or that does not exist (an orphan
// to collect; resync brings these back after a restart).
func New(d controller.Deps, m Membership, cfg Config) *Controller {
	d.Events = controller.OrNop(d.Events)
	c := &Controller{
		d: d, membership: m, cfg: cfg.WithDefaults(),
		nodes: d.Cache.Informer("nodes"), pods: d.Cache.Informer("pods"), leases: d.Cache.Informer("leases"),
		marks: map[string]*spellMarks{},
	}
	q := d.Queue
	self := func(o schema.Object) { q.Add(o.GetName()) }
	// OnDelete: a deleted node's record of marked pods is dropped.
	c.nodes.AddHandler(cache.Handler{OnAdd: self, OnUpdate: func(_, n schema.Object) { self(n) }, OnDelete: self})
	onPod := func(o schema.Object) {
		name := o.(*corev1.Pod).Spec.NodeName
		if name == "" {
			return
		}
		if n, ok := c.nodes.Get("", name); !ok || !ready(n.(*corev1.Node)) {
			q.Add(name)
		}
	}
	c.pods.AddHandler(cache.Handler{OnAdd: onPod, OnUpdate: func(_, n schema.Object) { onPod(n) }})
	// A renewed Lease of a node that is not Ready may make it Ready again.
	onLease := func(o schema.Object) {
		if o.GetNamespace() != LeaseNamespace {
			return
		}
		if n, ok := c.nodes.Get("", o.GetName()); ok && !ready(n.(*corev1.Node)) {
			q.Add(o.GetName())
		}
	}
	c.leases.AddHandler(cache.Handler{OnAdd: onLease, OnUpdate: func(_, n schema.Object) { onLease(n) }})
	return c
}

// LeaseNamespace holds the nodes' Leases (Kubernetes' kube-node-lease).
const LeaseNamespace = "kube-node-lease"

// leaseExpiry is when node name's Lease expires: its last renewal plus its
// duration (zero: it has none).
func (c *Controller) leaseExpiry(name string) time.Time {
	obj, ok := c.leases.Get(LeaseNamespace, name)
	if !ok {
		return time.Time{}
	}
	l, ok := obj.(*coordinationv1.Lease)
	if !ok || l.Spec.RenewTime == nil {
		return time.Time{}
	}
	d := 40 * time.Second
	if l.Spec.LeaseDurationSeconds != nil && *l.Spec.LeaseDurationSeconds > 0 {
		d = time.Duration(*l.Spec.LeaseDurationSeconds) * time.Second
	}
	return l.Spec.RenewTime.Add(d)
}

// Start turns membership events into keys until ctx ends or the events
// channel closes. Without membership it returns at once.
func (c *Controller) Start(ctx context.Context) {
	if c.membership == nil {
		return
	}
	ch := c.membership.Events()
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-ch:
			if !ok {
				c.d.Log.Warn("membership events closed; relying on resync")
				return
			}
			c.d.Log.Debug("membership event", "node", ev.Member.Name, "alive", ev.Member.Alive, "left", ev.Member.Left)
			c.d.Queue.Add(ev.Member.Name)
		}
	}
}

// member returns the gossip member called name, or nil.
func (c *Controller) member(name string) *Member {
	if c.membership == nil {
		return nil
	}
	for _, m := range c.membership.Members() {
		if m.Name == name {
			return &m
		}
	}
	return nil
}

// Reconcile plans one node and applies the plan: the Ready condition
// (status), then the taints (spec), then the pods' Ready conditions (and
// NodeLost marks), then the evictions. For a node that does not exist it
// collects the pods still bound to it (Orphaned).
func (c *Controller) Reconcile(ctx context.Context, name string) (controller.Result, error) {
	obj, ok := c.nodes.Get("", name)
	if !ok {
		c.forgetMarks(name)
		return controller.Result{}, c.collectOrphans(ctx, name)
	}
	node := obj.(*corev1.Node)
	member := c.member(name)
	now := c.d.Clock.Now()
	lease := c.leaseExpiry(name)
	acts := Plan(node, member, lease, nil, nil, now, c.cfg)
	if !acts.NotReady {
		c.forgetMarks(name)
	} else {
		pods := c.podsOn(name)
		acts = Plan(node, member, lease, pods, c.marked(name, acts.NotReadySince, pods), now, c.cfg)
	}
	res := controller.Requeue(acts.RequeueAfter)
	log := c.d.Log.With("node", name)

	if acts.Ready != nil {
		n := schema.Copy(node)
		setCondition(&n.Status, *acts.Ready)
		out, err := c.d.Store.UpdateStatus(ctx, n)
		if err != nil {
			return res, c.writeErr("update Ready condition of node", name, err)
		}
		node = out.(*corev1.Node)
		if acts.Ready.Status == corev1.ConditionTrue {
			log.Info("node ready again", "reason", acts.Ready.Reason)
			c.d.Events.Eventf(node, corev1.EventTypeNormal, "NodeReady", "Node %s status is now: NodeReady", name)
		} else {
			log.Warn("node not ready", "status", acts.Ready.Status, "reason", acts.Ready.Reason, "message", acts.Ready.Message)
			c.d.Events.Eventf(node, corev1.EventTypeNormal, "NodeNotReady", "Node %s status is now: NodeNotReady (%s)", name, acts.Ready.Message)
		}
	}
	if acts.SetTaints {
		n := schema.Copy(node)
		n.Spec.Taints = acts.Taints
		if _, err := c.d.Store.Update(ctx, n); err != nil {
			return res, c.writeErr("update taints of node", name, err)
		}
		log.Info("node taints updated", "taints", taintKeys(acts.Taints))
	}
	if err := c.markPods(ctx, log, name, acts); err != nil || len(acts.Evict) == 0 {
		return res, err
	}
	if !c.anyOtherReady(name) {
		// Nowhere to move the pods: evicting would only stop them. Kubernetes
		// likewise stops evicting in a full disruption.
		log.Warn("evictions held: no other node is Ready", "pods", len(acts.Evict))
		return controller.Waiting("another node to be Ready before evicting", c.cfg.PodEvictionTimeout), nil
	}
	var errs []error
	for _, p := range acts.Evict {
		_, err := c.d.Store.Delete(ctx, "pods", p.Namespace, p.Name, store.DeleteOptions{UID: string(p.UID)})
		switch {
		case err == nil:
			log.Warn("evicted pod from node that is not ready", "pod", p.Namespace+"/"+p.Name, "why", acts.Why, "timeout", c.cfg.PodEvictionTimeout)
		case errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrConflict):
			// Gone already, or replaced by a new pod of the same name
			// (its own event brings it here if it is bound to this node).
		default:
			errs = append(errs, fmt.Errorf("evict pod %s/%s from node %s: %w", p.Namespace, p.Name, name, err))
		}
	}
	return res, errors.Join(errs...)
}

// collectOrphans deletes the pods bound to node name, which the cache no
// longer has, once the store confirms that the Node is gone (the operator's
// confirmation that whatever ran there is gone). Their owners recreate them
// elsewhere.
func (c *Controller) collectOrphans(ctx context.Context, name string) error {
	orphans := Orphaned(name, c.podsOn(name))
	if len(orphans) == 0 {
		return nil
	}
	switch _, err := c.d.Store.Get(ctx, "nodes", "", name); {
	case err == nil:
		return nil // the cache is behind: the node's event brings it back
	case !errors.Is(err, store.ErrNotFound):
		return fmt.Errorf("confirm node %s is gone: %w", name, err)
	}
	var errs []error
	for _, p := range orphans {
		_, err := c.d.Store.Delete(ctx, "pods", p.Namespace, p.Name, store.DeleteOptions{UID: string(p.UID)})
		switch {
		case err == nil:
			c.d.Log.Warn("deleted pod of a deleted node", "pod", p.Namespace+"/"+p.Name, "node", name)
		case errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrConflict):
		default:
			errs = append(errs, fmt.Errorf("delete pod %s/%s of deleted node %s: %w", p.Namespace, p.Name, name, err))
		}
	}
	return errors.Join(errs...)
}

// markPods writes the pods' not-Ready conditions, and records each pod
// written in the node's spell. A pod deleted or changed meanwhile is
// skipped (a change brings its node back here through Setup's handler).
func (c *Controller) markPods(ctx context.Context, log *slog.Logger, name string, acts Actions) error {
	if len(acts.MarkNotReady) == 0 {
		return nil
	}
	var errs []error
	n := 0
	for _, p := range acts.MarkNotReady {
		_, err := c.d.Store.UpdateStatus(ctx, p)
		switch {
		case err == nil:
			n++
			c.recordMark(name, acts.NotReadySince, p.UID)
			log.Debug("pod marked not ready", "pod", p.Namespace+"/"+p.Name)
			if p.Status.Reason == ReasonNodeLost {
				log.Warn("statefulset pod kept on unreachable node until the node is deleted or reports again (no second pod of its ordinal meanwhile)",
					"pod", p.Namespace+"/"+p.Name, "confirm", "flotilla delete node "+name)
			}
		case errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrConflict):
		default:
			errs = append(errs, fmt.Errorf("mark pod %s/%s not ready (node %s not ready): %w", p.Namespace, p.Name, name, err))
		}
	}
	if n > 0 {
		log.Warn("pods marked not ready", "pods", n, "why", acts.Why)
	}
	return errors.Join(errs...)
}

// marked returns the UIDs among pods that were marked during the node's
// spell that began at since, forgetting an older spell's record and the
// pods no longer bound to the node.
func (c *Controller) marked(name string, since time.Time, pods []*corev1.Pod) map[types.UID]bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := c.marks[name]
	if m == nil || !m.since.Equal(since) {
		m = &spellMarks{since: since, pods: map[types.UID]bool{}}
		c.marks[name] = m
	}
	kept := make(map[types.UID]bool, len(m.pods))
	out := make(map[types.UID]bool, len(m.pods))
	for _, p := range pods {
		if m.pods[p.UID] {
			kept[p.UID], out[p.UID] = true, true
		}
	}
	m.pods = kept
	return out
}

// recordMark records pod uid as marked during the node's spell since.
func (c *Controller) recordMark(name string, since time.Time, uid types.UID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if m := c.marks[name]; m != nil && m.since.Equal(since) {
		m.pods[uid] = true
	}
}

// forgetMarks drops the record of a node that is Ready or gone.
func (c *Controller) forgetMarks(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.marks, name)
}

// writeErr wraps a store write error; a node deleted meanwhile is not one.
func (c *Controller) writeErr(what, name string, err error) error {
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	// ErrConflict: the agent wrote meanwhile; its event or the back-off
	// brings another pass on the current state.
	return fmt.Errorf("%s %s: %w", what, name, err)
}

// podsOn returns the cached pods bound to node (a scan of every pod: it
// runs only for a node that is not Ready).
func (c *Controller) podsOn(node string) []*corev1.Pod {
	var out []*corev1.Pod
	for _, o := range c.pods.List("") {
		if p := o.(*corev1.Pod); p.Spec.NodeName == node {
			out = append(out, p)
		}
	}
	return out
}

// anyOtherReady reports whether a node other than name is Ready.
func (c *Controller) anyOtherReady(name string) bool {
	for _, o := range c.nodes.List("") {
		if n := o.(*corev1.Node); n.Name != name && ready(n) {
			return true
		}
	}
	return false
}

func ready(n *corev1.Node) bool {
	c := readyCondition(n)
	return c != nil && c.Status == corev1.ConditionTrue
}

func setCondition(st *corev1.NodeStatus, c corev1.NodeCondition) {
	for i := range st.Conditions {
		if st.Conditions[i].Type == c.Type {
			st.Conditions[i] = c
			return
		}
	}
	st.Conditions = append(st.Conditions, c)
}

func taintKeys(ts []corev1.Taint) []string {
	out := make([]string, 0, len(ts))
	for _, t := range ts {
		out = append(out, t.Key+":"+string(t.Effect))
	}
	return out
}
