package lab

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/flotilla-dev/flotilla/netfabric"
)

// netnsDirHelperEnv makes the re-executed test binary run
// TestNetNSDirHelper's body instead of skipping it.
const netnsDirHelperEnv = "LAB_NETNSDIR_HELPER"

// TestNetNSDirStacked runs a lab while /run/netns starts as a plain
// directory and other tools stack mounts on it, each in a private mount
// namespace (the test binary re-executed under `unshare --mount
// --propagation private`, so the host's /run/netns is never changed): an
// up and down with `ip netns add` and a recursive bind of /run/netns over
// itself midway, and a lab down after a crash of a lab whose namespaces an
// older Flotilla mounted on the plain directory before `ip netns add`
// stacked a mount over them. Down must leave nothing: no namespace, file
// or mount, here or in the host's directory.
func TestNetNSDirStacked(t *testing.T) {
	needRoot(t)
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("ip not installed")
	}
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", "--", os.Args[0],
		"-test.run=^TestNetNSDirHelper$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), netnsDirHelperEnv+"=1")
	out, err := cmd.CombinedOutput()
	t.Logf("helper output:\n%s", out)
	// The namespaces' files are shared with the host: whatever the helper
	// left, remove it from here, and check there was nothing to remove.
	for _, line := range strings.Split(string(out), "\n") {
		if name, ok := strings.CutPrefix(strings.TrimSpace(line), "LAB NAME "); ok {
			if left := leftoverNetNS(name); len(left) > 0 {
				t.Errorf("lab %s left in the host's %s: %v", name, netnsDir, left)
			}
			if err := Cleanup(context.Background(), "", name, nil); err != nil {
				t.Errorf("cleanup of %s: %v", name, err)
			}
		}
	}
	if err != nil || !strings.Contains(string(out), "HELPER OK") {
		t.Fatalf("helper in a private mount namespace: %v", err)
	}
}

// TestNetNSDirHelper is the body of TestNetNSDirStacked; on its own it skips.
func TestNetNSDirHelper(t *testing.T) {
	if os.Getenv(netnsDirHelperEnv) == "" {
		t.Skip("helper for TestNetNSDirStacked")
	}
	ctx := context.Background()

	t.Run("up and down, mounts stacked midway", func(t *testing.T) {
		plainNetNSDir(t)
		cfg := testConfig(t, 2)
		fmt.Println("LAB NAME", cfg.Name)
		foreign := cfg.Name + "ip" // another tool's: not the lab's to remove
		t.Cleanup(func() { netfabric.DeleteNetNS(foreign) })
		spec := helperSpec(t, nthIP(cfg.Subnet, 254), nil)
		l, err := Up(ctx, cfg, spec)
		if err != nil {
			t.Fatalf("Up: %v", err)
		}
		nodes := l.Nodes()
		podNS(t, nodes[0].NetNSPrefix+"pod1") // an agent's pod
		shell(t, "ip", "netns", "add", foreign)
		podNS(t, nodes[1].NetNSPrefix+"pod2")
		shell(t, "mount", "--rbind", netnsDir, netnsDir)
		podNS(t, nodes[0].NetNSPrefix+"pod3")
		// The lab still works: the host reaches a node.
		if err := ping(net.JoinHostPort(nodes[1].IP.String(), agentPort), 5*time.Second); err != nil {
			t.Errorf("host to %s after the stacking: %v", nodes[1].Name, err)
		}
		procs := l.Processes()
		for _, n := range nodes {
			procs = append(procs, conmonPids(t, n)...)
		}
		if err := l.Down(ctx); err != nil {
			t.Fatalf("Down: %v", err)
		}
		assertGone(t, cfg, procs)
		assertNoMounts(t, cfg.Name+"-")
		if _, err := os.Stat(netnsDir + "/" + foreign); err != nil {
			t.Errorf("Down removed another tool's namespace %s: %v", foreign, err)
		}
	})

	t.Run("down after a crash, namespaces hidden under ip netns add's mount", func(t *testing.T) {
		plainNetNSDir(t)
		cfg := testConfig(t, 1)
		fmt.Println("LAB NAME", cfg.Name)
		foreign := cfg.Name + "ip"
		t.Cleanup(func() { netfabric.DeleteNetNS(foreign) })
		// What an older Flotilla left on the plain directory.
		for _, n := range []string{"-switch", "-node1", "-node1-pod1"} {
			p := netnsDir + "/" + cfg.Name + n
			if err := os.WriteFile(p, nil, 0o444); err != nil {
				t.Fatal(err)
			}
			shell(t, "unshare", "--net="+p, "true")
		}
		shell(t, "ip", "netns", "add", foreign) // stacks a mount over them
		if err := Cleanup(ctx, "", cfg.Name, testConfigLogger(t)); err != nil {
			t.Fatalf("Cleanup: %v", err)
		}
		if left := leftoverNetNS(cfg.Name); len(left) > 0 {
			t.Errorf("namespaces left: %v", left)
		}
		assertNoMounts(t, cfg.Name+"-")
	})
	if !t.Failed() {
		fmt.Println("HELPER OK")
	}
}

func testConfigLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// plainNetNSDir makes /run/netns a plain directory in this (private) mount
// namespace, as on a fresh machine.
func plainNetNSDir(t *testing.T) {
	t.Helper()
	for exec.Command("mountpoint", "-q", netnsDir).Run() == nil {
		shell(t, "umount", "-l", netnsDir)
	}
	if err := os.MkdirAll(netnsDir, 0o755); err != nil {
		t.Fatal(err)
	}
}

func podNS(t *testing.T, name string) {
	t.Helper()
	h, _, err := netfabric.EnsureNetNS(name)
	if err != nil {
		t.Fatal(err)
	}
	h.Close()
}

func shell(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
}

// assertNoMounts checks that nothing is mounted on /run/netns/<prefix>….
func assertNoMounts(t *testing.T, prefix string) {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 4 && strings.HasPrefix(f[4], netnsDir+"/"+prefix) {
			t.Errorf("mount left: %s", line)
		}
	}
}
