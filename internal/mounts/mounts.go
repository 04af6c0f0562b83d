// Package mounts finds and removes the mounts below a directory: the
// pods' tmpfs volumes that `flotilla down` removes, the container overlays
// and shm of a lab's Podman storage.
package mounts

import (
	"fmt"
	"sort"
	"strings"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
)

// Under lists the mount points at or below any of roots, deepest first.
// An unreadable mount table lists nothing.
func Under(roots ...string) []string {
	infos, err := mountinfo.GetMounts(func(in *mountinfo.Info) (skip, stop bool) {
		for _, r := range roots {
			if in.Mountpoint == r || strings.HasPrefix(in.Mountpoint, r+"/") {
				return false, false
			}
		}
		return true, false
	})
	if err != nil {
		return nil
	}
	out := make([]string, 0, len(infos))
	for _, in := range infos {
		out = append(out, in.Mountpoint)
	}
	sort.Slice(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out
}

// UnmountUnder lazily unmounts everything mounted at or below roots,
// deepest first, trying a few rounds (a mount may hide another), and
// names what is still mounted after them.
func UnmountUnder(roots ...string) error {
	for range 5 {
		mps := Under(roots...)
		if len(mps) == 0 {
			return nil
		}
		for _, mp := range mps {
			unix.Unmount(mp, unix.MNT_DETACH)
		}
	}
	if mps := Under(roots...); len(mps) > 0 {
		return fmt.Errorf("still mounted after unmounting: %s", strings.Join(mps, ", "))
	}
	return nil
}
