package host

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestTeardownNothingRunning: `flotilla down` on a data dir whose node
// made nothing on the host (or has removed it already) succeeds: no pods,
// no bridge, no rules are not errors; the pods' volumes go, the rest of
// the data dir stays. Needs root and podman (the node's own Podman
// service is started to list its pods).
func TestTeardownNothingRunning(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: Teardown starts a Podman service and removes network state")
	}
	if _, err := exec.LookPath("podman"); err != nil {
		t.Skip("needs podman")
	}
	dir := t.TempDir()
	s := Settings{PodCIDR: "10.244.250.0/24", Bridge: "flotd7", NetNSPrefix: "flotd7-", NFTable: "flotd7",
		PodmanRoot: filepath.Join(dir, "root"), PodmanRunRoot: filepath.Join(dir, "run"), PodmanDriver: "vfs"}
	if err := SaveSettings(dir, s); err != nil {
		t.Fatal(err)
	}
	vol := filepath.Join(dir, "pods", "uid1", "volumes", "data")
	if err := os.MkdirAll(vol, 0o755); err != nil {
		t.Fatal(err)
	}
	var said []string
	say := func(format string, args ...any) { said = append(said, format) }
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := Teardown(ctx, dir, time.Second, say); err != nil {
		t.Fatalf("Teardown of a node with nothing running: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "pods")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the pods' volumes are left (%v)", err)
	}
	if _, err := LoadSettings(dir); err != nil {
		t.Errorf("the settings went with the teardown: %v", err)
	}
	if len(said) != 1 || !strings.HasPrefix(said[0], "removing the pod network") {
		t.Errorf("said %q, want only the pod network's removal", said)
	}
}
