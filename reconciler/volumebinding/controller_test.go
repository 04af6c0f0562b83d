package volumebinding

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/internal/testkit"
	"github.com/flotilla-dev/flotilla/reconciler/controller"
	"github.com/flotilla-dev/flotilla/reconciler/controller/controllertest"
	"github.com/flotilla-dev/flotilla/schema"
	"github.com/flotilla-dev/flotilla/volumes/pvbinding"
)

// binder is the controller running on a store as the manager runs it (a
// cache with a short resync, a loop with two workers).
type binder struct {
	*controllertest.Harness
	stop func()
}

// run starts the controller on st.
func run(t *testing.T, st store.Interface, cfg Config) *binder {
	t.Helper()
	h := controllertest.New(t, "volumebinding", st, controllertest.Options{Resync: 100 * time.Millisecond})
	return &binder{Harness: h, stop: h.Run(t, New(h.Deps(), cfg), Subject)}
}

// idle waits until the binder is idle and has gone through n more
// reconciles (resyncs bring one per key), then idle again.
func (b *binder) idle(t *testing.T, n uint64) {
	t.Helper()
	b.Quiesce(t)
	b.WaitReconciles(t, n)
	b.Quiesce(t)
}

func create(t *testing.T, st store.Interface, obj schema.Object) {
	t.Helper()
	if _, err := st.Create(context.Background(), obj); err != nil {
		t.Fatal(err)
	}
}

func volume(name, size, class string, policy corev1.PersistentVolumeReclaimPolicy) *corev1.PersistentVolume {
	return &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: resource.MustParse(size)},
			AccessModes:                   []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			StorageClassName:              class,
			PersistentVolumeReclaimPolicy: policy,
			PersistentVolumeSource:        corev1.PersistentVolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/mnt/" + name}},
		},
	}
}

// newClaim asks for size of class ("-" for no storageClassName).
func newClaim(name, size, class string) *corev1.PersistentVolumeClaim {
	c := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources:   corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse(size)}},
		},
	}
	if class != "-" {
		c.Spec.StorageClassName = &class
	}
	return c
}

func getClaim(t *testing.T, st store.Interface, name string) *corev1.PersistentVolumeClaim {
	t.Helper()
	o, err := st.Get(context.Background(), "persistentvolumeclaims", "default", name)
	if err != nil {
		t.Fatal(err)
	}
	return o.(*corev1.PersistentVolumeClaim)
}

func getVolume(st store.Interface, name string) (*corev1.PersistentVolume, error) {
	o, err := st.Get(context.Background(), "persistentvolumes", "", name)
	if err != nil {
		return nil, err
	}
	return o.(*corev1.PersistentVolume), nil
}

func condition(c *corev1.PersistentVolumeClaim) *corev1.PersistentVolumeClaimCondition {
	for i := range c.Status.Conditions {
		if c.Status.Conditions[i].Type == pvbinding.ConditionBound {
			return &c.Status.Conditions[i]
		}
	}
	return nil
}

// bound waits until claim is Bound to a volume, and the volume to it, and
// returns the volume's name.
func bound(t *testing.T, st store.Interface, claim string) string {
	t.Helper()
	var name string
	testkit.EventuallyWhy(t, claim+" to be bound", 0, func() string {
		c := getClaim(t, st, claim)
		if c.Status.Phase != corev1.ClaimBound || c.Spec.VolumeName == "" {
			return fmt.Sprintf("phase %q volume %q conditions %+v", c.Status.Phase, c.Spec.VolumeName, c.Status.Conditions)
		}
		pv, err := getVolume(st, c.Spec.VolumeName)
		if err != nil {
			return err.Error()
		}
		if pv.Status.Phase != corev1.VolumeBound || !pvbinding.ClaimRefers(pv.Spec.ClaimRef, c) || pv.Spec.ClaimRef.UID != c.UID {
			return fmt.Sprintf("volume %s: phase %q claimRef %+v", pv.Name, pv.Status.Phase, pv.Spec.ClaimRef)
		}
		if got, want := c.Status.Capacity[corev1.ResourceStorage], pv.Spec.Capacity[corev1.ResourceStorage]; got.Cmp(want) != 0 || condition(c) != nil {
			return fmt.Sprintf("claim status %+v", c.Status)
		}
		name = pv.Name
		return ""
	})
	return name
}

// pendingWith waits until claim is Pending with a Bound=False condition
// of reason whose message contains msg.
func pendingWith(t *testing.T, st store.Interface, claim, reason, msg string) {
	t.Helper()
	testkit.EventuallyWhy(t, claim+" to be pending ("+reason+")", 0, func() string {
		c := getClaim(t, st, claim)
		cond := condition(c)
		if c.Status.Phase != corev1.ClaimPending || cond == nil || cond.Status != corev1.ConditionFalse ||
			cond.Reason != reason || !strings.Contains(cond.Message, msg) {
			return fmt.Sprintf("phase %q volume %q conditions %+v", c.Status.Phase, c.Spec.VolumeName, c.Status.Conditions)
		}
		return ""
	})
}

// TestBindOnTheStore: claims bind to the smallest volume that fits, one
// claim per volume, never to a too-small or other-class volume; a claim
// nothing satisfies says why; the built-in class exists; an idle or
// restarted binder writes nothing.
func TestBindOnTheStore(t *testing.T) {
	st := store.MemoryFor(t)
	for _, v := range []*corev1.PersistentVolume{
		volume("v-1g", "1Gi", "manual", ""), volume("v-5g", "5Gi", "manual", ""), volume("v-10g", "10Gi", "manual", ""),
		volume("v-fast", "5Gi", "fast", ""), volume("v-plain", "20Gi", "", ""),
	} {
		create(t, st, v)
	}
	bd := run(t, st, Config{})
	create(t, st, newClaim("a", "4Gi", "manual"))
	create(t, st, newClaim("b", "5Gi", "manual"))
	create(t, st, newClaim("big", "30Gi", "manual"))
	create(t, st, newClaim("none", "1Gi", ""))

	a, b := bound(t, st, "a"), bound(t, st, "b")
	if a == b || !(a == "v-5g" && b == "v-10g" || a == "v-10g" && b == "v-5g") {
		t.Errorf("a → %s, b → %s: want v-5g and v-10g, one each", a, b)
	}
	pendingWith(t, st, "big", pvbinding.ReasonFailedBinding, `1 too small (at most 1Gi), 2 bound to another claim, 2 of another storage class`)
	if none := bound(t, st, "none"); none != "v-plain" {
		t.Errorf("a claim of no class bound to %s, want v-plain", none)
	}
	for _, name := range []string{"v-1g", "v-fast"} {
		if pv, err := getVolume(st, name); err != nil || pv.Status.Phase != corev1.VolumeAvailable || pv.Spec.ClaimRef != nil {
			t.Errorf("volume %s: %+v %v", name, pv, err)
		}
	}
	c := getClaim(t, st, "a")
	if c.Annotations[pvbinding.AnnBindCompleted] != "yes" || c.Annotations[pvbinding.AnnBoundByController] != "yes" {
		t.Errorf("claim annotations %v", c.Annotations)
	}
	if _, err := st.Get(context.Background(), "storageclasses", "", pvbinding.DefaultClassName); err != nil {
		t.Errorf("the built-in class: %v", err)
	}

	// Idle (many resyncs), then restarted: nothing is written.
	bd.Quiesce(t)
	rev := st.Revision()
	bd.idle(t, 30)
	bd.stop()
	run(t, st, Config{}).idle(t, 30)
	if st.Revision() != rev {
		t.Errorf("store revision %d → %d while idle and after a restart", rev, st.Revision())
	}

	// A volume that fits appears: the waiting claim takes it.
	create(t, st, volume("v-50g", "50Gi", "manual", ""))
	if got := bound(t, st, "big"); got != "v-50g" {
		t.Errorf("big bound to %s", got)
	}
}

// TestPreBinding: a volume reserved for a claim (claimRef without UID)
// and a claim naming its volume (spec.volumeName) bind as asked, not to
// the smallest fit.
func TestPreBinding(t *testing.T) {
	st := store.MemoryFor(t)
	reserved := volume("reserved", "50Gi", "manual", "")
	reserved.Spec.ClaimRef = &corev1.ObjectReference{Namespace: "default", Name: "mine"}
	create(t, st, reserved)
	create(t, st, volume("small", "1Gi", "manual", ""))
	create(t, st, volume("chosen", "9Gi", "manual", ""))
	run(t, st, Config{})
	// Nobody else gets the reserved volume, even while its claim is missing.
	create(t, st, newClaim("other", "10Gi", "manual"))
	pendingWith(t, st, "other", pvbinding.ReasonFailedBinding, "1 bound to another claim")
	create(t, st, newClaim("mine", "1Gi", "manual"))
	if got := bound(t, st, "mine"); got != "reserved" {
		t.Errorf("mine bound to %s", got)
	}
	named := newClaim("named", "1Gi", "manual")
	named.Spec.VolumeName = "chosen"
	create(t, st, named)
	if got := bound(t, st, "named"); got != "chosen" {
		t.Errorf("named bound to %s", got)
	}
	// A claim naming a volume that cannot satisfy it stays Pending.
	tooBig := newClaim("too-big", "5Gi", "manual")
	tooBig.Spec.VolumeName = "small"
	create(t, st, tooBig)
	pendingWith(t, st, "too-big", pvbinding.ReasonVolumeMismatch, "volume small has 1Gi, the claim requests 5Gi")
}

// TestProvisionAndReclaim: a claim of the default class waits for its
// first consumer, is provisioned a local volume on the node the scheduler
// selected, and the volume is deleted once the claim is deleted and no pod
// uses it any more; a Retain volume stays Released.
func TestProvisionAndReclaim(t *testing.T) {
	st := store.MemoryFor(t)
	ctx := context.Background()
	create(t, st, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1", Labels: map[string]string{corev1.LabelHostname: "n1"}}})
	run(t, st, Config{LocalVolumeRoot: "/srv/flotilla"})
	create(t, st, newClaim("data", "2Gi", "-"))
	pendingWith(t, st, "data", pvbinding.ReasonWaitForFirstConsumer, "waiting for first consumer to be created before binding")

	// The scheduler selects a node for the claim's first pod.
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "db"}, Spec: corev1.PodSpec{
		Containers: []corev1.Container{{Name: "db", Image: "mysql"}},
		Volumes: []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{
			PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "data"}}}},
	}}
	create(t, st, pod)
	c := getClaim(t, st, "data")
	c.Annotations = map[string]string{pvbinding.AnnSelectedNode: "n1"}
	if _, err := st.Update(ctx, c); err != nil {
		t.Fatal(err)
	}
	name := bound(t, st, "data")
	pv, err := getVolume(st, name)
	if err != nil {
		t.Fatal(err)
	}
	wantPath := "/srv/flotilla/n1/pvc-" + string(c.UID)
	if name != "pvc-"+string(c.UID) || pv.Spec.Local == nil || pv.Spec.Local.Path != wantPath || pv.Annotations[pvbinding.AnnProvisionedDir] != wantPath ||
		pv.Annotations[pvbinding.AnnProvisionedBy] != pvbinding.LocalProvisioner || pv.Spec.StorageClassName != "local" ||
		pv.Spec.PersistentVolumeReclaimPolicy != corev1.PersistentVolumeReclaimDelete {
		t.Errorf("provisioned %s: %+v %v", name, pv.Spec, pv.Annotations)
	}
	if q := pv.Spec.Capacity[corev1.ResourceStorage]; q.String() != "2Gi" {
		t.Errorf("capacity %s", q.String())
	}
	if !pvbinding.NodeAffinityMatches(pv, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1", Labels: map[string]string{corev1.LabelHostname: "n1"}}}) {
		t.Errorf("node affinity %+v", pv.Spec.NodeAffinity)
	}

	// The claim is deleted while its pod runs: the volume waits.
	if _, err := st.Delete(ctx, "persistentvolumeclaims", "default", "data", store.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	testkit.EventuallyWhy(t, "the volume to be released and kept while in use", 0, func() string {
		pv, err := getVolume(st, name)
		if err != nil || pv.Status.Phase != corev1.VolumeReleased || pv.Status.Reason != "InUse" {
			return fmt.Sprintf("%+v %v", pv, err)
		}
		return ""
	})
	if _, err := st.Delete(ctx, "pods", "default", "db", store.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	testkit.EventuallyWhy(t, "the volume to be deleted", 0, func() string {
		if _, err := getVolume(st, name); !errors.Is(err, store.ErrNotFound) {
			return fmt.Sprintf("%v", err)
		}
		return ""
	})

	// Retain: the volume stays Released and is not bound again.
	create(t, st, volume("keep", "1Gi", "manual", corev1.PersistentVolumeReclaimRetain))
	create(t, st, newClaim("first", "1Gi", "manual"))
	bound(t, st, "first")
	if _, err := st.Delete(ctx, "persistentvolumeclaims", "default", "first", store.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	testkit.EventuallyWhy(t, "keep to be released", 0, func() string {
		pv, err := getVolume(st, "keep")
		if err != nil || pv.Status.Phase != corev1.VolumeReleased || !strings.Contains(pv.Status.Message, "reclaimPolicy Retain keeps the volume and its data") {
			return fmt.Sprintf("%+v %v", pv, err)
		}
		return ""
	})
	create(t, st, newClaim("second", "1Gi", "manual"))
	pendingWith(t, st, "second", pvbinding.ReasonFailedBinding, "1 released by a deleted claim")
	if pv, err := getVolume(st, "keep"); err != nil || pv.Status.Phase != corev1.VolumeReleased {
		t.Errorf("keep: %+v %v", pv, err)
	}
}

// TestBuiltinClassComesBack: the default class is created at start and
// again when deleted.
func TestBuiltinClassComesBack(t *testing.T) {
	st := store.MemoryFor(t)
	run(t, st, Config{})
	has := func() string {
		if _, err := st.Get(context.Background(), "storageclasses", "", pvbinding.DefaultClassName); err != nil {
			return err.Error()
		}
		return ""
	}
	testkit.EventuallyWhy(t, "the built-in class", 0, has)
	if _, err := st.Delete(context.Background(), "storageclasses", "", pvbinding.DefaultClassName, store.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	testkit.EventuallyWhy(t, "the built-in class again", 0, has)
}

func TestConfigValidate(t *testing.T) {
	if err := (Config{LocalVolumeRoot: "vols"}).Validate(); err == nil || !strings.Contains(err.Error(), "--local-volume-root") {
		t.Errorf("relative root: %v", err)
	}
	if err := (Config{}).Validate(); err != nil {
		t.Error(err)
	}
}

// TestInvalidClaimStalls: claims that ask for no storage, a size that is
// not positive or no access mode are stalled with the reason; a good claim
// beside them binds, and a fixed claim loses its Stalled condition.
func TestInvalidClaimStalls(t *testing.T) {
	st := store.MemoryFor(t)
	run(t, st, Config{})
	create(t, st, volume("v", "1Gi", "manual", ""))
	noSize := newClaim("no-size", "1Gi", "manual")
	noSize.Spec.Resources.Requests = nil
	negative := newClaim("negative", "-1Gi", "manual")
	noModes := newClaim("no-modes", "1Gi", "manual")
	noModes.Spec.AccessModes = nil
	for _, c := range []*corev1.PersistentVolumeClaim{noSize, negative, noModes} {
		create(t, st, c)
	}
	create(t, st, newClaim("good", "1Gi", "manual"))
	for _, name := range []string{"no-size", "negative", "no-modes"} {
		testkit.EventuallyWhy(t, name+" stalled", 0, func() string {
			c, ok := controller.StalledCondition(getClaim(t, st, name))
			if !ok || c.Reason != ReasonInvalidClaim {
				return fmt.Sprintf("stalled=%v %+v", ok, c)
			}
			return ""
		})
	}
	if got := bound(t, st, "good"); got != "v" {
		t.Errorf("good bound to %q", got)
	}
	c := getClaim(t, st, "no-modes")
	c.Spec.AccessModes = []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}
	if _, err := st.Update(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	testkit.EventuallyWhy(t, "no-modes no longer stalled", 0, func() string {
		if _, ok := controller.StalledCondition(getClaim(t, st, "no-modes")); ok {
			return "still stalled"
		}
		return ""
	})
}
