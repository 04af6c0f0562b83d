//go:build linux

package volumes

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
)

// A subPath into a volume that containers can write (an emptyDir, a
// hostPath, a claim) is never handed to the runtime as a path: a container
// sharing the volume could swap one of its components for a symlink between
// our check and runc's bind mount, and get the host's / mounted
// (CVE-2017-1002101, CVE-2021-25741). As the kubelet does, the subPath is
// opened one component at a time from the volume's root without following
// symlinks (missing directories are made with mkdirat on the opened parent),
// and the opened file is bind-mounted through /proc/self/fd onto a target
// under the pod's dir, which no container can reach; the runtime gets that
// target.

// subPathTarget is where the subPath of volume mount index of container
// lives on the host: <pod dir>/volume-subpaths/<volume>/<container>/<index>.
func subPathTarget(podDir, volume, container string, index int) string {
	return filepath.Join(podDir, SubPathsDir, volume, container, fmt.Sprint(index))
}

// openSubPath opens sub (cleaned, relative) inside the directory base,
// component by component, never following a symlink. Missing components
// are created as directories of base's permission bits (as the kubelet
// does, so that an emptyDir's 0777 carries to its subPaths). The last
// component may be a file. It returns an O_PATH descriptor the caller
// closes. A symlink, "..", an absolute path or a component that is not a
// directory is a *ConfigError of volume.
func openSubPath(volume, base, sub string) (int, error) {
	if sub == "" || filepath.IsAbs(sub) {
		return -1, configErr(volume, "subPath %q must be a relative path inside the volume", sub)
	}
	parts := strings.Split(sub, "/")
	for _, p := range parts {
		if p == "" || p == "." || p == ".." {
			return -1, configErr(volume, "subPath %q must not contain '..', '.' or empty elements", sub)
		}
	}
	dir, err := unix.Open(base, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("volume %q: open %s: %w", volume, base, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(dir, &st); err != nil {
		unix.Close(dir)
		return -1, fmt.Errorf("volume %q: stat %s: %w", volume, base, err)
	}
	perm := st.Mode & 0o7777
	for i, name := range parts {
		last := i == len(parts)-1
		at := strings.Join(parts[:i+1], "/")
		fd, err := openNoFollow(dir, name, !last)
		if errors.Is(err, unix.ENOENT) {
			fd, err = makeSubDir(dir, name, perm)
		}
		unix.Close(dir)
		if err != nil {
			return -1, subPathOpenErr(volume, sub, at, err)
		}
		if err := unix.Fstat(fd, &st); err != nil {
			unix.Close(fd)
			return -1, fmt.Errorf("volume %q: subPath %s: stat %s: %w", volume, sub, at, err)
		}
		if st.Mode&unix.S_IFMT == unix.S_IFLNK { // O_PATH|O_NOFOLLOW opens the link itself
			unix.Close(fd)
			return -1, subPathOpenErr(volume, sub, at, unix.ELOOP)
		}
		dir = fd
	}
	return dir, nil
}

// makeSubDir makes the directory name in dir and returns it opened. The
// permission bits are set with fchmod on the opened directory, not by
// mkdirat's mode: the umask must not take bits away (an emptyDir's
// subdirectory stays 0777), and a chmod by name could follow a symlink
// planted in the meantime. A directory someone else made first is opened
// as it is.
func makeSubDir(dir int, name string, perm uint32) (int, error) {
	err := unix.Mkdirat(dir, name, 0o700)
	if errors.Is(err, unix.EEXIST) {
		return openNoFollow(dir, name, true)
	}
	if err != nil {
		return -1, err
	}
	fd, err := unix.Openat(dir, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	if err := unix.Fchmod(fd, perm); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// openNoFollow opens name in dir without following it if it is a symlink;
// wantDir refuses anything but a directory.
func openNoFollow(dir int, name string, wantDir bool) (int, error) {
	flags := unix.O_PATH | unix.O_NOFOLLOW | unix.O_CLOEXEC
	if wantDir {
		flags |= unix.O_DIRECTORY
	}
	for {
		fd, err := unix.Openat(dir, name, flags, 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		return fd, err
	}
}

func subPathOpenErr(volume, sub, at string, err error) error {
	switch {
	case errors.Is(err, unix.ELOOP):
		return configErr(volume, "subPath %s: %s is a symlink; a subPath must not go through symlinks (they could lead outside the volume)", sub, at)
	case errors.Is(err, unix.ENOTDIR):
		return configErr(volume, "subPath %s: %s is not a directory (it is a symlink or a file)", sub, at)
	}
	return fmt.Errorf("volume %q: subPath %s: open %s: %w", volume, sub, at, err)
}

// bindSubPath opens sub inside base safely and bind-mounts it on target,
// which it creates (a directory for a directory, a file for anything else)
// with its parents. A target already mounted is kept when it is the very
// file just opened, and unmounted first otherwise. It checks after
// mounting that target is that file.
func bindSubPath(volume, base, sub, target string) error {
	fd, err := openSubPath(volume, base, sub)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	var want unix.Stat_t
	if err := unix.Fstat(fd, &want); err != nil {
		return fmt.Errorf("volume %q: subPath %s: %w", volume, sub, err)
	}
	isDir := want.Mode&unix.S_IFMT == unix.S_IFDIR

	mounted, err := mountinfo.Mounted(target)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return fmt.Errorf("volume %q: subPath %s: %w", volume, sub, err)
	case mounted:
		if sameFile(target, &want) {
			return nil
		}
		if err := unmountAll(target); err != nil {
			return fmt.Errorf("volume %q: subPath %s: %w", volume, sub, err)
		}
	}
	if err := makeTarget(target, isDir); err != nil {
		return fmt.Errorf("volume %q: subPath %s: %w", volume, sub, err)
	}
	src := fmt.Sprintf("/proc/self/fd/%d", fd)
	if err := unix.Mount(src, target, "", unix.MS_BIND, ""); err != nil {
		if errors.Is(err, unix.ENOENT) { // the kernel does not bind a deleted directory
			return fmt.Errorf("volume %q: subPath %s was removed while it was being mounted (retried): %w", volume, sub, err)
		}
		return fmt.Errorf("volume %q: subPath %s: bind mount on %s: %w", volume, sub, target, err)
	}
	if !sameFile(target, &want) {
		_ = unmountAll(target)
		return fmt.Errorf("volume %q: subPath %s: %s is not the opened file after the bind mount", volume, sub, target)
	}
	return nil
}

// sameFile reports whether p is the file st describes.
func sameFile(p string, st *unix.Stat_t) bool {
	var got unix.Stat_t
	if err := unix.Stat(p, &got); err != nil {
		return false
	}
	return got.Dev == st.Dev && got.Ino == st.Ino
}

// makeTarget makes target a directory or an empty file (its parents
// directories) unless it is one; a target of the other type is replaced.
func makeTarget(target string, isDir bool) error {
	if err := os.MkdirAll(filepath.Dir(target), 0o750); err != nil {
		return err
	}
	info, err := os.Lstat(target)
	if err == nil && info.IsDir() == isDir && (isDir || info.Mode().IsRegular()) {
		return nil
	}
	if err == nil {
		if err := os.Remove(target); err != nil {
			return fmt.Errorf("replace mount target: %w", err)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if isDir {
		return os.Mkdir(target, 0o750)
	}
	f, err := os.OpenFile(target, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o640)
	if err != nil {
		return err
	}
	return f.Close()
}

// unmountAll unmounts target until nothing is mounted there (mounts may be
// stacked); a busy one is detached.
func unmountAll(target string) error {
	for range 64 {
		mounted, err := mountinfo.Mounted(target)
		if errors.Is(err, fs.ErrNotExist) || err == nil && !mounted {
			return nil
		}
		if err != nil {
			return err
		}
		if err := unix.Unmount(target, 0); err != nil {
			if !errors.Is(err, unix.EBUSY) {
				return fmt.Errorf("unmount %s: %w", target, err)
			}
			if err := unix.Unmount(target, unix.MNT_DETACH); err != nil {
				return fmt.Errorf("unmount %s: %w", target, err)
			}
		}
	}
	return fmt.Errorf("unmount %s: still mounted after 64 unmounts", target)
}

// cleanSubPaths unmounts and removes every subPath target under podDir.
func cleanSubPaths(podDir string) error {
	root := filepath.Join(podDir, SubPathsDir)
	var errs []error
	vols, err := os.ReadDir(root)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, v := range vols {
		ctrs, err := os.ReadDir(filepath.Join(root, v.Name()))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, c := range ctrs {
			targets, err := os.ReadDir(filepath.Join(root, v.Name(), c.Name()))
			if err != nil {
				errs = append(errs, err)
				continue
			}
			for _, t := range targets {
				if err := unmountAll(filepath.Join(root, v.Name(), c.Name(), t.Name())); err != nil {
					errs = append(errs, err)
				}
			}
		}
	}
	return errors.Join(errs...)
}

// mountsBelow lists what is mounted at or below dir.
func mountsBelow(dir string) ([]string, error) {
	real, err := filepath.EvalSymlinks(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	ms, err := mountinfo.GetMounts(mountinfo.PrefixFilter(real))
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(ms))
	for _, m := range ms {
		out = append(out, m.Mountpoint)
	}
	return out, nil
}

// mkdirAllNoFollow creates the missing directories of the absolute path p
// one at a time with mkdirat on the opened parent. Existing components are
// followed (the hostPath was chosen by the cluster's admission), but what
// it creates is opened without following symlinks, so that a symlink
// planted in place of a directory just made is refused, not followed.
func mkdirAllNoFollow(p string, perm uint32) error {
	if !filepath.IsAbs(p) {
		return fmt.Errorf("%s is not an absolute path", p)
	}
	dir, err := unix.Open("/", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	created := false
	for _, name := range strings.Split(strings.TrimPrefix(filepath.Clean(p), "/"), "/") {
		if name == "" {
			continue
		}
		var fd int
		if !created {
			fd, err = unix.Openat(dir, name, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		}
		if created || errors.Is(err, unix.ENOENT) {
			if err = unix.Mkdirat(dir, name, perm); err == nil || errors.Is(err, unix.EEXIST) {
				created = true
				fd, err = openNoFollow(dir, name, true)
			}
		}
		unix.Close(dir)
		if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) {
			return fmt.Errorf("create directory %s: %s is not a directory (a symlink appeared while it was created?)", p, name)
		}
		if err != nil {
			return fmt.Errorf("create directory %s: %s: %w", p, name, err)
		}
		dir = fd
	}
	unix.Close(dir)
	return nil
}

// createFileNoFollow creates the empty file p in its existing directory
// (opened by path) with O_EXCL|O_NOFOLLOW: an existing file is not an
// error, a symlink at p is never followed.
func createFileNoFollow(p string, perm uint32) error {
	dir, err := unix.Open(filepath.Dir(p), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(dir)
	fd, err := unix.Openat(dir, filepath.Base(p), unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, perm)
	if errors.Is(err, unix.EEXIST) {
		return nil
	}
	if err != nil {
		return err
	}
	return unix.Close(fd)
}
