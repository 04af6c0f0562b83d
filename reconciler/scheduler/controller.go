package scheduler

import (
	"context"
	"errors"
	"fmt"
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

// Defaults of Config.
const (
	// DefaultSettle is how long scheduling waits at start for the known
	// nodes to be Ready.
	DefaultSettle = 10 * time.Second
	// DefaultBatchSize is how many writes (bindings, conditions) go into
	// one store transaction.
	DefaultBatchSize = 500
)

// Config tunes the scheduler. Zero values mean the defaults.
type Config struct {
	// Settle is how long binding waits, once the scheduler starts, for
	// the Nodes it knows to be Ready (and for ExpectedNodes of them), so
	// that replicas committed before the nodes came up spread over them
	// instead of all landing on the first node that is Ready. Default
	// DefaultSettle (10s); negative: bind at once. Longer gives slow nodes
	// their chance after a restart, and delays the first pods of a
	// cluster whose nodes never all come up by as much.
	Settle time.Duration
	// ExpectedNodes is how many Ready nodes end the settling early (server
	// flag --expect-nodes; `flotilla lab up --nodes N` passes N). Default
	// 0: the nodes the store knows, once there is at least one.
	ExpectedNodes int
	// BatchSize is how many writes go into one store transaction. Default
	// DefaultBatchSize (500): with fsync on, one transaction per binding
	// would cost a disk flush per pod.
	BatchSize int
	// Metrics receives the scheduling latencies; nil: none.
	Metrics *Metrics
}

// WithDefaults returns cfg with zero fields set to their defaults.
func (cfg Config) WithDefaults() Config {
	if cfg.Settle == 0 {
		cfg.Settle = DefaultSettle
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = DefaultBatchSize
	}
	return cfg
}

// Controller runs scheduling passes over the watch cache and writes
// bindings (spec.nodeName, with the pod's resourceVersion), volume node
// selections and Unschedulable conditions to the store, in transactions
// of up to Config.BatchSize writes.
type Controller struct {
	d   controller.Deps
	cfg Config

	pods, nodes              *cache.Informer
	claims, volumes, classes *cache.Informer

	mu      sync.Mutex
	assumed map[types.UID]assumption
	started time.Time // when the settling began (zero: not yet)
	settled bool
	waiting string // the settling reason last logged
}

type assumption struct {
	pod  *corev1.Pod // with NodeName set
	when time.Time
}

var (
	_ controller.Controller = (*Controller)(nil)
	_ controller.Starter    = (*Controller)(nil)
)

// New returns the scheduler. It asks for a pass when an unbound pod
// appears or changes, when a pod goes away (resources freed), when a node
// changes, and when a claim, volume or storage class changes (a claim
// bound, a volume provisioned).
func New(d controller.Deps, cfg Config) *Controller {
	d.Events = controller.OrNop(d.Events)
	c := &Controller{d: d, cfg: cfg.WithDefaults(), assumed: map[types.UID]assumption{},
		pods: d.Cache.Informer("pods"), nodes: d.Cache.Informer("nodes"),
		claims: d.Cache.Informer("persistentvolumeclaims"), volumes: d.Cache.Informer("persistentvolumes"),
		classes: d.Cache.Informer("storageclasses")}
	q := d.Queue
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
	return c
}

// Start begins the settling window: the manager calls it once the cache
// has synced. It returns at once.
func (c *Controller) Start(context.Context) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.started.IsZero() {
		c.started = c.d.Clock.Now()
	}
}

// settle reports whether binding may begin; when not, how long at most it
// still waits and why. Once settled it stays so. A cluster whose pods are
// bound already (bound > 0: a new leader after a failover, a restarted
// server) is not new: its replicas are spread, and a pod a dead node lost
// is bound at once to the nodes that are Ready, not after the dead one
// returns.
func (c *Controller) settle(now time.Time, nodes []*corev1.Node, bound int) (ok bool, wait time.Duration, why string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.settled {
		return true, 0, ""
	}
	if bound > 0 && c.cfg.Settle >= 0 {
		c.d.Log.Info("pods are bound already: not a new cluster, scheduling starts without settling", "bound", bound)
		c.settled = true
		return true, 0, ""
	}
	if c.started.IsZero() {
		c.started = now
	}
	ready := 0
	for _, n := range nodes {
		if NodeReady(n) {
			ready++
		}
	}
	left := c.cfg.Settle - now.Sub(c.started)
	switch {
	case c.cfg.Settle < 0:
	case ready > 0 && ready == len(nodes) && ready >= c.cfg.ExpectedNodes:
		c.d.Log.Info("nodes settled: scheduling starts", "ready", ready, "waited", now.Sub(c.started).Round(time.Millisecond))
	case left <= 0:
		c.d.Log.Info("settle time passed: scheduling starts with the nodes that are Ready", "ready", ready, "known", len(nodes),
			"expected", c.cfg.ExpectedNodes, "settle", c.cfg.Settle)
	default:
		why = fmt.Sprintf("%d of %d known nodes Ready (expecting %d)", ready, len(nodes), c.cfg.ExpectedNodes)
		if why != c.waiting {
			c.waiting = why
			c.d.Log.Info("scheduling waits for the nodes to settle", "ready", ready, "known", len(nodes),
				"expected", c.cfg.ExpectedNodes, "at most", left.Round(time.Millisecond))
		}
		return false, left, "nodes to settle: " + why
	}
	c.settled = true
	return true, 0, ""
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

// snapshot splits the cached pods into pending (unbound, not being deleted,
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

// Reconcile runs one scheduling pass (after the settling at start).
func (c *Controller) Reconcile(ctx context.Context, _ string) (controller.Result, error) {
	now := c.d.Clock.Now()
	pending, bound, nodes := c.snapshot(now)
	ps := passStats{start: time.Now(), pending: len(pending)}
	defer func() { c.cfg.Metrics.pass(ps) }()
	if len(pending) == 0 {
		return controller.Done(), nil
	}
	if ok, wait, why := c.settle(now, nodes, len(bound)); !ok {
		return controller.Waiting(why, wait), nil
	}
	plan := ScheduleWithStorage(pending, nodes, bound, c.storage(pending))
	res := controller.Done()
	if len(plan.Failures) > 0 || len(plan.Selections) > 0 {
		res = controller.Requeue(retryUnschedulable)
	}
	errs := c.bind(ctx, plan.Bindings, now)
	ps.unsched, ps.failedWrites = len(plan.Failures), min(len(errs), len(plan.Bindings))
	ps.bound = len(plan.Bindings) - ps.failedWrites
	for _, sel := range plan.Selections {
		if err := c.selectNode(ctx, sel); err != nil {
			errs = append(errs, err)
		}
	}
	errs = append(errs, c.markUnschedulable(ctx, plan.Failures, now)...)
	for _, b := range plan.Broken {
		c.d.Log.Error("placing a pod panicked; the pod is left out, the pass goes on", "pod", b.Pod.Namespace+"/"+b.Pod.Name,
			"panic", b.Panic, "stack", string(b.Stack))
		ref := controller.Ref{Resource: "pods", Namespace: b.Pod.Namespace, Name: b.Pod.Name}
		if _, err := c.d.Status.SetStalled(ctx, ref, controller.ReasonReconcilePanic, "the scheduler panicked placing this pod: "+b.Panic); err != nil {
			errs = append(errs, err)
		}
	}
	if len(plan.Bindings) > 0 || len(plan.Failures) > 0 || len(plan.Selections) > 0 {
		c.d.Log.Debug("scheduling pass", "pending", len(pending), "bound", len(plan.Bindings), "unschedulable", len(plan.Failures),
			"waiting for volumes", len(plan.Selections), "nodes", len(nodes))
	}
	return res, errors.Join(errs...)
}

// write is one write of a batch: the object (a pod with its binding or its
// status) and whether it is a status write.
type write struct {
	obj    schema.Object
	status bool
	what   string // for errors: "bind pod default/web-1 to node1"
}

// writeBatches writes ws in store transactions of up to BatchSize, in
// order. A write the store refuses (the pod changed or went away since
// the snapshot, or admission refused it) is skipped, not the batch: its
// error is returned (ErrConflict and ErrNotFound are not errors: the
// change's event brings another pass). done is called with each write
// that committed.
func (c *Controller) writeBatches(ctx context.Context, ws []write, done func(w write, out schema.Object)) []error {
	var errs []error
	for start := 0; start < len(ws); start += c.cfg.BatchSize {
		errs = append(errs, c.writeBatch(ctx, ws[start:min(start+c.cfg.BatchSize, len(ws))], done)...)
	}
	return errs
}

func (c *Controller) writeBatch(ctx context.Context, ws []write, done func(w write, out schema.Object)) []error {
	var errs []error
	type committed struct {
		w   write
		out schema.Object
	}
	var ok []committed
	_, err := c.d.Store.Txn(ctx, func(tx store.Tx) error {
		errs, ok = nil, nil // a retried function starts afresh
		for _, w := range ws {
			var out schema.Object
			var err error
			if w.status {
				sw, can := tx.(store.TxStatusWriter)
				if !can {
					return errors.New("the store's transactions cannot write a status")
				}
				out, err = sw.UpdateStatus(w.obj)
			} else {
				out, err = tx.Update(w.obj)
			}
			switch {
			case err == nil:
				ok = append(ok, committed{w, out})
			case errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrConflict):
			default:
				errs = append(errs, fmt.Errorf("%s: %w", w.what, err))
			}
		}
		return nil
	})
	if err != nil {
		if len(ws) > 1 && ctx.Err() == nil {
			// Too big for one transaction, or a store without them for
			// statuses: halve until it fits.
			half := len(ws) / 2
			return append(c.writeBatch(ctx, ws[:half], done), c.writeBatch(ctx, ws[half:], done)...)
		}
		return []error{fmt.Errorf("%s: %w", ws[0].what, err)}
	}
	for _, o := range ok {
		done(o.w, o.out)
	}
	return errs
}

// bind writes the bindings in batches.
func (c *Controller) bind(ctx context.Context, bs []Binding, now time.Time) []error {
	ws := make([]write, len(bs))
	for i, b := range bs {
		p := schema.Copy(b.Pod)
		p.Spec.NodeName = b.NodeName
		ws[i] = write{obj: p, what: fmt.Sprintf("bind pod %s/%s to %s", p.Namespace, p.Name, b.NodeName)}
	}
	var n int
	var stalled []*corev1.Pod
	errs := c.writeBatches(ctx, ws, func(w write, _ schema.Object) {
		p := w.obj.(*corev1.Pod)
		c.mu.Lock()
		c.assumed[p.UID] = assumption{pod: p, when: now}
		c.mu.Unlock()
		if _, ok := controller.StalledCondition(p); ok {
			stalled = append(stalled, p) // an earlier pass panicked on it
		}
		n++
		c.d.Events.Eventf(p, corev1.EventTypeNormal, "Scheduled", "Successfully assigned %s/%s to %s", p.Namespace, p.Name, p.Spec.NodeName)
		c.cfg.Metrics.boundPod(p, c.d.Clock.Now())
		if len(bs) <= logEach {
			c.d.Log.Info("bound pod", "pod", p.Namespace+"/"+p.Name, "node", p.Spec.NodeName)
		}
	})
	if len(bs) > logEach {
		c.d.Log.Info("bound pods", "count", n)
	}
	for _, p := range stalled {
		if err := c.d.Status.ClearStalled(ctx, controller.Ref{Resource: "pods", Namespace: p.Namespace, Name: p.Name}); err != nil {
			errs = append(errs, err)
		}
	}
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
		switch _, err := c.d.Store.Update(ctx, cl); {
		case err == nil:
			c.d.Log.Info("selected node for claim", "pvc", cl.Namespace+"/"+cl.Name, "node", sel.NodeName, "pod", sel.Pod.Namespace+"/"+sel.Pod.Name)
		case errors.Is(err, store.ErrNotFound):
		default:
			errs = append(errs, fmt.Errorf("select node %s for claim %s/%s: %w", sel.NodeName, cl.Namespace, cl.Name, err))
		}
	}
	return errors.Join(errs...)
}

// markUnschedulable sets PodScheduled=False/Unschedulable with the reason
// on each failed pod, only where that changes the pod's status, in batches.
func (c *Controller) markUnschedulable(ctx context.Context, fs []Failure, now time.Time) []error {
	var ws []write
	for _, f := range fs {
		if hasUnschedulable(f.Pod, f.Message) {
			continue
		}
		p := schema.Copy(f.Pod)
		setPodCondition(&p.Status, corev1.PodCondition{
			Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Reason: ReasonUnschedulable,
			Message: f.Message, LastTransitionTime: metav1.NewTime(now.Truncate(time.Second)),
		})
		if p.Status.Phase == "" {
			p.Status.Phase = corev1.PodPending
		}
		ws = append(ws, write{obj: p, status: true, what: fmt.Sprintf("mark pod %s/%s unschedulable", p.Namespace, p.Name)})
	}
	var n int
	errs := c.writeBatches(ctx, ws, func(w write, _ schema.Object) {
		p := w.obj.(*corev1.Pod)
		n++
		c.d.Events.Event(p, corev1.EventTypeWarning, "FailedScheduling", podCondition(p, corev1.PodScheduled).Message)
		if len(ws) <= logEach {
			c.d.Log.Info("pod unschedulable", "pod", p.Namespace+"/"+p.Name, "reason", podCondition(p, corev1.PodScheduled).Message)
		}
	})
	if len(ws) > logEach {
		c.d.Log.Info("pods unschedulable", "count", n, "first", fs[0].Message)
	}
	return errs
}

// logEach is how many pods a pass logs one by one; beyond, it logs a count.
const logEach = 20

func hasUnschedulable(p *corev1.Pod, msg string) bool {
	c := podCondition(p, corev1.PodScheduled)
	return c != nil && c.Status == corev1.ConditionFalse && c.Reason == ReasonUnschedulable && c.Message == msg
}

func podCondition(p *corev1.Pod, typ corev1.PodConditionType) *corev1.PodCondition {
	for i := range p.Status.Conditions {
		if p.Status.Conditions[i].Type == typ {
			return &p.Status.Conditions[i]
		}
	}
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
