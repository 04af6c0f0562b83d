//go:build !linux

package volumes

import (
	"errors"
	"os"
)

// DefaultMounter is the Mounter a Manager uses when none is given: off
// Linux, a FakeMounter (memory-backed volumes are plain directories).
func DefaultMounter() Mounter { return NewFakeMounter() }

func removeAllOneFilesystem(dir string) error { return os.RemoveAll(dir) }

func diskUsage(dir string) (int64, error) {
	return 0, errors.New("disk usage is measured on Linux only")
}
