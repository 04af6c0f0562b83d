package volumes

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/schema"
)

func mustCreate(t *testing.T, st store.Interface, obj schema.Object) schema.Object {
	t.Helper()
	out, err := st.Create(context.Background(), obj)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestStoreClaims(t *testing.T) {
	ctx := context.Background()
	st := store.MemoryFor(t)
	claims := StoreClaims(st)
	wantWait := func(claim, msg string) {
		t.Helper()
		_, err := claims.Resolve(ctx, "default", claim)
		var we *WaitError
		if !errors.As(err, &we) || !strings.Contains(err.Error(), msg) {
			t.Fatalf("Resolve(%s) = %v, want a WaitError with %q", claim, err, msg)
		}
	}
	wantConfig := func(claim, msg string) {
		t.Helper()
		_, err := claims.Resolve(ctx, "default", claim)
		var ce *ConfigError
		if !errors.As(err, &ce) || !strings.Contains(err.Error(), msg) {
			t.Fatalf("Resolve(%s) = %v, want a ConfigError with %q", claim, err, msg)
		}
	}
	pvc := func(name, volume string) *corev1.PersistentVolumeClaim {
		return &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
			Spec: corev1.PersistentVolumeClaimSpec{VolumeName: volume}}
	}
	wantWait("data", "persistentvolumeclaim default/data not found")
	c := mustCreate(t, st, pvc("data", "")).(*corev1.PersistentVolumeClaim)
	wantWait("data", "waiting for claim data to be bound")

	// Bound by the binder: the claim names the volume.
	c.Spec.VolumeName = "pv-data"
	if _, err := st.Update(ctx, c); err != nil {
		t.Fatal(err)
	}
	wantWait("data", "its persistentvolume pv-data not found")
	mustCreate(t, st, &corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: "pv-data"},
		Spec: corev1.PersistentVolumeSpec{
			PersistentVolumeSource: corev1.PersistentVolumeSource{Local: &corev1.LocalVolumeSource{Path: "/srv/data"}},
			ClaimRef:               &corev1.ObjectReference{Namespace: "default", Name: "data"}}})
	cv, err := claims.Resolve(ctx, "default", "data")
	if err != nil || cv != (ClaimVolume{PersistentVolume: "pv-data", Path: "/srv/data", Type: corev1.HostPathDirectory}) {
		t.Fatalf("Resolve = %+v, %v", cv, err)
	}

	// Provisioned hostPath volume: created when missing.
	mustCreate(t, st, pvc("prov", "pv-prov"))
	mustCreate(t, st, &corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: "pv-prov",
		Annotations: map[string]string{AnnotationProvisionedDir: "true"}},
		Spec: corev1.PersistentVolumeSpec{PersistentVolumeSource: corev1.PersistentVolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/srv/prov"}}}})
	if cv, err := claims.Resolve(ctx, "default", "prov"); err != nil || cv.Path != "/srv/prov" || cv.Type != corev1.HostPathDirectoryOrCreate {
		t.Fatalf("provisioned: %+v, %v", cv, err)
	}

	// A volume bound to another claim is not mounted.
	mustCreate(t, st, pvc("thief", "pv-data"))
	wantWait("thief", "bound to claim default/data")

	// Kinds a node cannot mount.
	mustCreate(t, st, pvc("nfs", "pv-nfs"))
	mustCreate(t, st, &corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: "pv-nfs"},
		Spec: corev1.PersistentVolumeSpec{PersistentVolumeSource: corev1.PersistentVolumeSource{NFS: &corev1.NFSVolumeSource{Server: "x", Path: "/"}}}})
	wantConfig("nfs", "neither hostPath nor local")
	block := corev1.PersistentVolumeBlock
	mustCreate(t, st, pvc("blk", "pv-blk"))
	mustCreate(t, st, &corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: "pv-blk"},
		Spec: corev1.PersistentVolumeSpec{VolumeMode: &block,
			PersistentVolumeSource: corev1.PersistentVolumeSource{Local: &corev1.LocalVolumeSource{Path: "/dev/sdb"}}}})
	wantConfig("blk", "volumeMode Block")

	// A claim being deleted is not mounted.
	now := metav1.NewTime(time.Now())
	going := pvc("going", "pv-data")
	going.DeletionTimestamp = &now
	_, err = StoreClaims(deletingStore{st, going}).Resolve(ctx, "default", "going")
	var we *WaitError
	if !errors.As(err, &we) || !strings.Contains(err.Error(), "being deleted") {
		t.Fatalf("claim being deleted: %v", err)
	}
}

// deletingStore returns pvc (a claim being deleted) for its name.
type deletingStore struct {
	store.Interface
	pvc *corev1.PersistentVolumeClaim
}

func (d deletingStore) Get(ctx context.Context, resource, namespace, name string) (schema.Object, error) {
	if resource == "persistentvolumeclaims" && name == d.pvc.Name {
		return d.pvc, nil
	}
	return d.Interface.Get(ctx, resource, namespace, name)
}
