//go:build linux

package node

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"

	"github.com/flotilla-dev/flotilla/volumes"
)

// TestSubPathRemountedOnRestart: the agent gives the runtime the subPath's
// bind-mount target, not the path in the volume; before it restarts a
// crashed container it sets the subPath up again, so the restart gets the
// directory the subPath names now; and when a container of the pod planted
// a symlink there meanwhile, the container is not restarted but waits with
// CreateContainerConfigError naming the volume and the subPath.
func TestSubPathRemountedOnRestart(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("subPath bind mounts need root")
	}
	pod := newPod("sub", corev1.Container{Name: "main", Image: testImage,
		VolumeMounts: []corev1.VolumeMount{{Name: "data", MountPath: "/logs", SubPath: "logs"}}})
	pod.Spec.Volumes = []corev1.Volume{volume("data", corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}})}
	s := newSyncHarness(t, pod)
	t.Cleanup(func() { // before the pod dir's TempDir is removed: never delete through a mount
		ms, _ := mountinfo.GetMounts(mountinfo.PrefixFilter(s.podDir))
		for i := len(ms) - 1; i >= 0; i-- {
			_ = unix.Unmount(ms[i].Mountpoint, unix.MNT_DETACH)
		}
	})
	s.rt.SetBehavior("main", FakeBehavior{ExitAfter: time.Second, ExitCode: 1})
	if st := s.sync(t); st.Phase != corev1.PodRunning {
		t.Fatalf("phase = %s", st.Phase)
	}
	podDir := filepath.Join(s.podDir, string(s.pod.UID))
	target := filepath.Join(podDir, "volume-subpaths/data/main/0")
	logs := filepath.Join(podDir, "volumes/empty-dir/data/logs")
	if got := runtimeSpec(t, s.rt).Containers[0].Mounts; len(got) != 1 || got[0].Source != target {
		t.Fatalf("mounts = %+v, want the target %s", got, target)
	}
	same := func(a, b string) bool {
		sa, err1 := os.Stat(a)
		sb, err2 := os.Stat(b)
		return err1 == nil && err2 == nil && os.SameFile(sa, sb)
	}
	if !same(target, logs) {
		t.Fatal("the target is not the subPath's directory")
	}

	// A container of the pod replaces the directory; the container crashes
	// and is restarted on the new one.
	if err := os.Rename(logs, logs+".old"); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(logs, 0o777); err != nil {
		t.Fatal(err)
	}
	s.clk.Step(time.Second) // exits
	s.sync(t)
	s.clk.Step(10 * time.Second) // back-off over
	s.sync(t)
	if n := s.rt.CountCalls("StartContainer"); n != 1 {
		t.Fatalf("%d restarts, want 1", n)
	}
	if !same(target, logs) {
		t.Fatal("restarted on the old directory")
	}

	// Now a symlink to / where the directory was: no restart.
	if err := os.Remove(logs); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/", logs); err != nil {
		t.Fatal(err)
	}
	s.clk.Step(time.Second) // exits again
	s.sync(t)
	s.clk.Step(20 * time.Second)
	st := s.sync(t)
	if n := s.rt.CountCalls("StartContainer"); n != 1 {
		t.Fatalf("restarted through a symlink (%d starts)", n)
	}
	cs := st.ContainerStatuses[0]
	if w := cs.State.Waiting; w == nil || w.Reason != "CreateContainerConfigError" ||
		!strings.Contains(w.Message, `volume "data"`) || !strings.Contains(w.Message, "subPath logs") {
		t.Fatalf("state = %+v, want CreateContainerConfigError naming the volume and subPath", cs.State)
	}
	if same(target, "/") {
		t.Fatal("the host's / is mounted on the target")
	}
}

// TestDirUsageSkipsSubPathMounts: a pod's disk usage counts a file once,
// not again through the subPath bind mount that shows it (which has the
// same device), and never counts a hostPath's files mounted by subPath.
func TestDirUsageSkipsSubPathMounts(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("bind mounts need root")
	}
	dir := t.TempDir()
	vol := filepath.Join(dir, "volumes/empty-dir/v")
	target := filepath.Join(dir, volumes.SubPathsDir, "v/c/0")
	for _, d := range []string{vol, target} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(vol, "f"), make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(vol, target, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(target, unix.MNT_DETACH) })
	if got := dirUsage(dir); got < 1<<20 || got > 1<<20+256<<10 {
		t.Fatalf("usage = %d bytes, want the 1 MiB file once", got)
	}
}
