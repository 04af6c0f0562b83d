package volumes

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	corev1 "k8s.io/api/core/v1"
)

// checkHostPath applies a hostPath type to p, as the kubelet does: the
// *OrCreate types create what is missing (a directory 0755 with its
// parents; an empty file 0644 in an existing directory) one component at a
// time, never following a symlink in what they create (mkdirAllNoFollow,
// createFileNoFollow); the others require
// p to exist and be of that type. "" checks nothing, and creates a missing
// path as a directory, as the CRI runtimes (containerd, CRI-O) do: Podman
// would refuse to bind a missing path. A mismatch is a *ConfigError of
// volume.
func checkHostPath(volume, p string, t corev1.HostPathType) error {
	switch t {
	case corev1.HostPathUnset:
		if _, err := os.Lstat(p); errors.Is(err, fs.ErrNotExist) {
			if err := mkdirAllNoFollow(p, 0o755); err != nil {
				return fmt.Errorf("volume %q: %w", volume, err)
			}
		}
		return nil
	case corev1.HostPathDirectoryOrCreate:
		if _, err := os.Stat(p); errors.Is(err, fs.ErrNotExist) {
			if err := mkdirAllNoFollow(p, 0o755); err != nil {
				return fmt.Errorf("volume %q: %w", volume, err)
			}
		}
	case corev1.HostPathFileOrCreate:
		if _, err := os.Stat(p); errors.Is(err, fs.ErrNotExist) {
			err := createFileNoFollow(p, 0o644)
			if errors.Is(err, fs.ErrNotExist) {
				return configErr(volume, "hostPath type check failed: cannot create file %s: its directory does not exist", p)
			}
			if err != nil {
				return fmt.Errorf("volume %q: create file %s: %w", volume, p, err)
			}
		}
	}
	want, ok := map[corev1.HostPathType]struct {
		is   func(fs.FileMode) bool
		what string
	}{
		corev1.HostPathDirectoryOrCreate: {fs.FileMode.IsDir, "a directory"},
		corev1.HostPathDirectory:         {fs.FileMode.IsDir, "a directory"},
		corev1.HostPathFileOrCreate:      {fs.FileMode.IsRegular, "a file"},
		corev1.HostPathFile:              {fs.FileMode.IsRegular, "a file"},
		corev1.HostPathSocket:            {func(m fs.FileMode) bool { return m&fs.ModeSocket != 0 }, "a socket"},
		corev1.HostPathCharDev: {func(m fs.FileMode) bool {
			return m&fs.ModeDevice != 0 && m&fs.ModeCharDevice != 0
		}, "a character device"},
		corev1.HostPathBlockDev: {func(m fs.FileMode) bool {
			return m&fs.ModeDevice != 0 && m&fs.ModeCharDevice == 0
		}, "a block device"},
	}[t]
	if !ok {
		return configErr(volume, "hostPath type %q is not one of DirectoryOrCreate, Directory, FileOrCreate, File, Socket, CharDevice, BlockDevice", t)
	}
	info, err := os.Stat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return configErr(volume, "hostPath type check failed: %s does not exist (type %s wants %s)", p, t, want.what)
	}
	if err != nil {
		return fmt.Errorf("volume %q: stat %s: %w", volume, p, err)
	}
	if !want.is(info.Mode()) {
		return configErr(volume, "hostPath type check failed: %s is not %s (type %s)", p, want.what, t)
	}
	return nil
}
