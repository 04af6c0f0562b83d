package lab

import (
	"os"
	"path/filepath"
	"testing"
)

// TestRemoveRuncState: a killed node's containers lose their runc state (as
// a reboot empties /run); other nodes' and other tools' containers keep it.
func TestRemoveRuncState(t *testing.T) {
	root, storage := t.TempDir(), "/var/lib/lab/node2/podman/root"
	state := map[string]string{
		"mine":      `{"id":"mine","config":{"rootfs":"` + storage + `/overlay/abc/merged"}}`,
		"neighbour": `{"id":"neighbour","config":{"rootfs":"` + storage + `-other/overlay/abc/merged"}}`,
		"other":     `{"id":"other","config":{"rootfs":"/var/lib/containers/storage/overlay/def/merged"}}`,
		"garbled":   `{"config":`,
	}
	for id, data := range state {
		if err := os.MkdirAll(filepath.Join(root, id), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, id, "state.json"), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(root, "no-state"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := removeRuncState(root, storage); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"mine", "neighbour", "other", "garbled", "no-state"} {
		_, err := os.Stat(filepath.Join(root, id))
		if gone := os.IsNotExist(err); gone != (id == "mine") {
			t.Errorf("%s: removed=%v, want %v", id, gone, id == "mine")
		}
	}
	if err := removeRuncState(filepath.Join(root, "absent"), storage); err != nil {
		t.Errorf("no runc root: %v", err)
	}
}
