package volumes

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

func TestCheckHostPath(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "s.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for _, tc := range []struct {
		path string
		typ  corev1.HostPathType
		err  string // "" ok; else a ConfigError with this
	}{
		{filepath.Join(dir, "unset/made"), corev1.HostPathUnset, ""},
		{file, corev1.HostPathUnset, ""},
		{filepath.Join(dir, "new/deep"), corev1.HostPathDirectoryOrCreate, ""},
		{file, corev1.HostPathDirectoryOrCreate, "is not a directory"},
		{dir, corev1.HostPathDirectory, ""},
		{filepath.Join(dir, "nothing"), corev1.HostPathDirectory, "does not exist"},
		{file, corev1.HostPathDirectory, "is not a directory"},
		{filepath.Join(dir, "newfile"), corev1.HostPathFileOrCreate, ""},
		{filepath.Join(dir, "nodir/newfile"), corev1.HostPathFileOrCreate, "its directory does not exist"},
		{dir, corev1.HostPathFileOrCreate, "is not a file"},
		{file, corev1.HostPathFile, ""},
		{dir, corev1.HostPathFile, "is not a file"},
		{sock, corev1.HostPathSocket, ""},
		{file, corev1.HostPathSocket, "is not a socket"},
		{"/dev/null", corev1.HostPathCharDev, ""},
		{file, corev1.HostPathCharDev, "is not a character device"},
		{"/dev/null", corev1.HostPathBlockDev, "is not a block device"},
		{dir, "Weird", "is not one of"},
	} {
		err := checkHostPath("v", tc.path, tc.typ)
		if tc.err == "" {
			if err != nil {
				t.Errorf("%s %s: %v", tc.typ, tc.path, err)
			}
			continue
		}
		var ce *ConfigError
		if !errors.As(err, &ce) || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%s %s: err = %v, want a ConfigError with %q", tc.typ, tc.path, err, tc.err)
		}
	}
	if info, err := os.Stat(filepath.Join(dir, "unset/made")); err != nil || !info.IsDir() {
		t.Errorf("a missing hostPath of no type was not created as a directory: %v", err)
	}
	if info, err := os.Stat(filepath.Join(dir, "new/deep")); err != nil || !info.IsDir() {
		t.Errorf("DirectoryOrCreate did not create: %v", err)
	}
	if info, err := os.Stat(filepath.Join(dir, "newfile")); err != nil || !info.Mode().IsRegular() {
		t.Errorf("FileOrCreate did not create: %v", err)
	}
}
