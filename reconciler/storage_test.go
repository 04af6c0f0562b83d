package reconciler_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/internal/testkit"
	"github.com/flotilla-dev/flotilla/reconciler"
	"github.com/flotilla-dev/flotilla/schema"
	"github.com/flotilla-dev/flotilla/volumes/pvbinding"
)

func claimPod(name string, claims ...string) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "x"}}}}
	for _, c := range claims {
		p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: c, VolumeSource: corev1.VolumeSource{
			PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: c}}})
	}
	return p
}

func getPod(t *testing.T, st store.Interface, name string) *corev1.Pod {
	t.Helper()
	o, err := st.Get(context.Background(), "pods", "default", name)
	if err != nil {
		t.Fatal(err)
	}
	return o.(*corev1.Pod)
}

func getPVC(t *testing.T, st store.Interface, name string) *corev1.PersistentVolumeClaim {
	t.Helper()
	o, err := st.Get(context.Background(), "persistentvolumeclaims", "default", name)
	if err != nil {
		t.Fatal(err)
	}
	return o.(*corev1.PersistentVolumeClaim)
}

func claimCondition(c *corev1.PersistentVolumeClaim) string {
	for _, cond := range c.Status.Conditions {
		if cond.Type == pvbinding.ConditionBound {
			return cond.Reason + ": " + cond.Message
		}
	}
	return ""
}

// TestStorageConformance runs the Kubernetes mysql example's volume and
// claim (shared/conformance/k8s-examples/mysql-pv.yaml) through the whole
// controller manager with simulated nodes: a 30Gi claim against the 20Gi
// volume stays Pending and says why; the example's claim binds to its
// volume and its pod runs; a claim without a class gets a local volume
// provisioned on the node its first pod is scheduled to, and a second pod
// of that ReadWriteOnce claim follows it there; a pod of a missing claim
// stays Pending with the reason.
func TestStorageConformance(t *testing.T) {
	path := filepath.Join("..", "..", "shared", "conformance", "k8s-examples", "mysql-pv.yaml")
	if _, err := os.Stat(path); err != nil {
		t.Skipf("conformance examples not found: %v", err)
	}
	v, err := schema.NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	ms, ps := v.LoadPaths(path)
	if err := ps.Err(); err != nil {
		t.Fatal(err)
	}
	st := store.MemoryFor(t)
	startKubelets(t, st, 3)
	startManagerWith(t, reconciler.Config{Store: st, Logger: testLogger(t), ResyncPeriod: time.Second, MaxBackoff: time.Second, LocalVolumeRoot: "/srv/vols"})

	var claim *corev1.PersistentVolumeClaim
	for _, m := range ms {
		switch o := m.Object.(type) {
		case *corev1.PersistentVolume:
			create(t, st, o)
		case *corev1.PersistentVolumeClaim:
			claim = o
		}
	}
	big := claim.DeepCopy()
	big.Name = "big"
	big.Spec.Resources.Requests[corev1.ResourceStorage] = resource.MustParse("30Gi")
	create(t, st, big)
	testkit.EventuallyWhy(t, "the 30Gi claim pending with a reason", time.Minute, func() string {
		c := getPVC(t, st, "big")
		if cond := claimCondition(c); c.Status.Phase != corev1.ClaimPending || !strings.Contains(cond, "FailedBinding: no persistent volume satisfies the claim (storage class \"manual\", 30Gi, ReadWriteOnce): 1 too small (at most 20Gi)") {
			return fmt.Sprintf("phase %q, %s", c.Status.Phase, cond)
		}
		return ""
	})

	create(t, st, claim)
	create(t, st, claimPod("mysql", "mysql-pv-claim"))
	testkit.EventuallyWhy(t, "mysql-pv-claim bound and its pod running", time.Minute, func() string {
		c := getPVC(t, st, "mysql-pv-claim")
		p := getPod(t, st, "mysql")
		if c.Status.Phase != corev1.ClaimBound || c.Spec.VolumeName != "mysql-pv-volume" || p.Spec.NodeName == "" || !ready(p) {
			return fmt.Sprintf("claim %s %q; pod on %q, %s", c.Status.Phase, c.Spec.VolumeName, p.Spec.NodeName, p.Status.Phase)
		}
		return ""
	})
	if c := getPVC(t, st, "big"); c.Status.Phase != corev1.ClaimPending || c.Spec.VolumeName != "" {
		t.Errorf("the 30Gi claim: %s %q", c.Status.Phase, c.Spec.VolumeName)
	}

	// A claim with no class: the default class "local", provisioned where
	// the first pod goes.
	create(t, st, &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: "data", Namespace: "default"},
		Spec: corev1.PersistentVolumeClaimSpec{AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}}}})
	testkit.EventuallyWhy(t, "data waiting for its first consumer", time.Minute, func() string {
		c := getPVC(t, st, "data")
		if cond := claimCondition(c); !strings.HasPrefix(cond, pvbinding.ReasonWaitForFirstConsumer) {
			return fmt.Sprintf("phase %q, %s", c.Status.Phase, cond)
		}
		return ""
	})
	create(t, st, claimPod("app", "data"))
	var node string
	testkit.EventuallyWhy(t, "a local volume provisioned on app's node, app running", time.Minute, func() string {
		c := getPVC(t, st, "data")
		p := getPod(t, st, "app")
		if c.Status.Phase != corev1.ClaimBound || p.Spec.NodeName == "" || !ready(p) {
			return fmt.Sprintf("claim %s %q; pod on %q, %s", c.Status.Phase, c.Spec.VolumeName, p.Spec.NodeName, p.Status.Phase)
		}
		o, err := st.Get(context.Background(), "persistentvolumes", "", c.Spec.VolumeName)
		if err != nil {
			return err.Error()
		}
		pv := o.(*corev1.PersistentVolume)
		node = p.Spec.NodeName
		want := "/srv/vols/" + node + "/pvc-" + string(c.UID)
		if c.Annotations[pvbinding.AnnSelectedNode] != node || pv.Spec.Local == nil || pv.Spec.Local.Path != want ||
			pv.Annotations[pvbinding.AnnProvisionedDir] != want || pv.Spec.StorageClassName != pvbinding.DefaultClassName {
			return fmt.Sprintf("claim selected %q; volume %+v %v, want path %s", c.Annotations[pvbinding.AnnSelectedNode], pv.Spec.Local, pv.Annotations, want)
		}
		return ""
	})
	create(t, st, claimPod("app2", "data"))
	create(t, st, claimPod("orphan", "nope"))
	testkit.EventuallyWhy(t, "app2 next to app, orphan pending", time.Minute, func() string {
		p := getPod(t, st, "app2")
		if p.Spec.NodeName != node {
			return fmt.Sprintf("app2 on %q, want %q", p.Spec.NodeName, node)
		}
		o := getPod(t, st, "orphan")
		for _, c := range o.Status.Conditions {
			if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Message == `0/3 nodes are available: persistentvolumeclaim "nope" not found.` {
				return ""
			}
		}
		return fmt.Sprintf("orphan on %q: %+v", o.Spec.NodeName, o.Status.Conditions)
	})
}
