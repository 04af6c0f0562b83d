package lab

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"github.com/flotilla-dev/flotilla/netfabric"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
)

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the lab needs root")
	}
	for _, tool := range []string{"nsenter", "unshare"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s missing", tool)
		}
	}
}

// testConfig is a lab with a unique name and subnet, and a Cleanup that
// tears it down whatever happens.
func testConfig(t *testing.T, nodes int) Config {
	b := make([]byte, 3)
	rand.Read(b)
	name := "fl" + hex.EncodeToString(b[:2])
	cfg := Config{
		Dir:    filepath.Join(t.TempDir(), "lab"),
		Name:   name,
		Nodes:  nodes,
		Subnet: &net.IPNet{IP: net.IPv4(10, 97, b[2], 0).To4(), Mask: net.CIDRMask(24, 32)},
		Logger: slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	t.Cleanup(func() {
		if err := Cleanup(context.Background(), cfg.Dir, cfg.Name, nil); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	return cfg
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// helperSpec runs the echo server on serverIP and, unless agentArgs says
// otherwise, agents that reach it.
func helperSpec(t *testing.T, serverIP net.IP, agentArgs func(Node) []string) Spec {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return Spec{
		Server: ProcessSpec{Args: []string{self, net.JoinHostPort(serverIP.String(), serverPort)}, Env: []string{helperEnv + "=server"}},
		Agent: func(n Node) ProcessSpec {
			if agentArgs != nil {
				return ProcessSpec{Args: agentArgs(n)}
			}
			return ProcessSpec{Args: []string{self, n.IP.String(), serverIP.String(), n.DataDir}, Env: []string{helperEnv + "=agent"}}
		},
	}
}

// conmonPids are the "conmon" and "container" the agent of n left.
func conmonPids(t *testing.T, n Node) []Process {
	t.Helper()
	var b []byte
	for i := 0; i < 50; i++ {
		var err error
		if b, err = os.ReadFile(filepath.Join(n.DataDir, "pids")); err == nil && len(bytes.Fields(b)) == 2 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	var out []Process
	for _, f := range bytes.Fields(b) {
		pid, _ := strconv.Atoi(string(f))
		pi, ok := readProc(pid)
		if !ok {
			t.Fatalf("%s: helper pid %d is not running", n.Name, pid)
		}
		out = append(out, Process{Name: n.Name, PID: pid, StartTime: pi.start})
	}
	if len(out) != 2 {
		t.Fatalf("%s: no conmon/container pids: %q", n.Name, b)
	}
	return out
}

func running(t *testing.T, l *Lab, name string) bool {
	for _, p := range l.Processes() {
		if p.Name == name {
			return p.Running
		}
	}
	t.Fatalf("no process %s recorded", name)
	return false
}

// assertGone checks that nothing of the lab is left.
func assertGone(t *testing.T, cfg Config, procs []Process) {
	t.Helper()
	if left := leftoverNetNS(cfg.Name); len(left) > 0 {
		t.Errorf("namespaces left: %v", left)
	}
	if _, err := netlink.LinkByName(cfg.Name + "-host"); err == nil {
		t.Errorf("link %s-host left", cfg.Name)
	}
	for _, p := range procs {
		if p.alive() {
			t.Errorf("process %s (pid %d) still runs", p.Name, p.PID)
		}
	}
	for _, d := range []string{cfg.Dir, filepath.Join(runBase, cfg.Name)} {
		if _, err := os.Stat(d); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s still exists (%v)", d, err)
		}
	}
}

func TestLab(t *testing.T) {
	needRoot(t)
	ctx := context.Background()
	cfg := testConfig(t, 3)
	spec := helperSpec(t, nthIP(cfg.Subnet, 254), nil)
	l, err := Up(ctx, cfg, spec)
	if err != nil {
		t.Fatalf("Up: %v", err)
	}
	nodes := l.Nodes()
	if len(nodes) != 3 || !l.ServerIP().Equal(l.HostIP()) || l.HostIP().String() != nthIP(cfg.Subnet, 254).String() {
		t.Fatalf("nodes %v, host %s, server %s", nodes, l.HostIP(), l.ServerIP())
	}
	var conmons []Process
	for i, n := range nodes {
		if n.IP.String() != nthIP(cfg.Subnet, 11+i).String() || n.NetNS != cfg.Name+"-"+n.Name {
			t.Errorf("node %d: %+v", i, n)
		}
		var out bytes.Buffer
		if err := l.Exec(ctx, n.Name, []string{"ip", "-4", "-o", "addr", "show", "dev", "eth0"}, Stdio{Out: &out}); err != nil {
			t.Fatalf("Exec in %s: %v", n.Name, err)
		}
		if !strings.Contains(out.String(), n.IP.String()+"/24") {
			t.Errorf("%s: eth0 is %q, want %s", n.Name, out.String(), n.IP)
		}
		// Every node reaches the server and the other nodes.
		self, _ := os.Executable()
		args := []string{self, net.JoinHostPort(l.ServerIP().String(), serverPort)}
		for _, m := range nodes {
			args = append(args, net.JoinHostPort(m.IP.String(), agentPort))
		}
		cmd := exec.Command("nsenter", append([]string{"--net=" + n.NetNSPath, "--"}, args...)...)
		cmd.Env = append(os.Environ(), helperEnv+"=dial")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("from %s: %v: %s", n.Name, err, out)
		}
		// The host reaches every node.
		if err := ping(net.JoinHostPort(n.IP.String(), agentPort), 5*time.Second); err != nil {
			t.Errorf("host to %s: %v", n.Name, err)
		}
		conmons = append(conmons, conmonPids(t, n)...)
	}
	// The client namespace, outside the cluster, reaches every node.
	if l.ClientIP().String() != nthIP(cfg.Subnet, 253).String() || l.LBPool() != nthIP(cfg.Subnet, 192).String()+"-"+nthIP(cfg.Subnet, 252).String() || LBPool(cfg.Subnet) != l.LBPool() {
		t.Errorf("client %s, pool %s", l.ClientIP(), l.LBPool())
	}
	{
		self, _ := os.Executable()
		args := []string{self}
		for _, m := range nodes {
			args = append(args, net.JoinHostPort(m.IP.String(), agentPort))
		}
		cmd := exec.Command("nsenter", append([]string{"--net=/run/netns/" + cfg.Name + "-client", "--"}, args...)...)
		cmd.Env = append(os.Environ(), helperEnv+"=dial")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("from the client: %v: %s", err, out)
		}
	}
	procs := l.Processes()
	if len(procs) != 4 {
		t.Fatalf("recorded %d processes, want 4: %+v", len(procs), procs)
	}
	for _, p := range procs {
		if !p.Running || p.StartTime == 0 {
			t.Errorf("process %+v not running", p)
		}
	}
	serverLog, _ := os.ReadFile(filepath.Join(cfg.Dir, "logs", "server.log"))
	for _, n := range nodes {
		if !strings.Contains(string(serverLog), "connection from "+n.IP.String()) {
			t.Errorf("server log has no connection from %s:\n%s", n.Name, serverLog)
		}
	}

	// Kill node2 from "another process": a Lab opened from the state file.
	other, err := Open(cfg.Dir)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if err := other.Kill(ctx, "node2"); err != nil {
		t.Fatalf("Kill: %v", err)
	}
	if running(t, l, "node2") {
		t.Error("node2's agent survived Kill")
	}
	for _, p := range conmons[2:4] {
		if p.alive() {
			t.Errorf("node2's conmon/container pid %d survived Kill", p.PID)
		}
	}
	for _, p := range append(conmons[:2:2], conmons[4:]...) {
		if !p.alive() {
			t.Errorf("pid %d of another node died", p.PID)
		}
	}
	for _, name := range []string{"server", "node1", "node3"} {
		if !running(t, l, name) {
			t.Errorf("%s died with node2", name)
		}
	}
	if err := pingOnce(net.JoinHostPort(nodes[1].IP.String(), agentPort)); err == nil {
		t.Error("node2 still answers after Kill")
	}
	os.Remove(filepath.Join(nodes[1].DataDir, "pids"))
	if err := other.Start(ctx, "node2"); err != nil {
		t.Fatalf("Start: %v", err)
	}
	if err := other.Start(ctx, "node2"); err == nil {
		t.Error("a second Start of a running agent succeeded")
	}
	if err := ping(net.JoinHostPort(nodes[1].IP.String(), agentPort), 5*time.Second); err != nil {
		t.Errorf("node2 after Start: %v", err)
	}
	if !running(t, l, "node2") {
		t.Error("node2's agent is not recorded as running after Start")
	}
	conmons = append(conmons, conmonPids(t, nodes[1])...)

	all := append(l.Processes(), conmons...)
	if err := l.Down(ctx); err != nil {
		t.Fatalf("Down: %v", err)
	}
	assertGone(t, cfg, all)
	if err := l.Down(ctx); err != nil {
		t.Errorf("second Down: %v", err)
	}
	if _, err := Open(cfg.Dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Open after Down: %v, want ErrNotExist", err)
	}
}

func TestDownAfterCrash(t *testing.T) {
	needRoot(t)
	ctx := context.Background()
	cfg := testConfig(t, 2)
	spec := helperSpec(t, nthIP(cfg.Subnet, 1), nil)
	spec.Server.Namespace = "server" // and a server namespace of its own
	l, err := Up(ctx, cfg, spec)
	if err != nil {
		t.Fatalf("Up: %v", err)
	}
	if !l.ServerIP().Equal(nthIP(cfg.Subnet, 1)) {
		t.Errorf("server IP %s", l.ServerIP())
	}
	if err := ping(net.JoinHostPort(l.ServerIP().String(), serverPort), 5*time.Second); err != nil {
		t.Errorf("host to the server namespace: %v", err)
	}
	procs := l.Processes()
	for _, n := range l.Nodes() {
		procs = append(procs, conmonPids(t, n)...)
	}
	// A pod namespace the agent made, and a mount under Dir.
	podNS := l.Nodes()[0].NetNSPrefix + "pod1"
	if h, _, err := netfabric.EnsureNetNS(podNS); err != nil {
		t.Fatal(err)
	} else {
		h.Close()
	}
	mnt := filepath.Join(l.Nodes()[0].DataDir, "mnt")
	os.MkdirAll(mnt, 0o755)
	if out, err := exec.Command("mount", "-t", "tmpfs", "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Fatalf("mount: %v: %s", err, out)
	}
	l = nil // the crash: nothing but the state file is left

	if _, err := Up(ctx, cfg, spec); !errors.Is(err, ErrExists) {
		t.Errorf("Up over a lab: %v, want ErrExists", err)
	}
	l2, err := Open(cfg.Dir)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if err := l2.Down(ctx); err != nil {
		t.Fatalf("Down: %v", err)
	}
	assertGone(t, cfg, procs)
}

func TestUpFailsCleanly(t *testing.T) {
	needRoot(t)
	ctx := context.Background()
	cfg := testConfig(t, 2)
	spec := helperSpec(t, nthIP(cfg.Subnet, 254), func(n Node) []string { return []string{"/nonexistent/flotilla", "agent"} })
	if _, err := Up(ctx, cfg, spec); err == nil {
		t.Fatal("Up with a missing agent binary succeeded")
	} else {
		t.Log(err)
	}
	assertGone(t, cfg, nil)

	// Halfway: the namespaces and the server exist when the agents die.
	spec = helperSpec(t, nthIP(cfg.Subnet, 254), func(n Node) []string { return []string{"/bin/false"} })
	_, err := Up(ctx, cfg, spec)
	if err == nil || !strings.Contains(err.Error(), "exited right after starting") {
		t.Fatalf("Up with agents that exit: %v", err)
	}
	t.Log(err)
	assertGone(t, cfg, nil)
}

func TestLoadImage(t *testing.T) {
	needRoot(t)
	const image = "localhost/busybox:latest"
	if _, err := exec.LookPath("podman"); err != nil {
		t.Skip("no podman")
	}
	if err := exec.Command("podman", "image", "exists", image).Run(); err != nil {
		t.Skipf("no %s on the host", image)
	}
	ctx := context.Background()
	cfg := testConfig(t, 2)
	spec := helperSpec(t, nthIP(cfg.Subnet, 254), nil)
	spec.Agent = func(n Node) ProcessSpec {
		self, _ := os.Executable()
		return ProcessSpec{Args: []string{self}, Env: []string{helperEnv + "=sleep"}}
	}
	l, err := Up(ctx, cfg, spec)
	if err != nil {
		t.Fatalf("Up: %v", err)
	}
	if err := l.LoadImage(ctx, image, "node2"); err != nil {
		t.Fatalf("LoadImage: %v", err)
	}
	n, _ := l.Node("node2")
	if len(n.RunRoot) > 50 {
		t.Errorf("run root %s is longer than Podman allows", n.RunRoot)
	}
	out, err := exec.Command("podman", append(n.PodmanArgs(), "images", "--format", "{{.Repository}}:{{.Tag}}")...).CombinedOutput()
	if err != nil || !strings.Contains(string(out), image) {
		t.Errorf("node2's images: %v: %s", err, out)
	}
	if err := l.Down(ctx); err != nil {
		t.Fatalf("Down: %v", err)
	}
	assertGone(t, cfg, nil)
}
