// Package volumebinding is the PersistentVolume controller: it binds
// each claim to the smallest volume that satisfies it, provisions local
// volumes for claims of the flotilla.dev/local-path class once the
// scheduler has selected a node, keeps volumes' and claims' phases, and
// reclaims the volumes of deleted claims (Retain keeps them Released,
// Delete deletes them). It creates the built-in default StorageClass
// "local" when it is missing. The rules are pure, in volumes/pvbinding;
// this package is the edge over the watch cache and the store, and
// AdmitGit keeps bindings across Git commits.
package volumebinding

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/reconciler/cache"
	"github.com/flotilla-dev/flotilla/reconciler/controller"
	"github.com/flotilla-dev/flotilla/schema"
	"github.com/flotilla-dev/flotilla/volumes/pvbinding"
)

// Config configures the controller.
type Config struct {
	// LocalVolumeRoot is where provisioned local volumes live on every
	// node: ROOT/NODE/pvc-<claim UID> (pvbinding.LocalPath), an absolute
	// path (server flag --local-volume-root). Default
	// /var/lib/flotilla/volumes. Nodes sharing one filesystem (flotilla
	// lab) still get distinct directories, as the node's name is in the
	// path. Changing it leaves existing volumes where they are.
	LocalVolumeRoot string
}

// Validate checks the configuration; errors name the server flag.
func (c Config) Validate() error {
	if c.LocalVolumeRoot != "" && !filepath.IsAbs(c.LocalVolumeRoot) {
		return fmt.Errorf("--local-volume-root %q: want an absolute path", c.LocalVolumeRoot)
	}
	return nil
}

// Queue keys: a claim, a volume, or the built-in class.
const (
	claimPrefix  = "pvc:"
	volumePrefix = "pv:"
	classKey     = "class:" + pvbinding.DefaultClassName
)

// retryInUse is how often a volume waiting for the pods of its deleted
// claim to end is looked at again, besides the pods' own events.
const retryInUse = 10 * time.Second

// Controller binds claims and reclaims volumes.
type Controller struct {
	d    controller.Deps
	root string

	claims, volumes, classes, nodes, pods *cache.Informer

	mu    sync.Mutex
	noted map[string]string // claim or volume key → the state last logged
}

var _ controller.Controller = (*Controller)(nil)

// Subject maps a key to the claim or volume it names (the built-in
// class's key names the StorageClass "local").
func Subject(key string) (controller.Ref, bool) {
	switch {
	case strings.HasPrefix(key, claimPrefix):
		ns, name := cache.SplitKey(key[len(claimPrefix):])
		return controller.Ref{Resource: "persistentvolumeclaims", Namespace: ns, Name: name}, name != ""
	case strings.HasPrefix(key, volumePrefix):
		return controller.Ref{Resource: "persistentvolumes", Name: key[len(volumePrefix):]}, len(key) > len(volumePrefix)
	case key == classKey:
		return controller.Ref{Resource: "storageclasses", Name: pvbinding.DefaultClassName}, true
	}
	return controller.Ref{}, false
}

// New returns the controller. It enqueues claims and volumes as they
// change, the claims waiting for a volume when a volume becomes free or a
// class changes, the released volumes when a pod using a claim ends, and
// the built-in class once at start and whenever it is deleted.
func New(d controller.Deps, cfg Config) *Controller {
	root := cfg.LocalVolumeRoot
	if root == "" {
		root = pvbinding.DefaultLocalVolumeRoot
	}
	c := &Controller{d: d, root: root, noted: map[string]string{},
		claims: d.Cache.Informer("persistentvolumeclaims"), volumes: d.Cache.Informer("persistentvolumes"),
		classes: d.Cache.Informer("storageclasses"), nodes: d.Cache.Informer("nodes"), pods: d.Cache.Informer("pods")}
	q := d.Queue
	q.Add(classKey)
	c.claims.AddHandler(cache.Handler{
		OnAdd:    func(o schema.Object) { q.Add(claimPrefix + cache.Key(o)) },
		OnUpdate: func(_, o schema.Object) { q.Add(claimPrefix + cache.Key(o)) },
		OnDelete: func(o schema.Object) {
			pvc := o.(*corev1.PersistentVolumeClaim)
			c.forget(claimPrefix + cache.Key(o))
			if pvc.Spec.VolumeName != "" {
				q.Add(volumePrefix + pvc.Spec.VolumeName)
			}
			for _, v := range c.volumes.List("") {
				if ref := v.(*corev1.PersistentVolume).Spec.ClaimRef; ref != nil && ref.Namespace == pvc.Namespace && ref.Name == pvc.Name {
					q.Add(volumePrefix + v.GetName())
				}
			}
		},
	})
	c.volumes.AddHandler(cache.Handler{
		OnAdd: func(o schema.Object) { c.volumeChanged(nil, o.(*corev1.PersistentVolume)) },
		OnUpdate: func(old, o schema.Object) {
			c.volumeChanged(old.(*corev1.PersistentVolume), o.(*corev1.PersistentVolume))
		},
		OnDelete: func(o schema.Object) {
			c.forget(volumePrefix + o.GetName())
			if ref := o.(*corev1.PersistentVolume).Spec.ClaimRef; ref != nil {
				q.Add(claimPrefix + ref.Namespace + "/" + ref.Name)
			}
		},
	})
	c.classes.AddHandler(cache.Handler{
		OnAdd: func(schema.Object) { c.wakeUnbound() },
		OnUpdate: func(old, o schema.Object) {
			if old.GetResourceVersion() != o.GetResourceVersion() {
				c.wakeUnbound()
			}
		},
		OnDelete: func(o schema.Object) {
			if o.GetName() == pvbinding.DefaultClassName {
				q.Add(classKey)
			}
			c.wakeUnbound()
		},
	})
	podDone := func(p *corev1.Pod) {
		for i := range p.Spec.Volumes {
			if p.Spec.Volumes[i].PersistentVolumeClaim != nil {
				c.wakeReleased()
				return
			}
		}
	}
	c.pods.AddHandler(cache.Handler{
		OnUpdate: func(old, o schema.Object) {
			if p := o.(*corev1.Pod); finished(p) && !finished(old.(*corev1.Pod)) {
				podDone(p)
			}
		},
		OnDelete: func(o schema.Object) { podDone(o.(*corev1.Pod)) },
	})
	return c
}

func finished(p *corev1.Pod) bool {
	return p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed
}

// volumeChanged enqueues the volume and its claim; a volume that became
// free may serve a waiting claim.
func (c *Controller) volumeChanged(old, pv *corev1.PersistentVolume) {
	c.d.Queue.Add(volumePrefix + pv.Name)
	if ref := pv.Spec.ClaimRef; ref != nil {
		c.d.Queue.Add(claimPrefix + ref.Namespace + "/" + ref.Name)
	}
	if pv.Spec.ClaimRef == nil && (old == nil || old.ResourceVersion != pv.ResourceVersion) {
		c.wakeUnbound()
	}
}

// wakeUnbound enqueues the claims without a volume.
func (c *Controller) wakeUnbound() {
	for _, o := range c.claims.List("") {
		if o.(*corev1.PersistentVolumeClaim).Spec.VolumeName == "" {
			c.d.Queue.Add(claimPrefix + cache.Key(o))
		}
	}
}

// wakeReleased enqueues the Released volumes.
func (c *Controller) wakeReleased() {
	for _, o := range c.volumes.List("") {
		if o.(*corev1.PersistentVolume).Status.Phase == corev1.VolumeReleased {
			c.d.Queue.Add(volumePrefix + o.GetName())
		}
	}
}

// Reconcile handles one claim, volume, or the built-in class.
func (c *Controller) Reconcile(ctx context.Context, key string) (controller.Result, error) {
	switch {
	case key == classKey:
		// Looked at again now and then: an informer that re-lists after a
		// dropped watch never hears of a class created and deleted in
		// between, so its delete alone cannot be relied on.
		return controller.Result{Outcome: controller.OutcomeRequeue, After: classRecheck}, c.ensureBuiltinClass(ctx)
	case len(key) > len(claimPrefix) && key[:len(claimPrefix)] == claimPrefix:
		ns, name := cache.SplitKey(key[len(claimPrefix):])
		return c.syncClaim(ctx, ns, name)
	case len(key) > len(volumePrefix) && key[:len(volumePrefix)] == volumePrefix:
		return c.syncVolume(ctx, key[len(volumePrefix):])
	}
	return controller.Result{}, nil
}

// classRecheck is how often the built-in class is looked for without an
// event (one store read).
const classRecheck = 10 * time.Second

// ensureBuiltinClass creates the class "local" when it is missing. It is
// not Git's (no managed-by annotation), so a sync never prunes it.
func (c *Controller) ensureBuiltinClass(ctx context.Context) error {
	_, err := c.d.Store.Get(ctx, "storageclasses", "", pvbinding.DefaultClassName)
	if !errors.Is(err, store.ErrNotFound) {
		return err
	}
	if _, err := c.d.Store.Create(ctx, pvbinding.BuiltinClass()); err != nil && !errors.Is(err, store.ErrExists) {
		return fmt.Errorf("create the default storage class %s: %w", pvbinding.DefaultClassName, err)
	}
	c.d.Log.Info("created the default storage class", "storageclass", pvbinding.DefaultClassName, "provisioner", pvbinding.LocalProvisioner, "root", c.root)
	return nil
}

// ReasonInvalidClaim is the Stalled reason of a claim that asks for no
// storage, a size that is not positive, or no access mode.
const ReasonInvalidClaim = "InvalidClaim"

// validClaim says why an unbound claim cannot be bound ("" when it can).
func validClaim(claim *corev1.PersistentVolumeClaim) string {
	if claim.Spec.VolumeName != "" {
		return "" // bound or pre-bound: the volume decides
	}
	if len(claim.Spec.AccessModes) == 0 {
		return "spec.accessModes is required"
	}
	q, ok := claim.Spec.Resources.Requests[corev1.ResourceStorage]
	switch {
	case !ok:
		return "spec.resources.requests.storage is required"
	case q.Sign() <= 0:
		return fmt.Sprintf("spec.resources.requests.storage is %s, want more than 0", q.String())
	}
	return ""
}

// syncClaim binds, provisions for, or explains a claim.
func (c *Controller) syncClaim(ctx context.Context, ns, name string) (controller.Result, error) {
	obj, err := c.d.Store.Get(ctx, "persistentvolumeclaims", ns, name)
	if errors.Is(err, store.ErrNotFound) {
		return controller.Done(), nil
	} else if err != nil {
		return controller.Done(), err
	}
	claim := obj.(*corev1.PersistentVolumeClaim)
	if why := validClaim(claim); why != "" {
		return controller.Stalled(ReasonInvalidClaim, why), nil
	}
	return controller.Done(), c.bindClaim(ctx, claim)
}

// bindClaim binds, provisions for, or explains a valid claim.
func (c *Controller) bindClaim(ctx context.Context, claim *corev1.PersistentVolumeClaim) error {
	ns, name := claim.Namespace, claim.Name
	in := pvbinding.ClaimInput{Claim: claim, LocalVolumeRoot: c.root}
	for _, o := range c.volumes.List("") {
		in.Volumes = append(in.Volumes, o.(*corev1.PersistentVolume))
	}
	for _, o := range c.classes.List("") {
		in.Classes = append(in.Classes, o.(*storagev1.StorageClass))
	}
	if _, ok := c.classes.Get("", pvbinding.DefaultClassName); !ok {
		// The cache may not have seen it yet (or missed its deletion):
		// judge the claim as if it exists, and make sure it does.
		c.d.Queue.Add(classKey)
	}
	in.Classes = pvbinding.WithBuiltin(in.Classes)
	if sel := claim.Annotations[pvbinding.AnnSelectedNode]; sel != "" {
		if n, ok := c.nodes.Get("", sel); ok {
			in.SelectedNode = n.(*corev1.Node)
		}
	}
	d := pvbinding.DecideClaim(in)
	pv := d.Volume
	if d.Provision {
		created, err := c.d.Store.Create(ctx, pv)
		switch {
		case errors.Is(err, store.ErrExists):
			// An earlier attempt created it: bind to what is stored.
			if created, err = c.d.Store.Get(ctx, "persistentvolumes", "", pv.Name); err != nil {
				return fmt.Errorf("read provisioned volume %s: %w", pv.Name, err)
			}
		case err != nil:
			return fmt.Errorf("provision volume %s for claim %s/%s: %w", pv.Name, ns, name, err)
		default:
			c.d.Log.Info("provisioned local volume", "pv", pv.Name, "pvc", ns+"/"+name, "node", claim.Annotations[pvbinding.AnnSelectedNode],
				"path", pv.Spec.Local.Path, "capacity", quantity(pv.Spec.Capacity))
		}
		pv = created.(*corev1.PersistentVolume)
	}
	if pv == nil {
		return c.claimNotBound(ctx, claim, d)
	}
	return c.bind(ctx, claim, pv)
}

// bind writes a binding, volume side first (as Kubernetes does: a claim
// never names a volume that does not name it), each write only when it
// changes something. A failed write is retried from the start; the
// half-written binding completes then (the volume names the claim). The
// volume's phase is syncVolume's to write.
func (c *Controller) bind(ctx context.Context, claim *corev1.PersistentVolumeClaim, pv *corev1.PersistentVolume) error {
	key := claim.Namespace + "/" + claim.Name
	if ref := pv.Spec.ClaimRef; ref == nil || !pvbinding.ClaimRefers(ref, claim) || ref.UID != claim.UID {
		upd := schema.Copy(pv)
		if ref == nil {
			setAnnotation(&upd.ObjectMeta, pvbinding.AnnBoundByController, "yes")
		}
		upd.Spec.ClaimRef = pvbinding.ClaimRef(claim)
		got, err := c.d.Store.Update(ctx, upd)
		if err != nil {
			return fmt.Errorf("bind volume %s to claim %s: %w", pv.Name, key, err)
		}
		pv = got.(*corev1.PersistentVolume)
	}
	if claim.Spec.VolumeName != pv.Name || claim.Annotations[pvbinding.AnnBindCompleted] != "yes" {
		upd := schema.Copy(claim)
		if upd.Spec.VolumeName == "" {
			setAnnotation(&upd.ObjectMeta, pvbinding.AnnBoundByController, "yes")
		}
		setAnnotation(&upd.ObjectMeta, pvbinding.AnnBindCompleted, "yes")
		upd.Spec.VolumeName = pv.Name
		got, err := c.d.Store.Update(ctx, upd)
		if err != nil {
			return fmt.Errorf("bind claim %s to volume %s: %w", key, pv.Name, err)
		}
		claim = got.(*corev1.PersistentVolumeClaim)
		c.d.Log.Info("bound claim", "pvc", key, "pv", pv.Name, "capacity", quantity(pv.Spec.Capacity))
	}
	st := *claim.Status.DeepCopy()
	st.Phase = corev1.ClaimBound
	st.Capacity = pv.Spec.Capacity.DeepCopy()
	st.AccessModes = append([]corev1.PersistentVolumeAccessMode(nil), pv.Spec.AccessModes...)
	st.Conditions = withoutCondition(st.Conditions, pvbinding.ConditionBound)
	if err := c.writeClaimStatus(ctx, claim, st); err != nil {
		return err
	}
	c.note(claimPrefix+key, "bound")
	return nil
}

// claimNotBound publishes why a claim is Pending (or Lost): its phase and
// a Bound=False condition with the reason, which `describe` shows.
func (c *Controller) claimNotBound(ctx context.Context, claim *corev1.PersistentVolumeClaim, d pvbinding.ClaimDecision) error {
	st := *claim.Status.DeepCopy()
	st.Phase = d.Phase
	cond := corev1.PersistentVolumeClaimCondition{Type: pvbinding.ConditionBound, Status: corev1.ConditionFalse, Reason: d.Reason, Message: d.Message,
		LastTransitionTime: metav1.NewTime(c.d.Clock.Now().Truncate(time.Second))}
	found := false
	for i := range st.Conditions {
		if st.Conditions[i].Type != cond.Type {
			continue
		}
		found = true
		if st.Conditions[i].Status == cond.Status {
			cond.LastTransitionTime = st.Conditions[i].LastTransitionTime
		}
		st.Conditions[i] = cond
	}
	if !found {
		st.Conditions = append(st.Conditions, cond)
	}
	if d.Phase == corev1.ClaimPending {
		st.Capacity, st.AccessModes = nil, nil
	}
	if err := c.writeClaimStatus(ctx, claim, st); err != nil {
		return err
	}
	key := claim.Namespace + "/" + claim.Name
	if c.note(claimPrefix+key, d.Reason+": "+d.Message) {
		lvl := slog.LevelInfo
		if d.Reason == pvbinding.ReasonWaitForFirstConsumer {
			lvl = slog.LevelDebug
		}
		c.d.Log.Log(ctx, lvl, "claim not bound", "pvc", key, "phase", d.Phase, "reason", d.Reason, "message", d.Message)
	}
	return nil
}

func (c *Controller) writeClaimStatus(ctx context.Context, claim *corev1.PersistentVolumeClaim, st corev1.PersistentVolumeClaimStatus) error {
	upd := schema.Copy(claim)
	upd.Status = st
	_, err := c.d.Status.Update(ctx, claim, upd)
	return err
}

// syncVolume keeps a volume's phase, undoes a stale binding, and
// reclaims the volume of a deleted claim.
func (c *Controller) syncVolume(ctx context.Context, name string) (controller.Result, error) {
	obj, err := c.d.Store.Get(ctx, "persistentvolumes", "", name)
	if errors.Is(err, store.ErrNotFound) {
		return controller.Result{}, nil
	} else if err != nil {
		return controller.Result{}, err
	}
	pv := obj.(*corev1.PersistentVolume)
	in := pvbinding.VolumeInput{Volume: pv}
	if ref := pv.Spec.ClaimRef; ref != nil {
		// From the store, not the cache: a claim the cache has not seen
		// yet must not get its volume deleted.
		o, err := c.d.Store.Get(ctx, "persistentvolumeclaims", ref.Namespace, ref.Name)
		switch {
		case err == nil:
			in.Claim = o.(*corev1.PersistentVolumeClaim)
		case !errors.Is(err, store.ErrNotFound):
			return controller.Result{}, err
		default:
			var pods []*corev1.Pod
			for _, p := range c.pods.List(ref.Namespace) {
				pods = append(pods, p.(*corev1.Pod))
			}
			in.ClaimInUse = len(pvbinding.PodsUsingClaim(pods, ref.Namespace, ref.Name)) > 0
		}
	}
	d := pvbinding.DecideVolume(in)
	switch {
	case d.Delete:
		if _, err := c.d.Store.Delete(ctx, "persistentvolumes", "", pv.Name, store.DeleteOptions{UID: string(pv.UID), ResourceVersion: pv.ResourceVersion}); err != nil && !errors.Is(err, store.ErrNotFound) {
			return controller.Result{}, fmt.Errorf("delete volume %s (reclaimPolicy Delete): %w", pv.Name, err)
		}
		args := []any{"pv", pv.Name, "pvc", pvbinding.ClaimKey(pv.Spec.ClaimRef)}
		if dir := pv.Annotations[pvbinding.AnnProvisionedDir]; dir != "" {
			args = append(args, "dir", dir, "note", "the node's agent removes the directory")
		}
		c.d.Log.Info("deleted volume of a deleted claim (reclaimPolicy Delete)", args...)
		return controller.Result{}, nil
	case d.Unbind:
		upd := schema.Copy(pv)
		upd.Spec.ClaimRef = nil
		delete(upd.Annotations, pvbinding.AnnBoundByController)
		got, err := c.d.Store.Update(ctx, upd)
		if err != nil {
			return controller.Result{}, fmt.Errorf("unbind volume %s: %w", pv.Name, err)
		}
		pv = got.(*corev1.PersistentVolume)
		c.d.Log.Info("volume unbound: its claim is bound to another volume", "pv", pv.Name)
	}
	if err := c.setVolumeStatus(ctx, pv, d); err != nil {
		return controller.Result{}, err
	}
	if d.Phase == corev1.VolumeReleased && c.note(volumePrefix+pv.Name, d.Reason+": "+d.Message) {
		c.d.Log.Info("volume released", "pv", pv.Name, "reason", d.Reason, "message", d.Message)
	}
	if d.Reason == "InUse" {
		return controller.Waiting("the pods using the deleted claim to end", retryInUse), nil
	}
	return controller.Result{}, nil
}

// setVolumeStatus writes a volume's phase, reason and message when they
// change.
func (c *Controller) setVolumeStatus(ctx context.Context, pv *corev1.PersistentVolume, d pvbinding.VolumeDecision) error {
	st := pv.Status
	if st.Phase == d.Phase && st.Reason == d.Reason && st.Message == d.Message {
		return nil
	}
	upd := schema.Copy(pv)
	if st.Phase != d.Phase {
		now := metav1.NewTime(c.d.Clock.Now().Truncate(time.Second))
		upd.Status.LastPhaseTransitionTime = &now
	}
	upd.Status.Phase, upd.Status.Reason, upd.Status.Message = d.Phase, d.Reason, d.Message
	_, err := c.d.Status.Update(ctx, nil, upd)
	return err
}

// note records the state last logged for key; it reports whether it
// changed (log it).
func (c *Controller) note(key, state string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.noted[key] == state {
		return false
	}
	c.noted[key] = state
	return true
}

func (c *Controller) forget(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.noted, key)
}

func setAnnotation(m *metav1.ObjectMeta, k, v string) {
	if m.Annotations == nil {
		m.Annotations = map[string]string{}
	}
	m.Annotations[k] = v
}

func withoutCondition(cs []corev1.PersistentVolumeClaimCondition, t corev1.PersistentVolumeClaimConditionType) []corev1.PersistentVolumeClaimCondition {
	var out []corev1.PersistentVolumeClaimCondition
	for _, c := range cs {
		if c.Type != t {
			out = append(out, c)
		}
	}
	return out
}

func quantity(rl corev1.ResourceList) string {
	q := rl[corev1.ResourceStorage]
	return q.String()
}
