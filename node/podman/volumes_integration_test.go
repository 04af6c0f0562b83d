//go:build linux

package podman

import (
	"bufio"
	"bytes"
	"context"
	"log/slog"
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
	"github.com/flotilla-dev/flotilla/node"
	"github.com/flotilla-dev/flotilla/node/podnet"
	"github.com/flotilla-dev/flotilla/volumes"
)

// noNetwork gives pods no network (a private, empty namespace): these
// tests are about files.
type noNetwork struct{}

func (noNetwork) Setup(context.Context, podnet.PodRef) (podnet.PodNetwork, error) {
	return podnet.PodNetwork{}, nil
}
func (noNetwork) Teardown(context.Context, string) error { return nil }
func (noNetwork) Pods(context.Context) ([]string, error) { return nil, nil }

// mountsUnder lists the mount points below dir.
func mountsUnder(t *testing.T, dir string) []string {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fields := strings.Fields(sc.Text()); len(fields) > 4 && strings.HasPrefix(fields[4], dir+"/") {
			out = append(out, fields[4])
		}
	}
	return out
}

func sh(script string) []string { return []string{"sh", "-c", script} }

func vol(name string, vs corev1.VolumeSource) corev1.Volume {
	return corev1.Volume{Name: name, VolumeSource: vs}
}

// TestVolumesOnPodman runs pods with volumes through the agent on real
// Podman: an emptyDir (on disk and in memory) shared by two containers and
// gone with the pod, a hostPath DirectoryOrCreate, a configMap volume that
// changes in place in a running container, init containers preparing an
// emptyDir for the app, read-only mounts that refuse writes, and subPath
// mounts of one file and one directory.
func TestVolumesOnPodman(t *testing.T) {
	svc := startTestService(t)
	rt := svc.Runtime
	st := store.MemoryFor(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	nodeName := "vol-" + randHex(t, 6)
	podDir := t.TempDir()
	t.Cleanup(func() { // a failed test must not leave tmpfs mounts behind
		for _, m := range mountsUnder(t, podDir) {
			_ = (volumes.HostMounter{}).Unmount(m)
		}
	})
	hostDir := filepath.Join(t.TempDir(), "created", "by-agent")

	if _, err := st.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "app", Namespace: "default"},
		Data: map[string]string{"greeting": "v1", "app.conf": "listen 8080", "other.conf": "x"}}); err != nil {
		t.Fatal(err)
	}
	grace := int64(1)
	pod := func(name string, vols []corev1.Volume, ctrs ...corev1.Container) *corev1.Pod {
		for i := range ctrs {
			ctrs[i].Image, ctrs[i].ImagePullPolicy = BusyboxImage, corev1.PullNever
		}
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
			Spec: corev1.PodSpec{NodeName: nodeName, TerminationGracePeriodSeconds: &grace, Volumes: vols, Containers: ctrs}}
	}
	mem := resource.MustParse("8Mi")
	dirOrCreate := corev1.HostPathDirectoryOrCreate
	cfgVol := vol("cfg", corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "app"}}})
	mount := func(name, path string) corev1.VolumeMount { return corev1.VolumeMount{Name: name, MountPath: path} }

	shared := pod("shared", []corev1.Volume{
		vol("disk", corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}),
		vol("mem", corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{Medium: corev1.StorageMediumMemory, SizeLimit: &mem}}),
	},
		corev1.Container{Name: "writer", Command: sh("echo on-disk > /disk/msg; echo in-memory > /mem/msg; sleep 3600"),
			VolumeMounts: []corev1.VolumeMount{mount("disk", "/disk"), mount("mem", "/mem")}},
		corev1.Container{Name: "reader", Command: sh("until [ -f /disk/msg ] && [ -f /mem/msg ]; do sleep 0.1; done; cat /disk/msg /mem/msg; df /mem | tail -1; sleep 3600"),
			VolumeMounts: []corev1.VolumeMount{mount("disk", "/disk"), mount("mem", "/mem")}},
	)
	host := pod("host", []corev1.Volume{vol("h", corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: hostDir, Type: &dirOrCreate}})},
		corev1.Container{Name: "main", Command: sh("echo from-the-pod > /h/file; sleep 3600"), VolumeMounts: []corev1.VolumeMount{mount("h", "/h")}})
	config := pod("config", []corev1.Volume{cfgVol},
		corev1.Container{Name: "main", Command: sh("sleep 3600"), VolumeMounts: []corev1.VolumeMount{mount("cfg", "/cfg")}})
	initp := pod("init", []corev1.Volume{vol("work", corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}})},
		corev1.Container{Name: "app", Command: sh("cat /work/order; echo; cat /work/ready; sleep 3600"), VolumeMounts: []corev1.VolumeMount{mount("work", "/work")}})
	initp.Spec.InitContainers = []corev1.Container{
		{Name: "first", Image: BusyboxImage, ImagePullPolicy: corev1.PullNever, Command: sh("sleep 1; printf a >> /work/order"),
			VolumeMounts: []corev1.VolumeMount{mount("work", "/work")}},
		{Name: "second", Image: BusyboxImage, ImagePullPolicy: corev1.PullNever, Command: sh("printf b >> /work/order; echo initialized > /work/ready"),
			VolumeMounts: []corev1.VolumeMount{mount("work", "/work")}},
	}
	readonly := pod("readonly", []corev1.Volume{vol("scratch", corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}), cfgVol},
		corev1.Container{Name: "main", Command: sh(`for p in /rw /ro /cfg; do if touch $p/x 2>/dev/null; then echo "$p writable"; else echo "$p refused"; fi; done; sleep 3600`),
			VolumeMounts: []corev1.VolumeMount{mount("scratch", "/rw"), {Name: "scratch", MountPath: "/ro", ReadOnly: true}, mount("cfg", "/cfg")}})
	subpath := pod("subpath", []corev1.Volume{cfgVol, vol("data", corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}})},
		corev1.Container{Name: "main", Command: sh(`cat /etc/app.conf; echo; ls /etc | grep -c conf; touch /data/made-in-pod; ls /data; sleep 3600`),
			VolumeMounts: []corev1.VolumeMount{{Name: "cfg", MountPath: "/etc/app.conf", SubPath: "app.conf"}, {Name: "data", MountPath: "/data", SubPath: "sub/dir"}}})
	uids := map[string]string{}
	for _, p := range []*corev1.Pod{shared, host, config, initp, readonly, subpath} {
		obj, err := st.Create(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		uids[p.Name] = string(obj.GetUID())
	}

	a, err := node.New(node.Config{NodeName: nodeName, Store: st, Runtime: rt, Network: noNetwork{}, PodDir: podDir,
		SyncInterval: 500 * time.Millisecond, OrphanGracePeriod: time.Second,
		Logger: testkit.LoggerAt(t, slog.LevelInfo)})
	if err != nil {
		t.Fatal(err)
	}
	actx, acancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { _ = a.Run(actx); close(done) }()
	t.Cleanup(func() { acancel(); <-done })

	getPod := func(name string) *corev1.Pod {
		obj, err := st.Get(ctx, "pods", "default", name)
		if err != nil {
			t.Fatalf("get pod %s: %v", name, err)
		}
		return obj.(*corev1.Pod)
	}
	logsOf := func(pod, container string, want ...string) string {
		t.Helper()
		var buf bytes.Buffer
		testkit.EventuallyTrue(t, pod+"/"+container+" logs with "+strings.Join(want, ", "), 60*time.Second, func() bool {
			buf.Reset()
			if a.PodLogs(ctx, "default", pod, corev1.PodLogOptions{Container: container}, &buf) != nil {
				return false
			}
			for _, w := range want {
				if !strings.Contains(buf.String(), w) {
					return false
				}
			}
			return true
		})
		return buf.String()
	}
	runningID := func(name string) string {
		t.Helper()
		var id string
		testkit.EventuallyTrue(t, name+" Running", 60*time.Second, func() bool {
			p := getPod(name)
			if p.Status.Phase != corev1.PodRunning || len(p.Status.ContainerStatuses) == 0 || p.Status.ContainerStatuses[0].State.Running == nil {
				return false
			}
			id = strings.TrimPrefix(p.Status.ContainerStatuses[0].ContainerID, "podman://")
			return true
		})
		return id
	}

	// An emptyDir, on disk and in memory, shared by two containers.
	out := logsOf("shared", "reader", "on-disk", "in-memory")
	if !strings.Contains(out, "tmpfs") {
		t.Errorf("the Memory emptyDir is not a tmpfs in the container: %q", out)
	}
	if n := len(mountsUnder(t, filepath.Join(podDir, uids["shared"]))); n != 1 {
		t.Errorf("%d host mounts for the shared pod, want its one tmpfs", n)
	}

	// hostPath DirectoryOrCreate: created, and the pod's writes land there.
	testkit.EventuallyTrue(t, "the hostPath file", 60*time.Second, func() bool {
		b, err := os.ReadFile(filepath.Join(hostDir, "file"))
		return err == nil && string(b) == "from-the-pod\n"
	})

	// subPath: one file of the ConfigMap, one directory of the emptyDir.
	out = logsOf("subpath", "main", "listen 8080", "made-in-pod")
	if lines := strings.Split(out, "\n"); len(lines) < 2 || lines[1] != "1" {
		t.Errorf("/etc has %q *conf* entries, want only app.conf (output %q)", lines[1], out)
	}
	if _, err := os.Stat(filepath.Join(podDir, uids["subpath"], "volumes/empty-dir/data/sub/dir/made-in-pod")); err != nil {
		t.Errorf("subPath directory: %v", err)
	}

	// A configMap volume changes in place in the running container.
	cfgID := runningID("config")
	check := func(want string) func() bool {
		return func() bool {
			code, err := rt.Exec(ctx, cfgID, sh(`test "$(cat /cfg/greeting)" = `+want))
			return err == nil && code == 0
		}
	}
	testkit.EventuallyTrue(t, "greeting v1 in the container", 30*time.Second, check("v1"))
	obj, _ := st.Get(ctx, "configmaps", "default", "app")
	cm := obj.(*corev1.ConfigMap)
	cm.Data["greeting"] = "v2"
	cm.Data["app.conf"] = "listen 9090"
	if _, err := st.Update(ctx, cm); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	testkit.EventuallyTrue(t, "greeting v2 in the running container", 30*time.Second, check("v2"))
	t.Logf("configMap change seen in the container after %s", time.Since(start).Round(time.Millisecond))
	if p := getPod("config"); p.Status.ContainerStatuses[0].RestartCount != 0 ||
		strings.TrimPrefix(p.Status.ContainerStatuses[0].ContainerID, "podman://") != cfgID {
		t.Fatalf("the container was restarted or replaced: %+v", p.Status.ContainerStatuses[0])
	}

	// A file mounted by subPath stays as it was in the running container
	// (as with the kubelet), and a restart of the container (a liveness
	// failure) finds the new one rather than failing on the old one's path.
	subID := runningID("subpath")
	if code, err := rt.Exec(ctx, subID, sh(`grep -q 8080 /etc/app.conf`)); err != nil || code != 0 {
		t.Errorf("the subPath file changed in the running container (exit %d, %v)", code, err)
	}
	if err := rt.RestartContainer(ctx, subID, time.Second); err != nil {
		t.Fatalf("restart after the ConfigMap changed: %v", err)
	}
	logsOf("subpath", "main", "listen 9090")

	// Init containers ran in order, each to completion, before the app.
	logsOf("init", "app", "ab\ninitialized")
	ip := getPod("init")
	if len(ip.Status.InitContainerStatuses) != 2 {
		t.Fatalf("init statuses = %+v", ip.Status.InitContainerStatuses)
	}
	for _, cs := range ip.Status.InitContainerStatuses {
		if cs.State.Terminated == nil || cs.State.Terminated.Reason != "Completed" || !cs.Ready {
			t.Errorf("init container %s: %+v", cs.Name, cs.State)
		}
	}
	first, second := ip.Status.InitContainerStatuses[0].State.Terminated, ip.Status.InitContainerStatuses[1].State.Terminated
	if first != nil && second != nil && second.StartedAt.Before(&first.FinishedAt) {
		t.Errorf("second started at %s, before first finished at %s", second.StartedAt, first.FinishedAt)
	}

	// Read-only mounts refuse writes; the writable one takes them.
	logsOf("readonly", "main", "/rw writable", "/ro refused", "/cfg refused")

	// Deleting a pod removes its emptyDirs (and unmounts their tmpfs), but
	// never a hostPath's data.
	for _, name := range []string{"shared", "host"} {
		if _, err := st.Delete(ctx, "pods", "default", name, store.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	testkit.EventuallyTrue(t, "the shared pod's dir and tmpfs gone", 60*time.Second, func() bool {
		_, err := os.Stat(filepath.Join(podDir, uids["shared"]))
		return os.IsNotExist(err) && len(mountsUnder(t, filepath.Join(podDir, uids["shared"]))) == 0
	})
	testkit.EventuallyTrue(t, "the host pod gone from podman", 60*time.Second, func() bool {
		pods, err := rt.ListPods(ctx)
		if err != nil {
			return false
		}
		for _, p := range pods {
			if p.UID == uids["host"] {
				return false
			}
		}
		return true
	})
	if b, err := os.ReadFile(filepath.Join(hostDir, "file")); err != nil || string(b) != "from-the-pod\n" {
		t.Fatalf("hostPath data after the pod went: %q, %v", b, err)
	}
}
