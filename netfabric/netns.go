package netfabric

// Named network namespaces under /run/netns, whatever /run/netns is.
//
// A named namespace is an nsfs bind mount on an empty file in NetNSDir.
// On a fresh machine NetNSDir is a plain directory; the first `ip netns
// add` (or Podman, or anything following iproute2) bind-mounts it over
// itself and marks it shared. Mounts made on the plain directory before
// that end up under the new mount: their path now reaches a copy (or
// nothing), so a plain unmount leaves the original behind (EINVAL) and the
// file cannot be removed (EBUSY).
//
// So, like iproute2's netns_add, EnsureNetNSDir makes NetNSDir a shared
// mount point before any namespace is mounted there, and DeleteNetNS works
// from /proc/self/mountinfo: it unmounts every copy stacked on the path,
// then reaches mounts hidden under a later stack from below (the
// directory opened by file handle in the mount that holds it) and unmounts
// them there. EnsureNetNS finds a hidden namespace the same way and mounts
// it again where it can be seen.
//
//	NetNSDir            EnsureNetNSDir              later `ip netns add`,
//	(missing, plain) ──▶ bind over itself, ──────▶  Podman: no new layer
//	                     make rshared               (it is a mount point)
//
//	mounts on the plain dir                      DeleteNetNS / EnsureNetNS:
//	by an older Flotilla ──▶ hidden under a ──▶  copies unmounted by path,
//	                         stacked mount        originals from below

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/moby/sys/mountinfo"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// NetNSDir is where named namespaces live (iproute2's convention, and the
// only place netns.NewNamed puts them).
const NetNSDir = "/run/netns"

// maxStack bounds the unmount loops: no sane host stacks more mounts than
// this on one namespace path.
const maxStack = 64

// dirMu serialises EnsureNetNSDir within the process; the flock on the
// directory serialises it with other Flotilla processes (a lab starts
// several agents at once, and two binds of a plain directory would stack).
var dirMu sync.Mutex

// EnsureNetNSDir makes NetNSDir exist and be a shared mount point, as
// iproute2's `ip netns add` does: mark it shared (recursively); if that
// fails because it is not a mount point, bind it over itself (recursively,
// so namespaces already mounted there stay visible) and mark it again.
// Shared, a namespace unmounted in one mount namespace is unmounted in its
// peers too, and a later recursive stack unmounts with it. It is cheap and
// idempotent; every namespace this package creates goes through it first.
func EnsureNetNSDir() error {
	dirMu.Lock()
	defer dirMu.Unlock()
	if err := os.MkdirAll(NetNSDir, 0o755); err != nil {
		return fmt.Errorf("creating %s: %w", NetNSDir, err)
	}
	fd, err := unix.Open(NetNSDir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("opening %s: %w", NetNSDir, err)
	}
	defer unix.Close(fd)
	if err := unix.Flock(fd, unix.LOCK_EX); err != nil {
		return fmt.Errorf("locking %s: %w", NetNSDir, err)
	}
	made := false
	for {
		err := unix.Mount("", NetNSDir, "none", unix.MS_SHARED|unix.MS_REC, "")
		if err == nil {
			return nil
		}
		if !errors.Is(err, unix.EINVAL) || made {
			return fmt.Errorf("making %s a shared mount point (mount --make-rshared %s): %w", NetNSDir, NetNSDir, err)
		}
		if err := unix.Mount(NetNSDir, NetNSDir, "none", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("making %s a mount point (mount --rbind %s %s): %w", NetNSDir, NetNSDir, NetNSDir, err)
		}
		made = true
	}
}

// isNetNS reports whether path is a mounted network namespace (and not, say,
// the empty file a crash between create and bind-mount leaves behind).
func isNetNS(path string) bool {
	var st unix.Statfs_t
	return unix.Statfs(path, &st) == nil && st.Type == unix.NSFS_MAGIC
}

// EnsureNetNS returns a handle on the named namespace (NetNSDir/NAME),
// creating it if needed; created says whether this call made it. A
// namespace hidden under a mount stacked on NetNSDir is found and mounted
// again on its visible path. The caller closes the handle. It leaves the
// calling goroutine's thread in the namespace it was in (the lab uses it
// for its node namespaces too).
func EnsureNetNS(name string) (h netns.NsHandle, created bool, err error) {
	if err := EnsureNetNSDir(); err != nil {
		return netns.None(), false, err
	}
	path := filepath.Join(NetNSDir, name)
	if isNetNS(path) {
		h, err := netns.GetFromPath(path)
		if err != nil {
			return netns.None(), false, fmt.Errorf("opening netns %s: %w", path, err)
		}
		return h, false, nil
	}
	if h, ok, err := exposeHidden(name); err != nil {
		return netns.None(), false, err
	} else if ok {
		return h, false, nil
	}
	// A leftover plain file (crash between create and mount) blocks O_EXCL.
	if _, err := os.Lstat(path); err == nil {
		if err := DeleteNetNS(name); err != nil {
			return netns.None(), false, fmt.Errorf("removing stale netns file: %w", err)
		}
	}
	// netns.NewNamed unshares the calling thread into the new namespace, so
	// do it on a locked thread of its own and switch back. If switching
	// back fails the thread stays locked and dies with its goroutine rather
	// than running other goroutines in the pod's namespace. netns.Get reads
	// this thread's namespace (/proc/<pid>/task/<tid>/ns/net), so an agent
	// running under nsenter returns to its node namespace, not the root one
	// (TestFabricUnderNsenter checks every thread afterwards).
	type result struct {
		h   netns.NsHandle
		err error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			done <- result{netns.None(), fmt.Errorf("getting the current netns: %w", err)}
			return
		}
		defer orig.Close()
		h, err := netns.NewNamed(name)
		if serr := netns.Set(orig); serr != nil {
			if err == nil {
				h.Close()
				DeleteNetNS(name)
			}
			done <- result{netns.None(), fmt.Errorf("returning to the host netns after creating %s: %w", name, serr)}
			return // thread stays locked: it is discarded
		}
		runtime.UnlockOSThread()
		if err != nil {
			if !isNetNS(path) {
				os.Remove(path)
			}
			done <- result{netns.None(), fmt.Errorf("creating netns %s: %w", path, err)}
			return
		}
		done <- result{h, nil}
	}()
	r := <-done
	return r.h, r.err == nil, r.err
}

// exposeHidden looks for the namespace name mounted under a mount stacked
// on NetNSDir; if there is one, it bind-mounts it on the visible path,
// unmounts the hidden original and returns a handle on it.
func exposeHidden(name string) (netns.NsHandle, bool, error) {
	path := filepath.Join(NetNSDir, name)
	mounts, err := readMountinfo()
	if err != nil {
		return netns.None(), false, err
	}
	for _, parent := range hiddenParents(mounts, path) {
		dfd, err := openDirBelow(mounts, parent)
		if err != nil {
			return netns.None(), false, fmt.Errorf("finding netns %s, hidden under a mount stacked on %s: %w", name, NetNSDir, err)
		}
		nsfd, err := unix.Openat(dfd, name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			unix.Close(dfd)
			return netns.None(), false, fmt.Errorf("opening netns %s hidden under a mount stacked on %s: %w", name, NetNSDir, err)
		}
		var sfs unix.Statfs_t
		if unix.Fstatfs(nsfd, &sfs) != nil || sfs.Type != unix.NSFS_MAGIC {
			unix.Close(nsfd)
			unix.Close(dfd)
			continue // something else is mounted there
		}
		f, err := os.OpenFile(path, os.O_CREATE|os.O_RDONLY, 0o444)
		if err == nil {
			f.Close()
			err = unix.Mount(fmt.Sprintf("/proc/self/fd/%d", nsfd), path, "none", unix.MS_BIND, "")
		}
		if err == nil {
			err = unmountAll(fmt.Sprintf("/proc/self/fd/%d/%s", dfd, name))
		}
		unix.Close(dfd)
		if err != nil {
			unix.Close(nsfd)
			return netns.None(), false, fmt.Errorf("mounting netns %s, hidden under a mount stacked on %s, on %s again: %w", name, NetNSDir, path, err)
		}
		return netns.NsHandle(nsfd), true, nil
	}
	return netns.None(), false, nil
}

// DeleteNetNS unmounts and removes a named namespace, wherever its mounts
// are: stacked on its path, or hidden under a mount stacked on NetNSDir. A
// missing one is fine. Processes still inside it (a container that was not
// stopped) keep it alive until they exit, but it is no longer reachable by
// name. It fails, naming what is left, if a mount or the file remains.
func DeleteNetNS(name string) error {
	if name == "" || strings.ContainsRune(name, '/') || name == "." || name == ".." {
		return fmt.Errorf("deleting netns %q: not a namespace name", name)
	}
	path := filepath.Join(NetNSDir, name)
	if err := unmountAll(path); err != nil {
		return fmt.Errorf("unmounting netns %s: %w", path, err)
	}
	mounts, err := readMountinfo()
	if err != nil {
		return fmt.Errorf("deleting netns %s: %w", path, err)
	}
	var errs []error
	for _, parent := range hiddenParents(mounts, path) {
		dfd, err := openDirBelow(mounts, parent)
		if err != nil {
			errs = append(errs, fmt.Errorf("netns %s is hidden under a mount stacked on %s and cannot be reached (%w); unmount what was stacked there (umount %s) and retry", path, NetNSDir, err, NetNSDir))
			continue
		}
		err = unmountAll(fmt.Sprintf("/proc/self/fd/%d/%s", dfd, name))
		if err == nil {
			if uerr := unix.Unlinkat(dfd, name, 0); uerr != nil && !errors.Is(uerr, unix.ENOENT) {
				err = fmt.Errorf("removing the hidden file: %w", uerr)
			}
		}
		unix.Close(dfd)
		if err != nil {
			errs = append(errs, fmt.Errorf("unmounting netns %s hidden under a mount stacked on %s: %w", path, NetNSDir, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing netns %s: %w", path, err)
	}
	if mounts, err := readMountinfo(); err == nil {
		if left := mountsAt(mounts, path); len(left) > 0 {
			return fmt.Errorf("deleting netns %s: %d mounts left there (mount ids %v)", path, len(left), mountIDs(left))
		}
	}
	return nil
}

// unmountAll lazily unmounts every mount stacked on path, top first, until
// nothing is mounted there (EINVAL) or path is gone.
func unmountAll(path string) error {
	for range maxStack {
		err := unix.Unmount(path, unix.MNT_DETACH)
		switch {
		case err == nil:
		case errors.Is(err, unix.EINVAL), errors.Is(err, unix.ENOENT):
			return nil
		default:
			return err
		}
	}
	return fmt.Errorf("still mounted after %d unmounts", maxStack)
}

// NetNSInode is the identity (nsfs inode) of the namespace mounted at path,
// even one hidden under a mount stacked on its directory; 0 if none.
// Processes in it have the same inode at /proc/PID/ns/net.
func NetNSInode(path string) uint64 {
	var s unix.Stat_t
	if isNetNS(path) && unix.Stat(path, &s) == nil {
		return s.Ino
	}
	mounts, err := readMountinfo()
	if err != nil {
		return 0
	}
	for _, m := range mountsAt(mounts, path) {
		if m.fstype != "nsfs" {
			continue
		}
		if v, ok := strings.CutPrefix(m.root, "net:["); ok {
			if ino, err := strconv.ParseUint(strings.TrimSuffix(v, "]"), 10, 64); err == nil {
				return ino
			}
		}
	}
	return 0
}

// ListNetNS lists the names in NetNSDir starting with prefix: files in the
// directory and namespaces mounted there, hidden ones included. Sorted.
func ListNetNS(prefix string) ([]string, error) {
	seen := map[string]bool{}
	ents, err := os.ReadDir(NetNSDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("listing %s: %w", NetNSDir, err)
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), prefix) {
			seen[e.Name()] = true
		}
	}
	mounts, err := readMountinfo()
	if err != nil {
		return nil, err
	}
	for _, m := range mounts {
		if filepath.Dir(m.point) == NetNSDir {
			if n := filepath.Base(m.point); strings.HasPrefix(n, prefix) {
				seen[n] = true
			}
		}
	}
	out := make([]string, 0, len(seen))
	for n := range seen {
		out = append(out, n)
	}
	sort.Strings(out)
	return out, nil
}

// mountEntry is one mount of /proc/self/mountinfo, as the namespace code
// needs it.
type mountEntry struct {
	id, parent int
	dev        string // major:minor
	root       string // path of the mount's root within its file system
	point      string // mount point
	fstype     string
	shared     bool // a peer group member ("shared:N")
}

// readMountinfo reads this process's mount table (moby/sys/mountinfo
// parses it, escapes included).
func readMountinfo() ([]mountEntry, error) {
	infos, err := mountinfo.GetMounts(nil)
	if err != nil {
		return nil, fmt.Errorf("reading the mount table: %w", err)
	}
	out := make([]mountEntry, 0, len(infos))
	for _, in := range infos {
		out = append(out, mountEntry{id: in.ID, parent: in.Parent, dev: fmt.Sprintf("%d:%d", in.Major, in.Minor),
			root: in.Root, point: in.Mountpoint, fstype: in.FSType,
			shared: strings.Contains(" "+in.Optional+" ", " shared:")})
	}
	return out, nil
}

func mountsAt(mounts []mountEntry, point string) []mountEntry {
	var out []mountEntry
	for _, m := range mounts {
		if m.point == point {
			out = append(out, m)
		}
	}
	return out
}

func mountIDs(ms []mountEntry) []int {
	ids := make([]int, len(ms))
	for i, m := range ms {
		ids[i] = m.id
	}
	return ids
}

func mountByID(mounts []mountEntry, id int) (mountEntry, bool) {
	for _, m := range mounts {
		if m.id == id {
			return m, true
		}
	}
	return mountEntry{}, false
}

// hiddenParents are the ids of the mounts holding the bottom of each stack
// of mounts at path that path no longer reaches (after unmountAll, all of
// them): the mounts of the directory under which they were made.
func hiddenParents(mounts []mountEntry, path string) []int {
	at := mountsAt(mounts, path)
	onPath := map[int]bool{}
	for _, m := range at {
		onPath[m.id] = true
	}
	var out []int
	seen := map[int]bool{}
	for _, m := range at {
		if !onPath[m.parent] && !seen[m.parent] {
			seen[m.parent] = true
			out = append(out, m.parent)
		}
	}
	return out
}

// openDirBelow opens NetNSDir as the mount with id parentID sees it, from
// below whatever is stacked on it since: the mount is opened at its own
// mount point, and the directory in it by file handle (a file handle
// names an inode of a file system; opened relative to a mount, it does
// not cross the mounts stacked on that directory). The caller closes the
// returned O_PATH descriptor. It works when the mount at parentID is still
// reachable at its mount point and the directory stacked on NetNSDir is
// the same directory (a bind of it over itself, as iproute2 and Podman
// make); a mount in between two stacked ones cannot be reached.
func openDirBelow(mounts []mountEntry, parentID int) (int, error) {
	p, ok := mountByID(mounts, parentID)
	if !ok {
		return -1, fmt.Errorf("mount %d is gone", parentID)
	}
	var rel string
	switch {
	case p.point == "/":
		rel = strings.TrimPrefix(NetNSDir, "/")
	case strings.HasPrefix(NetNSDir, p.point+"/"):
		rel = strings.TrimPrefix(NetNSDir, p.point+"/")
	default:
		return -1, fmt.Errorf("mount %d at %s is itself stacked on %s, under another", p.id, p.point, NetNSDir)
	}
	// Not O_PATH: open_by_handle_at refuses an O_PATH mount descriptor.
	pfd, err := unix.Open(p.point, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("opening %s: %w", p.point, err)
	}
	defer unix.Close(pfd)
	if id, err := mountIDOf(pfd); err != nil || id != p.id {
		return -1, fmt.Errorf("mount %d at %s is hidden under another mount (%s reaches mount %d, %v)", p.id, p.point, p.point, id, err)
	}
	handle, topID, err := unix.NameToHandleAt(unix.AT_FDCWD, NetNSDir, 0)
	if err != nil {
		return -1, fmt.Errorf("getting a file handle of %s: %w", NetNSDir, err)
	}
	top, ok := mountByID(mounts, topID)
	if !ok || top.dev != p.dev || filepath.Clean(top.root) != filepath.Join(p.root, rel) {
		return -1, fmt.Errorf("the mount on %s (%d) is not %s of mount %d bound over itself", NetNSDir, topID, NetNSDir, p.id)
	}
	dfd, err := unix.OpenByHandleAt(pfd, handle, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC)
	if err != nil {
		return -1, fmt.Errorf("opening %s in mount %d by file handle: %w", NetNSDir, p.id, err)
	}
	if id, err := mountIDOf(dfd); err != nil || id != p.id {
		unix.Close(dfd)
		return -1, fmt.Errorf("opened %s in mount %d, not %d (%v)", NetNSDir, id, p.id, err)
	}
	return dfd, nil
}

// mountIDOf is the id of the mount the descriptor fd is on.
func mountIDOf(fd int) (int, error) {
	var stx unix.Statx_t
	if err := unix.Statx(fd, "", unix.AT_EMPTY_PATH, unix.STATX_MNT_ID, &stx); err != nil {
		return 0, err
	}
	if stx.Mask&unix.STATX_MNT_ID == 0 {
		return 0, errors.New("the kernel does not report mount ids")
	}
	return int(stx.Mnt_id), nil
}
