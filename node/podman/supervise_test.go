//go:build linux

package podman

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containers/podman/v4/pkg/bindings/containers"

	"github.com/flotilla-dev/flotilla/internal/testkit"
	"github.com/flotilla-dev/flotilla/node/runtimeapi"
)

// eventLog collects what WatchEvents delivers.
type eventLog struct {
	mu     sync.Mutex
	events []runtimeapi.RuntimeEvent
}

func (l *eventLog) add(ev runtimeapi.RuntimeEvent) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.events = append(l.events, ev)
}

func (l *eventLog) has(uid, action string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, ev := range l.events {
		if ev.PodUID == uid && ev.Action == action {
			return true
		}
	}
	return false
}

// TestKill9 kills the Podman service with SIGKILL: the event stream breaks
// with an error naming the socket, the service is started again on the
// same socket, the Runtime answers again without a new connection, and the
// container that conmon kept running is still there, running, with its ID.
// Events stream again once re-subscribed.
func TestKill9(t *testing.T) {
	svc := startTestServiceWith(t, func(c *ServiceConfig) { c.RestartBackoff = 100 * time.Millisecond })
	rt := svc.Runtime
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	var evs eventLog
	subscribed := make(chan struct{}, 1)
	streamErr := make(chan error, 1)
	go func() {
		streamErr <- rt.WatchEvents(ctx, func() { subscribed <- struct{}{} }, evs.add)
	}()
	<-subscribed

	uid := fmt.Sprintf("uid-%d", time.Now().UnixNano())
	id, err := rt.RunPod(ctx, runtimeapi.PodSandbox{UID: uid, Namespace: "default", Name: "kept", Hostname: "kept",
		Containers: []runtimeapi.ContainerSpec{{Name: "main", Image: BusyboxImage, Command: []string{"sleep", "3600"}}}})
	if err != nil {
		t.Fatalf("RunPod: %v", err)
	}
	before, err := rt.PodStatus(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	testkit.EventuallyTrue(t, "the start event", 0, func() bool { return evs.has(uid, "start") })

	oldPid := svc.Pid()
	if err := syscall.Kill(oldPid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-streamErr:
		if err == nil || !strings.Contains(err.Error(), svc.Socket) {
			t.Fatalf("the stream ended with %v, want an error naming %s", err, svc.Socket)
		}
	case <-ctx.Done():
		t.Fatal("the event stream did not end when the service was killed")
	}
	testkit.Eventually(t, "the service restarted and answering", time.Minute, func() error {
		if svc.Restarts() < 1 {
			return errors.New("not restarted")
		}
		return rt.Ping(ctx)
	})
	if svc.Pid() == oldPid {
		t.Fatal("same pid after a restart")
	}
	if pid, err := os.ReadFile(filepath.Join(filepath.Dir(svc.Socket), "podman.pid")); err != nil || strings.TrimSpace(string(pid)) != strconv.Itoa(svc.Pid()) {
		t.Errorf("podman.pid = %q, %v; want the new pid %d", pid, err, svc.Pid())
	}
	after, err := rt.PodStatus(ctx, id)
	if err != nil {
		t.Fatalf("PodStatus after the restart: %v", err)
	}
	if b, a := before.Container("main"), after.Container("main"); a == nil || a.ID != b.ID || a.State != runtimeapi.ContainerRunning || !a.StartedAt.Equal(b.StartedAt) {
		t.Fatalf("container before %+v, after %+v: want the same one, still running", b, a)
	}

	// Events again after re-subscribing: an exit is seen.
	var evs2 eventLog
	go func() { _ = rt.WatchEvents(ctx, func() { subscribed <- struct{}{} }, evs2.add) }()
	<-subscribed
	if err := rt.StopPod(ctx, id, time.Second); err != nil {
		t.Fatal(err)
	}
	testkit.EventuallyTrue(t, "the died event after the restart", 0, func() bool { return evs2.has(uid, "died") })
}

// TestPingNamesTheSocket: a Runtime on a socket nobody serves says where it
// looked when pinged.
func TestPingNamesTheSocket(t *testing.T) {
	svc := startTestService(t)
	rt, err := New(context.Background(), RuntimeConfig{Socket: svc.Socket})
	if err != nil {
		t.Fatal(err)
	}
	svc.Stop()
	err = rt.Ping(context.Background())
	if err == nil || !strings.Contains(err.Error(), svc.Socket) {
		t.Fatalf("Ping of a stopped service = %v, want an error naming %s", err, svc.Socket)
	}
}

// TestChattyLog: a container that writes without pause keeps a
// log file no bigger than the cap, `logs` returns its latest lines, and a
// follow goes on across the cuts.
func TestChattyLog(t *testing.T) {
	svc := startTestService(t)
	const capBytes = 64 << 10
	rt, err := New(context.Background(), RuntimeConfig{Socket: svc.Socket, LogSizeMax: capBytes})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// ~90 bytes a line, 200 lines every 0.1 s: the cap is passed about 3 times a second.
	script := `i=0; while true; do j=0; while [ $j -lt 200 ]; do i=$((i+1)); j=$((j+1)); ` +
		`echo "line $i xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"; done; sleep 0.1; done`
	uid := fmt.Sprintf("uid-%d", time.Now().UnixNano())
	id, err := rt.RunPod(ctx, runtimeapi.PodSandbox{UID: uid, Namespace: "default", Name: "chatty", Hostname: "chatty",
		Containers: []runtimeapi.ContainerSpec{{Name: "main", Image: BusyboxImage, Command: []string{"sh", "-c", script}}}})
	if err != nil {
		t.Fatalf("RunPod: %v", err)
	}
	t.Cleanup(func() { _ = rt.RemovePod(context.Background(), id) })
	st, err := rt.PodStatus(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	ctr := st.Container("main").ID
	in, err := containers.Inspect(rt.with0(ctx), ctr, nil)
	if err != nil {
		t.Fatal(err)
	}
	logPath := in.HostConfig.LogConfig.Path
	if in.HostConfig.LogConfig.Type != "k8s-file" || logPath == "" {
		t.Fatalf("log config %+v, want a k8s-file", in.HostConfig.LogConfig)
	}

	// Follow from now on, across the cuts.
	pr, pw := io.Pipe()
	go func() {
		pw.CloseWithError(rt.ContainerLogs(ctx, ctr, runtimeapi.LogRequest{Follow: true, TailLines: ptr(int64(1))}, pw))
	}()
	followed := make(chan int, 1024)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			if n := lineNumber(sc.Text()); n > 0 {
				select {
				case followed <- n:
				default:
				}
			}
		}
	}()
	first := <-followed
	linesPerCut := capBytes / 90
	var last int
	testkit.Eventually(t, "the follow goes on across several cuts of the file", time.Minute, func() error {
		for {
			select {
			case n := <-followed:
				last = n
				continue
			default:
			}
			break
		}
		if last < first+4*linesPerCut {
			return fmt.Errorf("followed lines %d..%d", first, last)
		}
		return nil
	})
	fi, err := os.Stat(logPath)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() > capBytes {
		t.Fatalf("log file is %d bytes after ~%d lines, over the cap of %d", fi.Size(), last, capBytes)
	}
	var out bytes.Buffer
	if err := rt.ContainerLogs(ctx, ctr, runtimeapi.LogRequest{}, &out); err != nil {
		t.Fatalf("ContainerLogs: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if out.Len() > capBytes || len(lines) < 2 {
		t.Fatalf("logs returned %d bytes, %d lines", out.Len(), len(lines))
	}
	// What is kept is the latest output, in order.
	prev := 0
	for _, l := range lines {
		n := lineNumber(l)
		if n <= prev {
			t.Fatalf("logs out of order: line %d after %d", n, prev)
		}
		prev = n
	}
	if prev < last {
		t.Fatalf("logs end at line %d, but the follow already saw %d", prev, last)
	}
}

func lineNumber(l string) int {
	f := strings.Fields(l)
	if len(f) < 2 || f[0] != "line" {
		return 0
	}
	n, _ := strconv.Atoi(f[1])
	return n
}

func ptr[T any](v T) *T { return &v }
