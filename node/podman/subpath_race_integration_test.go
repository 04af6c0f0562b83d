//go:build linux

package podman

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containers/podman/v4/libpod/define"
	"github.com/containers/podman/v4/pkg/bindings/containers"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/node/runtimeapi"
	"github.com/flotilla-dev/flotilla/volumes"
)

// subPathRaceStarts is how many times the victim container is started.
const subPathRaceStarts = 200

// TestSubPathSymlinkRace is CVE-2017-1002101 / CVE-2021-25741 on real
// Podman. Two containers share an emptyDir; the attacker swaps, as fast as
// busybox sh can (in bursts), the subPath's components between
// directories and symlinks: "a" to a host directory outside the volume that has a "b" in
// it, "a/b" to the host's /. The victim mounts subPath "a/b" and is started
// 200 times as the agent restarts a crash-looping container: the subPath
// mounts set up again (volumes.Pod.Mounts, what remountSubPaths calls),
// then StartContainer of the same runtime container. Each start checks for
// a marker with a unique name in the host's / and another in the outside
// directory: neither is ever visible, and nothing is ever created on the
// host outside the volume. Setups refused because a symlink was there at
// that moment are counted (CreateContainerConfigError for the agent), and
// so are starts that runc refuses because the attacker deleted the
// directory after it was mounted (RunContainerError for the agent).
func TestSubPathSymlinkRace(t *testing.T) {
	svc := startTestService(t)
	rt := svc.Runtime
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	u := randHex(t, 12)
	podDir := t.TempDir()
	t.Cleanup(func() { // a failed test must not leave mounts behind
		for _, m := range mountsUnder(t, podDir) {
			_ = (volumes.HostMounter{}).Unmount(m)
		}
	})
	rootMarker := "flotilla-subpath-race-root-" + u
	outsideMarker := "flotilla-subpath-race-outside-" + u
	if err := os.WriteFile("/"+rootMarker, []byte("host root"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Remove("/" + rootMarker) })
	outside := t.TempDir()
	if err := os.MkdirAll(filepath.Join(outside, "b"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(outside, "b", outsideMarker), []byte("outside"), 0o644); err != nil {
		t.Fatal(err)
	}
	rootBefore, outsideBefore := dirNames(t, "/"), dirTree(t, outside)

	vm, err := volumes.New(volumes.Config{Dir: podDir, Owner: "race-" + u, Objects: store.MemoryFor(t)})
	if err != nil {
		t.Fatal(err)
	}
	// Bursts of swaps, and between them the directory for up to 0.8 s so
	// that runc sometimes finds it still there and the victim runs.
	attack := `cd /v; while :; do
  mkdir -p a/b; touch a/b/inside; sleep 0.$((RANDOM % 9))
  for i in 1 2 3 4 5; do
    rm -rf a/b; ln -s / a/b; rm a/b; mkdir a/b
    rm -rf a; ln -s ` + outside + ` a; rm a; mkdir -p a/b
  done
done`
	victim := corev1.Container{Name: "victim", Image: BusyboxImage,
		Command:      sh(`[ -e /sub/` + rootMarker + ` ] && exit 42; [ -e /sub/` + outsideMarker + ` ] && exit 43; [ -e /sub/inside ] && exit 0; exit 1`),
		VolumeMounts: []corev1.VolumeMount{{Name: "shared", MountPath: "/sub", SubPath: "a/b"}}}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "race-" + u, Namespace: "default", UID: types.UID("race-" + u)},
		Spec: corev1.PodSpec{Volumes: []corev1.Volume{vol("shared", corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}})},
			Containers: []corev1.Container{
				{Name: "attacker", Image: BusyboxImage, Command: sh(attack), VolumeMounts: []corev1.VolumeMount{{Name: "shared", MountPath: "/v"}}},
				victim,
			}}}
	vp, err := vm.Setup(ctx, pod)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := vm.Teardown(string(pod.UID)); err != nil {
			t.Errorf("Teardown: %v", err)
		}
	})
	vdir := filepath.Join(podDir, string(pod.UID), "volumes/empty-dir/shared")
	if err := os.MkdirAll(filepath.Join(vdir, "a/b"), 0o777); err != nil {
		t.Fatal(err)
	}
	spec := func(c *corev1.Container) runtimeapi.ContainerSpec {
		t.Helper()
		mounts, err := vp.Mounts(c, nil)
		if err != nil {
			t.Fatalf("mounts of %s: %v", c.Name, err)
		}
		cs := runtimeapi.ContainerSpec{Name: c.Name, Image: c.Image, Command: c.Command}
		for _, m := range mounts {
			cs.Mounts = append(cs.Mounts, runtimeapi.Mount{Source: m.Source, Destination: m.Destination, ReadOnly: m.ReadOnly})
		}
		return cs
	}
	sb := runtimeapi.PodSandbox{UID: string(pod.UID), Namespace: pod.Namespace, Name: pod.Name, Hostname: "race"}
	victimSpec := spec(&victim) // before the attack starts: created as the agent creates it
	sb.Containers = []runtimeapi.ContainerSpec{spec(&pod.Spec.Containers[0])}
	podID, err := rt.RunPod(ctx, sb)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = rt.StopPod(context.Background(), podID, time.Second)
		_ = rt.RemovePod(context.Background(), podID)
	})
	victimID, err := rt.CreateContainer(ctx, podID, sb, victimSpec)
	if err != nil {
		t.Fatal(err)
	}

	var starts, refused, removed, gone, sawInside, sawNothing int
	began := time.Now()
	for starts < subPathRaceStarts {
		if ctx.Err() != nil {
			t.Fatalf("%d starts only (%d setups refused, %d failed): %v", starts, refused, removed, ctx.Err())
		}
		mounts, err := vp.Mounts(&victim, nil)
		var ce *volumes.ConfigError
		switch {
		case errors.As(err, &ce):
			refused++
		case errors.Is(err, fs.ErrNotExist): // removed between the open and the bind mount
			removed++
		}
		if ce != nil || errors.Is(err, fs.ErrNotExist) {
			time.Sleep(2 * time.Millisecond) // the agent would retry later; leave the CPU to the attacker
			continue
		}
		if err != nil {
			t.Fatalf("start %d: set up mounts: %v", starts, err)
		}
		if mounts[0].Source != victimSpec.Mounts[0].Source {
			t.Fatalf("mount source changed: %s, created with %s", mounts[0].Source, victimSpec.Mounts[0].Source)
		}
		starts++
		if err := rt.StartContainer(ctx, victimID); err != nil {
			// The attacker removed the directory after it was mounted on the
			// target: the mount pins it, but runc cannot bind a deleted
			// directory (ENOENT, or, when it notices the deleted path
			// first, "possibly malicious path detected"). The agent shows
			// RunContainerError and retries.
			if msg := err.Error(); !strings.Contains(msg, "no such file or directory") && !strings.Contains(msg, "possibly malicious path detected") {
				t.Fatalf("start %d: %v", starts, err)
			}
			gone++
			continue
		}
		code, err := containers.Wait(rt.Conn(), victimID, new(containers.WaitOptions).WithCondition([]define.ContainerStatus{define.ContainerStateExited}))
		if err != nil {
			t.Fatalf("start %d: wait: %v", starts, err)
		}
		switch code {
		case 0:
			sawInside++
		case 1:
			sawNothing++ // the directory between mkdir and touch, or the old one
		case 42:
			t.Fatalf("start %d: the victim saw the host's / through its subPath", starts)
		case 43:
			t.Fatalf("start %d: the victim saw a host directory outside the volume through its subPath", starts)
		default:
			t.Fatalf("start %d: victim exited %d", starts, code)
		}
	}
	took := time.Since(began)
	t.Logf("%d starts in %s (%s each); setups refused: %d (a symlink there), %d (the directory removed before the bind mount); starts refused by runc: %d (the directory removed since); the subPath's directory seen %d times (empty %d)",
		starts, took.Round(time.Millisecond), (took / time.Duration(starts)).Round(time.Millisecond), refused, removed, gone, sawInside, sawNothing)
	if st, err := rt.PodStatus(ctx, podID); err != nil || st.Container("attacker") == nil || st.Container("attacker").State != runtimeapi.ContainerRunning {
		t.Fatalf("the attacker is not running to the end: %+v %v", st, err)
	}
	if refused == 0 {
		t.Error("no setup was ever refused: did the attacker swap symlinks in?")
	}
	if sawInside == 0 {
		t.Error("the victim never saw the subPath's directory")
	}
	for _, n := range dirNames(t, "/") {
		if !slices.Contains(rootBefore, n) {
			t.Errorf("/%s appeared on the host during the test", n)
		}
	}
	if got := dirTree(t, outside); !slices.Equal(got, outsideBefore) {
		t.Errorf("the directory outside the volume changed: %v, was %v", got, outsideBefore)
	}
	if err := rt.StopPod(ctx, podID, time.Second); err != nil {
		t.Fatal(err)
	}
	if err := vm.Teardown(string(pod.UID)); err != nil {
		t.Fatal(err)
	}
	if left := mountsUnder(t, podDir); len(left) != 0 {
		t.Fatalf("mounts left after Teardown: %v", left)
	}
}

func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range es {
		out = append(out, e.Name())
	}
	return out
}

func dirTree(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		out = append(out, strings.TrimPrefix(p, dir))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}
