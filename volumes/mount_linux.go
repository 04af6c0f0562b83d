//go:build linux

package volumes

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"
)

// HostMounter mounts with the kernel; it needs root (CAP_SYS_ADMIN).
type HostMounter struct{}

var _ Mounter = HostMounter{}

// MountTmpfs implements Mounter.
func (HostMounter) MountTmpfs(dir string, sizeBytes int64) error {
	opts := ""
	if sizeBytes > 0 {
		opts = fmt.Sprintf("size=%d", sizeBytes)
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, opts); err != nil {
		return fmt.Errorf("mount tmpfs on %s: %w", dir, err)
	}
	return nil
}

// Unmount implements Mounter; a busy mount is detached lazily.
func (HostMounter) Unmount(dir string) error {
	err := unix.Unmount(dir, 0)
	if errors.Is(err, unix.EBUSY) {
		err = unix.Unmount(dir, unix.MNT_DETACH)
	}
	if err != nil {
		return fmt.Errorf("unmount %s: %w", dir, err)
	}
	return nil
}

// IsMountPoint implements Mounter: dir is a mount point when it is on
// another device than its parent (true of every tmpfs).
func (HostMounter) IsMountPoint(dir string) (bool, error) {
	d, err := device(dir)
	if err != nil {
		return false, err
	}
	p, err := device(filepath.Dir(dir))
	if err != nil {
		return false, err
	}
	return d != p, nil
}

// DefaultMounter is the Mounter a Manager uses when none is given.
func DefaultMounter() Mounter { return HostMounter{} }

func device(p string) (uint64, error) {
	info, err := os.Lstat(p)
	if err != nil {
		return 0, err
	}
	st, ok := info.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, fmt.Errorf("stat %s: no device", p)
	}
	return uint64(st.Dev), nil
}

// removeAllOneFilesystem removes dir like os.RemoveAll, but refuses (and
// removes nothing) when anything below it is on another filesystem: a mount
// left there must never have its content deleted.
func removeAllOneFilesystem(dir string) error {
	root, err := device(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			return nil
		}
		dev, err := device(p)
		if err != nil {
			return err
		}
		if dev != root {
			return fmt.Errorf("refusing to remove %s: %s is another filesystem (still mounted)", dir, p)
		}
		return nil
	})
	if err != nil {
		return err
	}
	return os.RemoveAll(dir)
}

// diskUsage is the space the files under dir take (allocated blocks), on
// dir's filesystem only.
func diskUsage(dir string) (int64, error) {
	root, err := device(dir)
	if err != nil {
		return 0, err
	}
	var total int64
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) { // removed while walking
				return nil
			}
			return err
		}
		info, err := d.Info()
		if err != nil {
			return nil
		}
		st, ok := info.Sys().(*syscall.Stat_t)
		if !ok {
			return nil
		}
		if uint64(st.Dev) != root {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		total += st.Blocks * 512
		return nil
	})
	return total, err
}
