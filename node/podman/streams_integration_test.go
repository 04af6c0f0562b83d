package podman

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/flotilla-dev/flotilla/internal/testkit"
	"github.com/flotilla-dev/flotilla/node/runtimeapi"
)

// execConmons returns the pids of the conmon processes of exec sessions in
// container id.
func execConmons(t *testing.T, id string) []int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil {
			continue
		}
		args := strings.Split(string(cmdline), "\x00")
		if !strings.HasSuffix(args[0], "conmon") || !bytes.Contains(cmdline, []byte("\x00--exec-attach\x00")) ||
			!bytes.Contains(cmdline, []byte("\x00-c\x00"+id+"\x00")) {
			continue
		}
		pids = append(pids, pid)
	}
	return pids
}

// runMain runs sb and waits until its container "main" runs; it returns
// the pod's and the container's IDs.
func runMain(ctx context.Context, t *testing.T, rt *Runtime, sb runtimeapi.PodSandbox) (podID, ctrID string) {
	t.Helper()
	podID, err := rt.RunPod(ctx, sb)
	if err != nil {
		t.Fatalf("RunPod: %v", err)
	}
	testkit.Eventually(t, "the container to run", 20*time.Second, func() error {
		st, err := rt.PodStatus(ctx, podID)
		if err != nil {
			return err
		}
		if c := st.Container("main"); c != nil && c.State == runtimeapi.ContainerRunning {
			ctrID = c.ID
			return nil
		}
		return fmt.Errorf("status %+v", st)
	})
	return podID, ctrID
}

// TestExecStream runs commands in a container the way `kubectl exec` and exec
// probes do, and checks that no exec session's conmon outlives the command by
// more than Podman's exit delay (300 s unless containers.conf says otherwise).
func TestExecStream(t *testing.T) {
	svc := startTestService(t)
	rt := svc.Runtime
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	sb := runtimeapi.PodSandbox{UID: fmt.Sprintf("uid-%d", time.Now().UnixNano()), Namespace: "default", Name: "execd", Hostname: "execd",
		Containers: []runtimeapi.ContainerSpec{{Name: "main", Image: BusyboxImage, Command: []string{"sleep", "3600"}}}}
	_, id := runMain(ctx, t, rt, sb)

	var out, errOut bytes.Buffer
	if err := rt.ExecStream(ctx, id, []string{"hostname"}, runtimeapi.StreamIO{Stdout: &out}); err != nil || out.String() != "execd\n" {
		t.Fatalf("exec hostname = %q, %v; want execd", out.String(), err)
	}
	out.Reset()
	err := rt.ExecStream(ctx, id, []string{"sh", "-c", "cat; echo oops >&2; exit 3"},
		runtimeapi.StreamIO{Stdin: strings.NewReader("hi\n"), Stdout: &out, Stderr: &errOut})
	if code, ok := errors.AsType[runtimeapi.ExitCodeError](err); !ok || code.Code != 3 || out.String() != "hi\n" || errOut.String() != "oops\n" {
		t.Fatalf("exec cat = stdout %q, stderr %q, %v; want hi, oops and exit code 3", out.String(), errOut.String(), err)
	}
	if code, err := rt.Exec(ctx, id, []string{"sh", "-c", "exit 4"}); err != nil || code != 4 {
		t.Fatalf("Exec = %d, %v; want 4", code, err)
	}
	if pids := execConmons(t, id); len(pids) == 0 {
		t.Fatal("no conmon of an exec session just after three execs: execConmons looks for the wrong processes")
	}
	testkit.Eventually(t, "the exec sessions' conmons to exit", time.Minute, func() error {
		if pids := execConmons(t, id); len(pids) > 0 {
			return fmt.Errorf("conmon processes %v of exec sessions still run", pids)
		}
		return nil
	})
}
