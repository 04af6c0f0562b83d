package mounts

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"golang.org/x/sys/unix"
)

// TestUnmountUnder: the mounts at and below a directory are listed deepest
// first, and all of them go, a mount under another included; mounts
// elsewhere (a sibling with the same prefix) stay.
func TestUnmountUnder(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount")
	}
	dir := t.TempDir()
	root, deep, sibling := filepath.Join(dir, "pods"), filepath.Join(dir, "pods", "a", "b"), filepath.Join(dir, "pods2")
	for _, d := range []string{root, sibling} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	mount := func(p string) {
		t.Helper()
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := unix.Mount("tmpfs", p, "tmpfs", 0, "size=1m"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = unix.Unmount(p, unix.MNT_DETACH) })
	}
	mount(root)
	mount(deep)
	mount(sibling)
	if got := Under(root); !slices.Equal(got, []string{deep, root}) {
		t.Errorf("Under(%s) = %q, want the deep mount, then the root", root, got)
	}
	if err := UnmountUnder(root); err != nil {
		t.Fatal(err)
	}
	if got := Under(root); len(got) != 0 {
		t.Errorf("after UnmountUnder: %q still mounted", got)
	}
	if got := Under(sibling); !slices.Equal(got, []string{sibling}) {
		t.Errorf("the sibling's mounts: %q, want it still mounted", got)
	}
}
