package node

import (
	"context"
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
	"github.com/flotilla-dev/flotilla/node/runtimeapi"
)

func volume(name string, vs corev1.VolumeSource) corev1.Volume {
	return corev1.Volume{Name: name, VolumeSource: vs}
}

func cmVolume(name, configMap string) corev1.Volume {
	return volume(name, corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: configMap}}})
}

func runtimeSpec(t *testing.T, rt *FakeRuntime) runtimeapi.PodSandbox {
	t.Helper()
	pods, _ := rt.ListPods(context.Background())
	if len(pods) != 1 {
		t.Fatalf("runtime pods = %+v, want 1", pods)
	}
	sb, _ := rt.Spec(pods[0].ID)
	return sb
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestVolumesMountedAndRemovedWithThePod: every kind of volume reaches the
// runtime as a mount; deleting the pod removes its dir and tmpfs, never the
// hostPath.
func TestVolumesMountedAndRemovedWithThePod(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	if _, err := h.st.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "cfg", Namespace: "default"},
		Data: map[string]string{"app.conf": "v1"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.st.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "sec", Namespace: "default"},
		Data: map[string][]byte{"token": []byte("t")}}); err != nil {
		t.Fatal(err)
	}
	host := filepath.Join(t.TempDir(), "srv", "data")
	dirOrCreate := corev1.HostPathDirectoryOrCreate
	size := resource.MustParse("16Mi")
	p := newPod("vols")
	p.Spec.Volumes = []corev1.Volume{
		volume("cache", corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}),
		volume("shm", corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{Medium: corev1.StorageMediumMemory, SizeLimit: &size}}),
		volume("host", corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: host, Type: &dirOrCreate}}),
		cmVolume("cfg", "cfg"),
		volume("sec", corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "sec"}}),
	}
	p.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{
		{Name: "cache", MountPath: "/cache"},
		{Name: "shm", MountPath: "/dev/shm"},
		{Name: "host", MountPath: "/data", ReadOnly: true},
		{Name: "cfg", MountPath: "/etc/app.conf", SubPath: "app.conf"},
		{Name: "sec", MountPath: "/var/run/secrets/app"},
	}
	pod := createPod(t, h.st, p)
	h.run(t)
	testkit.EventuallyTrue(t, "pod Running", 0, func() bool { return phase(t, h.st, "vols") == corev1.PodRunning })

	podDir := filepath.Join(h.podDir, string(pod.UID))
	got := runtimeSpec(t, h.rt).Containers[0].Mounts
	want := []runtimeapi.Mount{
		{Source: filepath.Join(podDir, "volumes/empty-dir/cache"), Destination: "/cache"},
		{Source: filepath.Join(podDir, "volumes/empty-dir/shm"), Destination: "/dev/shm"},
		{Source: host, Destination: "/data", ReadOnly: true},
		{Source: filepath.Join(podDir, "volumes/configmap/cfg/app.conf"), Destination: "/etc/app.conf", ReadOnly: true},
		{Source: filepath.Join(podDir, "volumes/secret/sec"), Destination: "/var/run/secrets/app", ReadOnly: true},
	}
	if len(got) != len(want) {
		t.Fatalf("mounts = %+v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("mount %d = %+v, want %+v", i, got[i], want[i])
		}
	}
	if readFile(t, got[3].Source) != "v1" {
		t.Error("the subPath file has not the ConfigMap's content")
	}
	if size, ok := h.mounter.Mounted(filepath.Join(podDir, "volumes/empty-dir/shm")); !ok || size != 16<<20 {
		t.Fatalf("Memory emptyDir: tmpfs %d %v", size, ok)
	}
	if _, ok := h.mounter.Mounted(filepath.Join(podDir, "volumes/secret/sec")); !ok {
		t.Fatal("secret not on a tmpfs")
	}
	if err := os.WriteFile(filepath.Join(host, "keep"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}

	if _, err := h.st.Delete(ctx, "pods", "default", "vols", store.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	testkit.EventuallyTrue(t, "pod dir removed", 0, func() bool {
		_, err := os.Stat(podDir)
		return os.IsNotExist(err)
	})
	if _, ok := h.mounter.Mounted(filepath.Join(podDir, "volumes/empty-dir/shm")); ok {
		t.Fatal("tmpfs left mounted")
	}
	if readFile(t, filepath.Join(host, "keep")) != "x" {
		t.Fatal("hostPath data gone with the pod")
	}
}

// TestConfigMapVolumeUpdatedInPlace: a changed ConfigMap is rewritten into
// the running pod's volume at the next resync, without touching the
// containers.
func TestConfigMapVolumeUpdatedInPlace(t *testing.T) {
	p := newPod("cfg")
	p.Spec.Volumes = []corev1.Volume{cmVolume("cfg", "app")}
	p.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "cfg", MountPath: "/etc/app"}}
	s := newSyncHarness(t, p)
	ctx := context.Background()
	obj, err := s.st.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "app", Namespace: "default"}, Data: map[string]string{"k": "v1"}})
	if err != nil {
		t.Fatal(err)
	}
	if st := s.sync(t); st.Phase != corev1.PodRunning {
		t.Fatalf("phase %s", st.Phase)
	}
	file := filepath.Join(s.podDir, string(s.pod.UID), "volumes/configmap/cfg/k")
	if readFile(t, file) != "v1" {
		t.Fatal("initial content")
	}
	cm := obj.(*corev1.ConfigMap)
	cm.Data["k"] = "v2"
	if _, err := s.st.Update(ctx, cm); err != nil {
		t.Fatal(err)
	}
	s.clk.Step(5 * time.Second)
	s.sync(t)
	if readFile(t, file) != "v1" {
		t.Fatal("rewritten before the resync interval")
	}
	s.clk.Step(6 * time.Second)
	s.sync(t)
	if got := readFile(t, file); got != "v2" {
		t.Fatalf("after the resync: %q, want v2", got)
	}
	if n := s.rt.CountCalls("RunPod") + s.rt.CountCalls("StartContainer") + s.rt.CountCalls("RestartContainer") + s.rt.CountCalls("StopPod"); n != 1 {
		t.Fatalf("the containers were touched: %v", s.rt.Calls())
	}
}

// TestVolumeErrorsWaitAndRetry: a hostPath of the wrong type is a config
// error; an unbound claim waits; both start the pod once fixed.
func TestVolumeErrorsWaitAndRetry(t *testing.T) {
	ctx := context.Background()
	missing := filepath.Join(t.TempDir(), "missing")
	dirType := corev1.HostPathDirectory
	p := newPod("picky")
	p.Spec.Volumes = []corev1.Volume{
		volume("host", corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: missing, Type: &dirType}}),
		volume("data", corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "data"}}),
	}
	p.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "host", MountPath: "/host"}, {Name: "data", MountPath: "/data"}}
	s := newSyncHarness(t, p)
	waiting := func(st corev1.PodStatus) *corev1.ContainerStateWaiting {
		t.Helper()
		if st.Phase != corev1.PodPending || len(st.ContainerStatuses) != 1 || st.ContainerStatuses[0].State.Waiting == nil {
			t.Fatalf("status = %+v", st)
		}
		return st.ContainerStatuses[0].State.Waiting
	}
	w := waiting(s.sync(t))
	if w.Reason != "CreateContainerConfigError" || !strings.Contains(w.Message, "does not exist") || !strings.Contains(w.Message, missing) {
		t.Fatalf("waiting = %+v", w)
	}
	if err := os.Mkdir(missing, 0o755); err != nil {
		t.Fatal(err)
	}
	s.clk.Step(10 * time.Second)
	w = waiting(s.sync(t))
	if w.Reason != "ContainerCreating" || w.Message != "waiting for claim data: persistentvolumeclaim default/data not found" {
		t.Fatalf("waiting = %+v", w)
	}
	pvc, err := s.st.Create(ctx, &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: "data", Namespace: "default"}})
	if err != nil {
		t.Fatal(err)
	}
	s.clk.Step(10 * time.Second)
	if w = waiting(s.sync(t)); w.Message != "waiting for claim data to be bound" {
		t.Fatalf("waiting = %+v", w)
	}
	// The binder binds it to a provisioned local volume.
	dir := filepath.Join(t.TempDir(), "volumes", "n1", "pvc-1")
	if _, err := s.st.Create(ctx, &corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: "pvc-1",
		Annotations: map[string]string{"flotilla.dev/provisioned-dir": dir}},
		Spec: corev1.PersistentVolumeSpec{PersistentVolumeSource: corev1.PersistentVolumeSource{Local: &corev1.LocalVolumeSource{Path: dir}},
			ClaimRef: &corev1.ObjectReference{Namespace: "default", Name: "data", UID: pvc.GetUID()}}}); err != nil {
		t.Fatal(err)
	}
	c := pvc.(*corev1.PersistentVolumeClaim)
	c.Spec.VolumeName = "pvc-1"
	if _, err := s.st.Update(ctx, c); err != nil {
		t.Fatal(err)
	}
	s.clk.Step(10 * time.Second)
	if st := s.sync(t); st.Phase != corev1.PodRunning {
		t.Fatalf("not running once bound: %+v", st)
	}
	if m := runtimeSpec(t, s.rt).Containers[0].Mounts; len(m) != 2 || m[1].Source != dir || m[1].Destination != "/data" {
		t.Fatalf("mounts = %+v", m)
	}
	if info, err := os.Stat(dir); err != nil || !info.IsDir() {
		t.Fatalf("provisioned dir not created: %v", err)
	}
}

// TestEmptyDirSizeLimitEvicts: an emptyDir on disk over its sizeLimit fails
// the pod (Evicted) at the next resync, and it is not restarted.
func TestEmptyDirSizeLimitEvicts(t *testing.T) {
	limit := resource.MustParse("64Ki")
	p := newPod("hog")
	p.Spec.Volumes = []corev1.Volume{volume("scratch", corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{SizeLimit: &limit}})}
	p.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "scratch", MountPath: "/scratch"}}
	s := newSyncHarness(t, p)
	if st := s.sync(t); st.Phase != corev1.PodRunning {
		t.Fatalf("phase %s", st.Phase)
	}
	big := make([]byte, 256<<10)
	for i := range big {
		big[i] = byte(i)
	}
	if err := os.WriteFile(filepath.Join(s.podDir, string(s.pod.UID), "volumes/empty-dir/scratch/big"), big, 0o644); err != nil {
		t.Fatal(err)
	}
	s.clk.Step(11 * time.Second)
	st := s.sync(t)
	if st.Phase != corev1.PodFailed || st.Reason != "Evicted" || !strings.Contains(st.Message, `EmptyDir volume "scratch" exceeds the limit "64Ki"`) {
		t.Fatalf("status = %+v", st)
	}
	if s.rt.CountCalls("StopPod") != 1 {
		t.Fatalf("calls %v", s.rt.Calls())
	}
	if term := st.ContainerStatuses[0].State.Terminated; term == nil {
		t.Fatalf("container = %+v", st.ContainerStatuses[0].State)
	}
	for i := 0; i < 3; i++ {
		s.clk.Step(time.Minute)
		if st = s.sync(t); st.Phase != corev1.PodFailed {
			t.Fatalf("evicted pod came back: %+v", st)
		}
	}
	if s.rt.CountCalls("StartContainer") != 0 {
		t.Fatalf("evicted pod restarted: %v", s.rt.Calls())
	}
	// A new agent (restart) keeps it evicted.
	w2 := newPodWorker(s.a, getPod(t, s.st, "hog"))
	w2.offer([]string{s.w.podID()})
	w2.sync(context.Background())
	if st := getPod(t, s.st, "hog").Status; st.Phase != corev1.PodFailed || st.Reason != "Evicted" || s.rt.CountCalls("StartContainer") != 0 {
		t.Fatalf("after restart: %+v", st)
	}
}

// TestAdoptionKeepsVolumes: an agent restart sets the volumes up again
// without rewriting them: emptyDir content stays, API files are not
// swapped.
func TestAdoptionKeepsVolumes(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	if _, err := h.st.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "cfg", Namespace: "default"}, Data: map[string]string{"k": "v"}}); err != nil {
		t.Fatal(err)
	}
	p := newPod("keep")
	p.Spec.Volumes = []corev1.Volume{volume("cache", corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}), cmVolume("cfg", "cfg")}
	pod := createPod(t, h.st, p)
	_, stop := h.run(t)
	testkit.EventuallyTrue(t, "running", 0, func() bool { return phase(t, h.st, "keep") == corev1.PodRunning })
	vd := filepath.Join(h.podDir, string(pod.UID), "volumes")
	if err := os.WriteFile(filepath.Join(vd, "empty-dir/cache/state"), []byte("precious"), 0o644); err != nil {
		t.Fatal(err)
	}
	data, _ := os.Readlink(filepath.Join(vd, "configmap/cfg/..data"))
	stop()
	h.run(t)
	h.waitSyncs(t, 4) // several resyncs
	if readFile(t, filepath.Join(vd, "empty-dir/cache/state")) != "precious" {
		t.Fatal("emptyDir content lost on adoption")
	}
	if now, _ := os.Readlink(filepath.Join(vd, "configmap/cfg/..data")); now != data {
		t.Fatalf("configmap volume rewritten on adoption: %s, was %s", now, data)
	}
	if n := h.rt.CountCalls("RunPod"); n != 1 {
		t.Fatalf("RunPod %d times", n)
	}
}

// TestOrphanPodDirRemoved: a pod dir of this node whose pod is gone from
// both the store and the runtime is removed at resync; another node's is
// not.
func TestOrphanPodDirRemoved(t *testing.T) {
	h := newHarness(t)
	for uid, owner := range map[string]string{"gone-uid": "n1", "other-uid": "n2"} {
		dir := filepath.Join(h.podDir, uid, "volumes", "empty-dir", "x")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(h.podDir, uid, "owner"), []byte(owner), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	h.run(t)
	testkit.EventuallyTrue(t, "orphan dir removed", 0, func() bool {
		_, err := os.Stat(filepath.Join(h.podDir, "gone-uid"))
		return os.IsNotExist(err)
	})
	if _, err := os.Stat(filepath.Join(h.podDir, "other-uid")); err != nil {
		t.Fatalf("another node's dir removed: %v", err)
	}
}
