//go:build linux

package podman

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containers/podman/v4/pkg/bindings/containers"

	"github.com/flotilla-dev/flotilla/internal/testkit"
	"github.com/flotilla-dev/flotilla/node/runtimeapi"
)

// with0 is the connection context for direct bindings calls in tests.
func (r *Runtime) with0(ctx context.Context) context.Context {
	c, cancel := r.with(ctx)
	context.AfterFunc(ctx, cancel)
	return c
}

// startTestService starts a real Podman service with its own storage under
// t.TempDir(), with the busybox image loaded, or skips the test.
func startTestService(t *testing.T) *Service {
	t.Helper()
	return startTestServiceWith(t, func(*ServiceConfig) {})
}

// startTestServiceWith is startTestService with the config changed by set.
func startTestServiceWith(t *testing.T, set func(*ServiceConfig)) *Service {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("podman integration test needs root")
	}
	if _, err := exec.LookPath("podman"); err != nil {
		t.Skip("podman integration test needs podman (apt-get install podman runc busybox-static)")
	}
	if _, err := os.Stat(BusyboxBinary); err != nil {
		t.Skip("podman integration test needs busybox-static")
	}
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg := ServiceConfig{
		DataDir: dir + "/data", Root: dir + "/root", RunRoot: dir + "/runroot",
		StorageDriver: "vfs",
		Logger:        testkit.LoggerAt(t, slog.LevelInfo),
	}
	set(&cfg)
	svc, err := StartService(ctx, cfg)
	if err != nil {
		if b, rerr := os.ReadFile(dir + "/data/podman.log"); rerr == nil {
			t.Log(string(b))
		}
		t.Fatalf("StartService: %v", err)
	}
	t.Cleanup(func() {
		// remove everything this test's storage holds, then stop
		pods, _ := svc.Runtime.ListPods(context.Background())
		for _, p := range pods {
			_ = svc.Runtime.RemovePod(context.Background(), p.ID)
		}
		svc.Stop()
		killLeftovers(t, dir)
		if t.Failed() {
			if b, err := os.ReadFile(dir + "/data/podman.log"); err == nil {
				t.Log("podman.log:\n" + string(b))
			}
		}
	})
	if err := EnsureBusyboxImage(ctx, svc.Runtime, ""); err != nil {
		t.Fatalf("EnsureBusyboxImage: %v", err)
	}
	return svc
}

func TestRuntimeLifecycle(t *testing.T) {
	svc := startTestService(t)
	rt := svc.Runtime
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if v, err := rt.RuntimeVersion(ctx); err != nil || !strings.HasPrefix(v, "podman://") || len(v) < len("podman://4") {
		t.Fatalf("RuntimeVersion = %q, %v; want podman://VERSION", v, err)
	}

	uid := fmt.Sprintf("uid-%d", time.Now().UnixNano())
	sb := runtimeapi.PodSandbox{UID: uid, Namespace: "default", Name: "smoke", Hostname: "smoke",
		Containers: []runtimeapi.ContainerSpec{
			{Name: "main", Image: BusyboxImage, Command: []string{"sh", "-c"}, Args: []string{"echo hello $GREETING; hostname; sleep 3600"},
				Env: map[string]string{"GREETING": "world"}, MemoryBytes: 64 << 20, CPUMillis: 500},
			{Name: "quick", Image: BusyboxImage, Command: []string{"sh", "-c", "exit 3"}},
		}}
	start := time.Now()
	id, err := rt.RunPod(ctx, sb)
	if err != nil {
		t.Fatalf("RunPod: %v", err)
	}
	t.Logf("RunPod took %s", time.Since(start))

	list, err := rt.ListPods(ctx)
	if err != nil || len(list) != 1 || list[0].UID != uid || list[0].ID != id {
		t.Fatalf("ListPods = %+v, %v", list, err)
	}
	var st runtimeapi.PodStatus
	testkit.Eventually(t, "the quick container to exit", 20*time.Second, func() error {
		st, err = rt.PodStatus(ctx, id)
		if err != nil {
			t.Fatalf("PodStatus: %v", err)
		}
		if q := st.Container("quick"); q == nil || q.State != runtimeapi.ContainerExited {
			return fmt.Errorf("quick = %+v", q)
		}
		return nil
	})
	m, q := st.Container("main"), st.Container("quick")
	if m == nil || m.State != runtimeapi.ContainerRunning || m.StartedAt.IsZero() {
		t.Fatalf("main = %+v", m)
	}
	if q == nil || q.State != runtimeapi.ContainerExited || q.ExitCode != 3 || q.FinishedAt.IsZero() {
		t.Fatalf("quick = %+v", q)
	}
	in, err := containers.Inspect(rt.with0(ctx), m.ID, nil)
	if err != nil {
		t.Fatalf("inspect: %v", err)
	}
	if in.HostConfig.Memory != 64<<20 || in.HostConfig.CpuQuota != 50000 || in.HostConfig.CpuPeriod != 100000 {
		t.Fatalf("limits: memory %d, cpu %d/%d; want 64Mi, 50000/100000", in.HostConfig.Memory, in.HostConfig.CpuQuota, in.HostConfig.CpuPeriod)
	}
	var logs bytes.Buffer
	testkit.Eventually(t, "main's logs", 10*time.Second, func() error {
		logs.Reset()
		if err := rt.ContainerLogs(ctx, m.ID, runtimeapi.LogRequest{}, &logs); err != nil {
			t.Fatalf("ContainerLogs: %v", err)
		}
		if !strings.Contains(logs.String(), "hello world") || !strings.Contains(logs.String(), "smoke") {
			return fmt.Errorf("logs = %q, want hello world and smoke", logs.String())
		}
		return nil
	})
	if err := rt.StartContainer(ctx, q.ID); err != nil {
		t.Fatalf("StartContainer: %v", err)
	}
	if code, err := rt.Exec(ctx, m.ID, []string{"sh", "-c", "exit 4"}); err != nil || code != 4 {
		t.Fatalf("Exec = %d, %v", code, err)
	}
	start = time.Now()
	if err := rt.StopPod(ctx, id, time.Second); err != nil {
		t.Fatalf("StopPod: %v", err)
	}
	t.Logf("StopPod took %s", time.Since(start))
	if err := rt.RemovePod(ctx, id); err != nil {
		t.Fatalf("RemovePod: %v", err)
	}
	if _, err := rt.PodStatus(ctx, id); !errors.Is(err, runtimeapi.ErrNotFound) {
		t.Fatalf("PodStatus after remove: %v, want ErrNotFound", err)
	}
	if err := rt.RemovePod(ctx, id); err != nil {
		t.Fatalf("second RemovePod: %v", err)
	}
}

// killLeftovers kills the processes whose command line names dir: the
// conmon of an exec session lingers for its 300 s exit delay after the
// storage it belongs to is gone. Only this test's processes name its dir.
func killLeftovers(t *testing.T, dir string) {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cmdline, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err == nil && bytes.Contains(cmdline, []byte(dir+"/")) {
			t.Logf("killing leftover process %d: %s", pid, strings.ReplaceAll(string(cmdline[:min(len(cmdline), 80)]), "\x00", " "))
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// TestRemoveStopping: RemovePod while a StopPod is still
// waiting out the grace period of a container that ignores SIGTERM (an agent
// shutting down abandons its StopPod calls; Podman goes on with them) kills
// the container: Podman 4.3's forced `pod rm` alone drops the record of a
// "stopping" container and leaves its processes running.
func TestRemoveStopping(t *testing.T) {
	svc := startTestService(t)
	rt := svc.Runtime
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	sb := runtimeapi.PodSandbox{UID: fmt.Sprintf("uid-%d", time.Now().UnixNano()), Namespace: "default", Name: "stubborn",
		Containers: []runtimeapi.ContainerSpec{{Name: "main", Image: BusyboxImage,
			Command: []string{"sh", "-c", "while :; do sleep 1; done"}}}} // pid 1 ignores SIGTERM
	id, ctr := runMain(ctx, t, rt, sb)
	in, err := containers.Inspect(rt.with0(ctx), ctr, nil)
	if err != nil || in.State.Pid <= 0 {
		t.Fatalf("inspect: %v", err)
	}
	pid := in.State.Pid
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGKILL) }) // if the test fails

	stopCtx, abandon := context.WithCancel(ctx)
	stopped := make(chan error, 1)
	go func() { stopped <- rt.StopPod(stopCtx, id, time.Minute) }()
	testkit.Eventually(t, "the container to be stopping", 20*time.Second, func() error {
		in, err := containers.Inspect(rt.with0(ctx), ctr, nil)
		if err != nil {
			return err
		}
		if in.State.Status != "stopping" {
			return fmt.Errorf("state %s", in.State.Status)
		}
		return nil
	})
	abandon()
	<-stopped
	if err := rt.RemovePod(ctx, id); err != nil {
		t.Fatalf("RemovePod: %v", err)
	}
	testkit.Eventually(t, "the container's process to end", 20*time.Second, func() error {
		if err := syscall.Kill(pid, 0); err == nil {
			return fmt.Errorf("process %d of the removed pod still runs", pid)
		}
		return nil
	})
}
