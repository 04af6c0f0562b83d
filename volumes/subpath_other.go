//go:build !linux

package volumes

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

func subPathTarget(podDir, volume, container string, index int) string {
	return filepath.Join(podDir, SubPathsDir, volume, container, fmt.Sprint(index))
}

func bindSubPath(volume, base, sub, target string) error {
	return configErr(volume, "subPath %s: subPath mounts of writable volumes need Linux", sub)
}

func cleanSubPaths(string) error { return nil }

func mountsBelow(string) ([]string, error) { return nil, nil }

func mkdirAllNoFollow(p string, perm uint32) error { return os.MkdirAll(p, os.FileMode(perm)) }

func createFileNoFollow(p string, perm uint32) error {
	f, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY, os.FileMode(perm))
	if errors.Is(err, os.ErrExist) {
		return nil
	}
	if err != nil {
		return err
	}
	return f.Close()
}
