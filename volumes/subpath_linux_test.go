//go:build linux

package volumes

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// unmountLeftovers detaches, at the end of the test and before dir's
// t.TempDir is removed (cleanups run last registered first), whatever is
// still mounted below dir. A test that failed with a bind mount left there
// would otherwise have TempDir's RemoveAll delete through it: a subPath
// bug that mounted /etc would empty the host's /etc.
func unmountLeftovers(t *testing.T, dir string) {
	t.Helper()
	if os.Geteuid() != 0 {
		return
	}
	t.Cleanup(func() {
		for range 100 {
			ms, err := mountsBelow(dir)
			if err != nil || len(ms) == 0 {
				return
			}
			slices.Sort(ms) // deepest last
			t.Errorf("still mounted at the end of the test: %s (detached)", ms[len(ms)-1])
			if err := syscall.Unmount(ms[len(ms)-1], syscall.MNT_DETACH); err != nil {
				t.Fatalf("cannot unmount %s: %v: remove %s by hand after unmounting", ms[len(ms)-1], err, dir)
			}
		}
	})
}

func uniqueName(t *testing.T) string {
	t.Helper()
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return "flotilla-subpath-test-" + hex.EncodeToString(b)
}

// assertSameFile fails unless a and b are the same file (device and inode).
func assertSameFile(t *testing.T, a, b string) {
	t.Helper()
	sa, err := os.Stat(a)
	if err != nil {
		t.Fatal(err)
	}
	sb, err := os.Stat(b)
	if err != nil {
		t.Fatal(err)
	}
	if !os.SameFile(sa, sb) {
		t.Fatalf("%s is not the same file as %s", a, b)
	}
}

// tree lists every path below dir (relative), for before/after comparisons.
func tree(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		out = append(out, rel)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// subPathPod is a pod of one container mounting the emptyDir "cache" by
// subPath sub; set up, with the volume's host directory.
func subPathPod(t *testing.T, m *Manager, uid string) (*Pod, string) {
	t.Helper()
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "default", UID: "x"},
		Spec: corev1.PodSpec{Volumes: []corev1.Volume{vol("cache", corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}})},
			Containers: []corev1.Container{{Name: "c"}}}}
	pod.UID = types.UID(uid)
	vp, err := m.Setup(context.Background(), pod)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := m.Teardown(uid); err != nil {
			t.Errorf("Teardown: %v", err)
		}
	})
	return vp, filepath.Join(m.Dir(), uid, "volumes/empty-dir/cache")
}

func mountSub(vp *Pod, sub string) ([]Mount, error) {
	return vp.Mounts(&corev1.Container{Name: "c", VolumeMounts: []corev1.VolumeMount{{Name: "cache", MountPath: "/x", SubPath: sub}}}, nil)
}

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("subPath bind mounts need root")
	}
}

// TestSubPathRefusesSymlinks plants a symlink at each component of a
// subPath, to / and to a directory outside the volume that has the rest of
// the path in it: every mount is refused with an error naming the volume
// and the subPath, nothing is mounted, and nothing is created outside the
// volume (on the host's / or in the other directory).
func TestSubPathRefusesSymlinks(t *testing.T) {
	needRoot(t)
	m, _ := newTestManager(t, NewFakeMounter())
	u := uniqueName(t)
	comps := []string{u + "-a", u + "-b", u + "-c"}
	sub := strings.Join(comps, "/")
	t.Cleanup(func() { // only if the test failed: the names are this test's own
		for _, c := range comps {
			_ = os.RemoveAll("/" + c)
		}
	})
	outside := t.TempDir()
	// outside holds every suffix of the subPath, so that a followed link
	// would succeed there
	for i := range comps {
		if err := os.MkdirAll(filepath.Join(outside, filepath.Join(comps[i:]...)), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	rootBefore, outsideBefore := names(t, "/"), tree(t, outside)
	n := 0
	for i := range comps {
		for _, to := range []string{"/", outside, filepath.Join(outside, "dangling")} {
			n++
			uid := "uid-" + string(rune('a'+n))
			vp, vdir := subPathPod(t, m, uid)
			if i > 0 {
				if err := os.MkdirAll(filepath.Join(vdir, filepath.Join(comps[:i]...)), 0o777); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.Symlink(to, filepath.Join(vdir, filepath.Join(comps[:i+1]...))); err != nil {
				t.Fatal(err)
			}
			_, err := mountSub(vp, sub)
			var ce *ConfigError
			if !errors.As(err, &ce) || ce.Volume != "cache" || !strings.Contains(err.Error(), "subPath "+sub) ||
				!strings.Contains(err.Error(), "is a symlink") {
				t.Errorf("link at %s → %s: err = %v, want a ConfigError of volume cache naming the subPath and the symlink", comps[i], to, err)
			}
			if ms, err := mountsBelow(filepath.Join(m.Dir(), uid)); err != nil || len(ms) != 0 {
				t.Errorf("link at %s → %s: mounted %v (%v)", comps[i], to, ms, err)
			}
		}
	}
	for _, n := range names(t, "/") {
		if !slices.Contains(rootBefore, n) {
			t.Errorf("/%s appeared on the host during the test", n)
		}
	}
	if got := tree(t, outside); !slices.Equal(got, outsideBefore) {
		t.Errorf("the directory outside changed: %v, was %v", got, outsideBefore)
	}
	for _, c := range comps {
		if _, err := os.Lstat("/" + c); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("/%s was created on the host", c)
		}
	}
}

// TestSubPathRefusesEscapes: "..", an absolute subPath, and a file in the
// middle of the path are refused (by the plan, and by openSubPath itself).
func TestSubPathRefusesEscapes(t *testing.T) {
	needRoot(t)
	m, _ := newTestManager(t, NewFakeMounter())
	vp, vdir := subPathPod(t, m, "uid-1")
	if err := os.WriteFile(filepath.Join(vdir, "file"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	for sub, want := range map[string]string{
		"../../..":      "'..'",
		"a/../../b":     "'..'",
		"/etc":          "relative",
		"file/deeper":   "is not a directory",
		"file/deeper/x": "is not a directory",
	} {
		_, err := mountSub(vp, sub)
		var ce *ConfigError
		if !errors.As(err, &ce) || ce.Volume != "cache" || !strings.Contains(err.Error(), want) {
			t.Errorf("subPath %q: err = %v, want a ConfigError with %q", sub, err, want)
		}
	}
	for _, sub := range []string{"..", "a/..", "/etc", "a//b", "./a", ""} {
		if fd, err := openSubPath("cache", vdir, sub); err == nil {
			syscall.Close(fd)
			t.Errorf("openSubPath(%q) accepted", sub)
		}
	}
	if got := tree(t, vdir); !slices.Equal(got, []string{".", "file"}) {
		t.Errorf("refused subPaths created %v", got)
	}
}

// TestSubPathMountsTheOpenedFile: a missing subPath is created (0777 in an
// emptyDir), an existing file is mounted on a file target, both are the
// very inode of the volume's; mounting again keeps one mount, and after a
// container replaced the directory the target follows the new one (the old
// mount is gone). Teardown unmounts and removes everything.
func TestSubPathMountsTheOpenedFile(t *testing.T) {
	needRoot(t)
	m, _ := newTestManager(t, NewFakeMounter())
	vp, vdir := subPathPod(t, m, "uid-1")
	if err := os.MkdirAll(filepath.Join(vdir, "conf"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(vdir, "conf/app.conf"), []byte("listen 80"), 0o644); err != nil {
		t.Fatal(err)
	}
	c := &corev1.Container{Name: "c", VolumeMounts: []corev1.VolumeMount{
		{Name: "cache", MountPath: "/data", SubPath: "new/deep/dir"},
		{Name: "cache", MountPath: "/etc/app.conf", SubPath: "conf/app.conf", ReadOnly: true},
	}}
	podDir := filepath.Join(m.Dir(), "uid-1")
	dirTarget, fileTarget := filepath.Join(podDir, "volume-subpaths/cache/c/0"), filepath.Join(podDir, "volume-subpaths/cache/c/1")
	mounts, err := vp.Mounts(c, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []Mount{{Source: dirTarget, Destination: "/data"}, {Source: fileTarget, Destination: "/etc/app.conf", ReadOnly: true}}
	if !slices.Equal(mounts, want) {
		t.Fatalf("mounts = %+v, want %+v", mounts, want)
	}
	for _, d := range []string{"new", "new/deep", "new/deep/dir"} {
		if info, err := os.Lstat(filepath.Join(vdir, d)); err != nil || !info.IsDir() || info.Mode().Perm() != 0o777 {
			t.Fatalf("%s: %v %v, want a directory 0777", d, info, err)
		}
	}
	assertSameFile(t, dirTarget, filepath.Join(vdir, "new/deep/dir"))
	assertSameFile(t, fileTarget, filepath.Join(vdir, "conf/app.conf"))
	if readFile(t, fileTarget) != "listen 80" {
		t.Fatal("the file target has not the file's content")
	}

	countMounts := func(p string) int {
		ms, err := mountsBelow(p)
		if err != nil {
			t.Fatal(err)
		}
		return len(ms)
	}
	if _, err := vp.Mounts(c, nil); err != nil {
		t.Fatal(err)
	}
	if n, m := countMounts(dirTarget), countMounts(fileTarget); n != 1 || m != 1 {
		t.Fatalf("mounting again: %d mounts on the directory target, %d on the file target", n, m)
	}
	// a container replaces the directory (and plants a link where it was)
	if err := os.Rename(filepath.Join(vdir, "new/deep/dir"), filepath.Join(vdir, "new/deep/old")); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(vdir, "new/deep/dir"), 0o777); err != nil {
		t.Fatal(err)
	}
	if _, err := vp.Mounts(c, nil); err != nil {
		t.Fatal(err)
	}
	assertSameFile(t, dirTarget, filepath.Join(vdir, "new/deep/dir"))
	if n := countMounts(dirTarget); n != 1 {
		t.Fatalf("after the directory changed: %d mounts on the target", n)
	}
	if err := os.Remove(filepath.Join(vdir, "new/deep/dir")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/", filepath.Join(vdir, "new/deep/dir")); err != nil {
		t.Fatal(err)
	}
	if _, err := vp.Mounts(c, nil); err == nil {
		t.Fatal("a symlink where the directory was was accepted")
	}

	if err := m.Teardown("uid-1"); err != nil {
		t.Fatal(err)
	}
	if n := countMounts(m.Dir()); n != 0 {
		t.Fatalf("%d mounts left after Teardown", n)
	}
	if _, err := os.Stat(podDir); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("pod dir still there: %v", err)
	}
}

// TestSubPathTargetAfterCrash: a target left mounted by an agent that
// crashed, on another file than the subPath names now, is unmounted before
// the new mount; one on the right file is kept.
func TestSubPathTargetAfterCrash(t *testing.T) {
	needRoot(t)
	m, _ := newTestManager(t, NewFakeMounter())
	vp, vdir := subPathPod(t, m, "uid-1")
	if err := os.MkdirAll(filepath.Join(vdir, "right"), 0o755); err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(m.Dir(), "uid-1/volume-subpaths/cache/c/0")
	if err := os.MkdirAll(target, 0o750); err != nil {
		t.Fatal(err)
	}
	wrong := t.TempDir()
	if err := syscall.Mount(wrong, target, "", syscall.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := mountSub(vp, "right"); err != nil {
		t.Fatal(err)
	}
	assertSameFile(t, target, filepath.Join(vdir, "right"))
	if ms, _ := mountsBelow(target); len(ms) != 1 {
		t.Fatalf("mounts on the target: %v", ms)
	}
}

// TestHostPathCreateDoesNotFollow: FileOrCreate and DirectoryOrCreate on a
// dangling symlink create nothing where it points; existing symlinked
// components of the path (as /var/run) are followed.
func TestHostPathCreateDoesNotFollow(t *testing.T) {
	dir, outside := t.TempDir(), t.TempDir()
	if err := os.Symlink(filepath.Join(outside, "file"), filepath.Join(dir, "f")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(outside, "dir"), filepath.Join(dir, "d")); err != nil {
		t.Fatal(err)
	}
	var ce *ConfigError
	if err := checkHostPath("v", filepath.Join(dir, "f"), corev1.HostPathFileOrCreate); !errors.As(err, &ce) {
		t.Errorf("FileOrCreate on a dangling link: %v", err)
	}
	if err := checkHostPath("v", filepath.Join(dir, "d"), corev1.HostPathDirectoryOrCreate); err == nil {
		t.Error("DirectoryOrCreate on a dangling link accepted")
	}
	if err := checkHostPath("v", filepath.Join(dir, "d", "deeper"), corev1.HostPathDirectoryOrCreate); err == nil {
		t.Error("DirectoryOrCreate through a dangling link accepted")
	}
	if got := tree(t, outside); !slices.Equal(got, []string{"."}) {
		t.Errorf("created outside: %v", got)
	}
	real := filepath.Join(outside, "real")
	if err := os.Mkdir(real, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(real, filepath.Join(dir, "run")); err != nil {
		t.Fatal(err)
	}
	if err := checkHostPath("v", filepath.Join(dir, "run/app/sock-dir"), corev1.HostPathDirectoryOrCreate); err != nil {
		t.Fatal(err)
	}
	if info, err := os.Stat(filepath.Join(real, "app/sock-dir")); err != nil || !info.IsDir() {
		t.Fatalf("DirectoryOrCreate under a symlinked directory: %v", err)
	}
}
