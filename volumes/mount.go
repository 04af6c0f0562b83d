package volumes

import (
	"fmt"
	"path/filepath"
	"sync"
)

// Mounter mounts the tmpfs of memory-backed volumes. HostMounter uses the
// kernel (root only); FakeMounter only records, for tests. Implementations
// are safe for concurrent use.
type Mounter interface {
	// MountTmpfs mounts a tmpfs of sizeBytes (0: the kernel's default, half
	// the memory) on the existing directory dir.
	MountTmpfs(dir string, sizeBytes int64) error
	// Unmount unmounts what is mounted on dir.
	Unmount(dir string) error
	// IsMountPoint reports whether something is mounted on dir.
	IsMountPoint(dir string) (bool, error)
}

// FakeMounter is a Mounter that mounts nothing: it remembers which
// directories are "mounted" (and with which size). For tests that run
// without root.
type FakeMounter struct {
	mu     sync.Mutex
	mounts map[string]int64
}

var _ Mounter = (*FakeMounter)(nil)

// NewFakeMounter returns a FakeMounter with nothing mounted.
func NewFakeMounter() *FakeMounter { return &FakeMounter{mounts: map[string]int64{}} }

// MountTmpfs implements Mounter.
func (f *FakeMounter) MountTmpfs(dir string, sizeBytes int64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	dir = filepath.Clean(dir)
	if _, ok := f.mounts[dir]; ok {
		return fmt.Errorf("fake mount %s: already mounted", dir)
	}
	f.mounts[dir] = sizeBytes
	return nil
}

// Unmount implements Mounter.
func (f *FakeMounter) Unmount(dir string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	dir = filepath.Clean(dir)
	if _, ok := f.mounts[dir]; !ok {
		return fmt.Errorf("fake unmount %s: not mounted", dir)
	}
	delete(f.mounts, dir)
	return nil
}

// IsMountPoint implements Mounter.
func (f *FakeMounter) IsMountPoint(dir string) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, ok := f.mounts[filepath.Clean(dir)]
	return ok, nil
}

// Mounted returns the size of the tmpfs "mounted" on dir, and whether one is.
func (f *FakeMounter) Mounted(dir string) (int64, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	size, ok := f.mounts[filepath.Clean(dir)]
	return size, ok
}
