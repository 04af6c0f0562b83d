package volumes

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"golang.org/x/sys/unix"

	"github.com/flotilla-dev/flotilla/cluster/store"
)

func newTestManager(t *testing.T, mounter Mounter) (*Manager, store.Interface) {
	t.Helper()
	st := store.MemoryFor(t)
	m, err := New(Config{Dir: t.TempDir(), Owner: "n1", Objects: st, Mounter: mounter})
	if err != nil {
		t.Fatal(err)
	}
	unmountLeftovers(t, m.Dir())
	return m, st
}

func TestNewValidates(t *testing.T) {
	st := store.MemoryFor(t)
	for _, cfg := range []Config{{Owner: "n", Objects: st}, {Dir: "/x", Objects: st}, {Dir: "/x", Owner: "n"}} {
		if _, err := New(cfg); err == nil {
			t.Errorf("New(%+v) accepted", cfg)
		}
	}
}

func TestSetupMountsTeardown(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("a subPath into an emptyDir is a bind mount: needs root")
	}
	ctx := context.Background()
	fm := NewFakeMounter()
	m, st := newTestManager(t, fm)
	host := filepath.Join(t.TempDir(), "host", "data")
	dirOrCreate := corev1.HostPathDirectoryOrCreate
	mustCreate(t, st, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "cfg", Namespace: "default"},
		Data: map[string]string{"app.conf": "v1"}})
	mustCreate(t, st, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "sec", Namespace: "default"},
		Data: map[string][]byte{"token": []byte("t0k3n")}})
	pod := testPod(
		vol("cache", corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}),
		vol("shm", corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{Medium: corev1.StorageMediumMemory, SizeLimit: quantity("8Mi")}}),
		vol("host", corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: host, Type: &dirOrCreate}}),
		vol("cfg", corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}}}),
		vol("sec", corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "sec"}}),
	)
	pod.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{
		{Name: "cache", MountPath: "/cache"},
		{Name: "shm", MountPath: "/dev/shm"},
		{Name: "host", MountPath: "/host", ReadOnly: true},
		{Name: "cfg", MountPath: "/etc/app.conf", SubPath: "app.conf"},
		{Name: "cache", MountPath: "/logs", SubPathExpr: "logs/$(POD_NAME)"},
		{Name: "sec", MountPath: "/secrets"},
	}
	vp, err := m.Setup(ctx, pod)
	if err != nil {
		t.Fatal(err)
	}
	podDir := filepath.Join(m.Dir(), "uid-1")
	if info, err := os.Stat(filepath.Join(podDir, "volumes/empty-dir/cache")); err != nil || info.Mode().Perm() != 0o777 {
		t.Fatalf("emptyDir: %v %v", info, err)
	}
	if size, ok := fm.Mounted(filepath.Join(podDir, "volumes/empty-dir/shm")); !ok || size != 8<<20 {
		t.Fatalf("Memory emptyDir tmpfs = %d, %v", size, ok)
	}
	if _, ok := fm.Mounted(filepath.Join(podDir, "volumes/secret/sec")); !ok {
		t.Fatal("secret volume not on a tmpfs")
	}
	if _, ok := fm.Mounted(filepath.Join(podDir, "volumes/empty-dir/cache")); ok {
		t.Fatal("disk emptyDir on a tmpfs")
	}
	if info, err := os.Stat(host); err != nil || !info.IsDir() {
		t.Fatalf("DirectoryOrCreate hostPath: %v", err)
	}
	mounts, err := vp.Mounts(&pod.Spec.Containers[0], func(s string) string { return strings.ReplaceAll(s, "$(POD_NAME)", "p") })
	if err != nil {
		t.Fatal(err)
	}
	cfgDir := filepath.Join(podDir, "volumes/configmap/cfg")
	want := []Mount{
		{Source: filepath.Join(podDir, "volumes/empty-dir/cache"), Destination: "/cache"},
		{Source: filepath.Join(podDir, "volumes/empty-dir/shm"), Destination: "/dev/shm"},
		{Source: host, Destination: "/host", ReadOnly: true},
		{Source: filepath.Join(cfgDir, "app.conf"), Destination: "/etc/app.conf", ReadOnly: true}, // through the key's link
		{Source: filepath.Join(podDir, "volume-subpaths/cache/c/4"), Destination: "/logs"},        // bind-mounted

		{Source: filepath.Join(podDir, "volumes/secret/sec"), Destination: "/secrets", ReadOnly: true},
	}
	if len(mounts) != len(want) {
		t.Fatalf("mounts = %+v", mounts)
	}
	for i := range want {
		if mounts[i] != want[i] {
			t.Errorf("mount %d = %+v, want %+v", i, mounts[i], want[i])
		}
	}
	if info, err := os.Stat(filepath.Join(podDir, "volumes/empty-dir/cache/logs/p")); err != nil || !info.IsDir() || info.Mode().Perm() != 0o777 {
		t.Fatalf("subPathExpr dir not created 0777 as its emptyDir: %v %v", info, err)
	}
	assertSameFile(t, filepath.Join(podDir, "volume-subpaths/cache/c/4"), filepath.Join(podDir, "volumes/empty-dir/cache/logs/p"))

	// The ConfigMap changes: Setup again rewrites the file in place.
	if err := os.WriteFile(filepath.Join(podDir, "volumes/empty-dir/cache/kept"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	obj, _ := st.Get(ctx, "configmaps", "default", "cfg")
	cm := obj.(*corev1.ConfigMap)
	cm.Data["app.conf"] = "v2"
	if _, err := st.Update(ctx, cm); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Setup(ctx, pod); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(cfgDir, "app.conf")); got != "v2" {
		t.Fatalf("configmap file after the change: %q", got)
	}
	if got := readFile(t, filepath.Join(podDir, "volumes/empty-dir/cache/kept")); got != "x" {
		t.Fatal("Setup again touched the emptyDir")
	}

	// A non-optional ConfigMap that disappears keeps the files and errors.
	if _, err := st.Delete(ctx, "configmaps", "default", "cfg", store.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	_, err = m.Setup(ctx, pod)
	var ce *ConfigError
	if !errors.As(err, &ce) || ce.Volume != "cfg" {
		t.Fatalf("Setup without the ConfigMap: %v", err)
	}
	if got := readFile(t, filepath.Join(cfgDir, "app.conf")); got != "v2" {
		t.Fatalf("configmap file after the ConfigMap went: %q", got)
	}

	if uids, err := m.Pods(); err != nil || len(uids) != 1 || uids[0] != "uid-1" {
		t.Fatalf("Pods = %v, %v", uids, err)
	}
	if err := m.Teardown("uid-1"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(podDir); !os.IsNotExist(err) {
		t.Fatalf("pod dir still there: %v", err)
	}
	if _, ok := fm.Mounted(filepath.Join(podDir, "volumes/secret/sec")); ok {
		t.Fatal("tmpfs not unmounted")
	}
	if _, err := os.Stat(host); err != nil {
		t.Fatal("teardown removed hostPath data")
	}
	if err := m.Teardown("uid-1"); err != nil {
		t.Fatalf("second Teardown: %v", err)
	}
	if err := m.Teardown("../x"); err == nil {
		t.Fatal("Teardown of a path accepted")
	}
}

func TestPodsListsOnlyOwnDirs(t *testing.T) {
	m, _ := newTestManager(t, NewFakeMounter())
	for uid, owner := range map[string]string{"a": "n1", "b": "n2", "c": ""} {
		if err := os.MkdirAll(filepath.Join(m.Dir(), uid), 0o755); err != nil {
			t.Fatal(err)
		}
		if owner != "" {
			if err := os.WriteFile(filepath.Join(m.Dir(), uid, "owner"), []byte(owner), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	if uids, err := m.Pods(); err != nil || len(uids) != 1 || uids[0] != "a" {
		t.Fatalf("Pods = %v, %v", uids, err)
	}
}

func TestSubPathEscapes(t *testing.T) {
	ctx := context.Background()
	m, _ := newTestManager(t, NewFakeMounter())
	pod := testPod(vol("cache", corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}))
	vp, err := m.Setup(ctx, pod)
	if err != nil {
		t.Fatal(err)
	}
	cache := filepath.Join(m.Dir(), "uid-1/volumes/empty-dir/cache")
	// a container wrote a symlink pointing out of the volume
	if err := os.Symlink("/etc", filepath.Join(cache, "evil")); err != nil {
		t.Fatal(err)
	}
	_, err = vp.Mounts(&corev1.Container{Name: "c", VolumeMounts: []corev1.VolumeMount{{Name: "cache", MountPath: "/x", SubPath: "evil"}}}, nil)
	var ce *ConfigError
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), "outside the volume") {
		t.Fatalf("escaping subPath: %v", err)
	}
}

func TestClaimVolume(t *testing.T) {
	ctx := context.Background()
	m, st := newTestManager(t, NewFakeMounter())
	pod := testPod(vol("data", corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "data-0"}}))
	pod.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "data", MountPath: "/data"}}
	_, err := m.Setup(ctx, pod)
	var we *WaitError
	if !errors.As(err, &we) || we.Volume != "data" {
		t.Fatalf("unbound claim: %v", err)
	}
	dir := filepath.Join(t.TempDir(), "provisioned", "data-0")
	mustCreate(t, st, &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: "data-0", Namespace: "default"},
		Spec: corev1.PersistentVolumeClaimSpec{VolumeName: "pv-1"}})
	mustCreate(t, st, &corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: "pv-1", Annotations: map[string]string{AnnotationProvisionedDir: dir}},
		Spec: corev1.PersistentVolumeSpec{PersistentVolumeSource: corev1.PersistentVolumeSource{Local: &corev1.LocalVolumeSource{Path: dir}}}})
	vp, err := m.Setup(ctx, pod)
	if err != nil {
		t.Fatal(err)
	}
	mounts, err := vp.Mounts(&pod.Spec.Containers[0], nil)
	if err != nil || len(mounts) != 1 || mounts[0].Source != dir {
		t.Fatalf("mounts = %+v, %v", mounts, err)
	}
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("provisioned dir not created: %v", err)
	}
	if _, err := os.Stat(filepath.Join(m.Dir(), "uid-1")); !os.IsNotExist(err) {
		t.Fatalf("a pod with only a claim got a pod dir: %v", err)
	}
}

func TestExceeded(t *testing.T) {
	ctx := context.Background()
	m, _ := newTestManager(t, NewFakeMounter())
	pod := testPod(vol("cache", corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{SizeLimit: quantity("64Ki")}}))
	if !HasSizeLimits(pod) {
		t.Fatal("HasSizeLimits = false")
	}
	if _, err := m.Setup(ctx, pod); err != nil {
		t.Fatal(err)
	}
	if msg, err := m.Exceeded(pod); err != nil || msg != "" {
		t.Fatalf("empty volume: %q, %v", msg, err)
	}
	big := make([]byte, 128<<10)
	for i := range big {
		big[i] = byte(i) // not sparse
	}
	if err := os.WriteFile(filepath.Join(m.Dir(), "uid-1/volumes/empty-dir/cache/big"), big, 0o644); err != nil {
		t.Fatal(err)
	}
	msg, err := m.Exceeded(pod)
	if err != nil || msg != `Usage of EmptyDir volume "cache" exceeds the limit "64Ki".` {
		t.Fatalf("Exceeded = %q, %v", msg, err)
	}
}

// TestHostTmpfs mounts real tmpfs volumes (root only) and tears them down.
func TestHostTmpfs(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	ctx := context.Background()
	m, _ := newTestManager(t, HostMounter{})
	pod := testPod(vol("shm", corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{Medium: corev1.StorageMediumMemory, SizeLimit: quantity("1Mi")}}))
	t.Cleanup(func() { _ = m.Teardown("uid-1") })
	if _, err := m.Setup(ctx, pod); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(m.Dir(), "uid-1/volumes/empty-dir/shm")
	if ok, err := (HostMounter{}).IsMountPoint(dir); err != nil || !ok {
		t.Fatalf("tmpfs not mounted: %v %v", ok, err)
	}
	// Setup again (an agent restart) does not mount a second tmpfs on it
	if err := os.WriteFile(filepath.Join(dir, "f"), []byte("kept"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Setup(ctx, pod); err != nil {
		t.Fatal(err)
	}
	if readFile(t, filepath.Join(dir, "f")) != "kept" {
		t.Fatal("a second Setup hid the volume's content")
	}
	// the size limit holds
	if err := os.WriteFile(filepath.Join(dir, "big"), make([]byte, 2<<20), 0o644); err == nil {
		t.Fatal("wrote 2 MiB into a 1 MiB tmpfs")
	}
	if err := m.Teardown("uid-1"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(m.Dir(), "uid-1")); !os.IsNotExist(err) {
		t.Fatalf("pod dir still there: %v", err)
	}
}

// TestTeardownRefusesForeignMount: a mount Teardown does not know of (here
// a tmpfs on a subdirectory, then a bind mount of a directory of the same
// filesystem, which has the same device) stops it from deleting anything.
func TestTeardownRefusesForeignMount(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	m, _ := newTestManager(t, HostMounter{})
	deep := filepath.Join(m.Dir(), "uid-1/volumes/empty-dir/cache/deeper")
	if err := os.MkdirAll(deep, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := (HostMounter{}).MountTmpfs(deep, 1<<20); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = (HostMounter{}).Unmount(deep) })
	if err := os.WriteFile(filepath.Join(deep, "precious"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := m.Teardown("uid-1"); err == nil || !strings.Contains(err.Error(), "still mounted") {
		t.Fatalf("Teardown = %v", err)
	}
	if readFile(t, filepath.Join(deep, "precious")) != "x" {
		t.Fatal("deleted through a mount")
	}
	if err := (HostMounter{}).Unmount(deep); err != nil {
		t.Fatal(err)
	}

	outside := t.TempDir()
	if err := os.WriteFile(filepath.Join(outside, "precious"), []byte("y"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(outside, deep, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(deep, unix.MNT_DETACH) })
	if err := m.Teardown("uid-1"); err == nil || !strings.Contains(err.Error(), "still mounted") {
		t.Fatalf("Teardown with a bind mount below = %v", err)
	}
	if readFile(t, filepath.Join(outside, "precious")) != "y" {
		t.Fatal("deleted through a bind mount")
	}
}
