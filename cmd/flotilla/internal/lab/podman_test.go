package lab

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestPodmanNode runs a real Podman container on a node, from a Podman
// started inside the node's namespace, and checks that Kill stops it and
// Down removes its storage mounts.
func TestPodmanNode(t *testing.T) {
	needRoot(t)
	const image = "localhost/busybox:latest"
	if _, err := exec.LookPath("podman"); err != nil {
		t.Skip("no podman")
	}
	if err := exec.Command("podman", "image", "exists", image).Run(); err != nil {
		t.Skipf("no %s on the host", image)
	}
	ctx := context.Background()
	cfg := testConfig(t, 1)
	spec := helperSpec(t, nthIP(cfg.Subnet, 254), nil)
	spec.Agent = func(n Node) ProcessSpec {
		self, _ := os.Executable()
		return ProcessSpec{Args: []string{self}, Env: []string{helperEnv + "=sleep"}}
	}
	l, err := Up(ctx, cfg, spec)
	if err != nil {
		t.Fatalf("Up: %v", err)
	}
	if err := l.LoadImage(ctx, image); err != nil {
		t.Fatalf("LoadImage: %v", err)
	}
	n := l.Nodes()[0]
	conf := filepath.Join(n.DataDir, "containers.conf")
	os.WriteFile(conf, []byte("[containers]\ndefault_ulimits = [\"nofile=1024:1024\", \"nproc=1024:1024\"]\n[engine]\nruntime = \"runc\"\n"), 0o644)
	podmanIn := func(args ...string) (string, error) {
		cmd := exec.Command("nsenter", append([]string{"--net=" + n.NetNSPath, "--", "podman"}, append(n.PodmanArgs(), args...)...)...)
		cmd.Env = append(os.Environ(), "CONTAINERS_CONF="+conf)
		out, err := cmd.CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}
	for _, netw := range []string{"host", "none"} {
		if out, err := podmanIn("run", "-d", "--network", netw, image, "sleep", "1000"); err != nil {
			t.Fatalf("podman run --network %s: %v: %s", netw, err, out)
		}
	}
	ps := func() string {
		out, _ := exec.Command("sh", "-c", "ps -eo pid,args | grep '[s]leep 1000' | grep -v unshare").CombinedOutput()
		return strings.TrimSpace(string(out))
	}
	if got := ps(); strings.Count(got, "\n") != 1 {
		t.Fatalf("want 2 containers running, ps says:\n%s", got)
	}
	if err := l.Kill(ctx, n.Name); err != nil {
		t.Fatalf("Kill: %v", err)
	}
	if got := ps(); got != "" {
		t.Errorf("containers survived Kill:\n%s", got)
	}
	if err := l.Down(ctx); err != nil {
		t.Fatalf("Down: %v", err)
	}
	assertGone(t, cfg, nil)
	if m := mountsUnder(cfg.Dir, filepath.Join(runBase, cfg.Name)); len(m) > 0 {
		t.Errorf("mounts left: %v", m)
	}
	if out, _ := exec.Command("grep", "-rl", cfg.Dir, "/run/runc").CombinedOutput(); len(out) > 0 {
		t.Errorf("runc state left: %s", out)
	}
}
