//go:build linux

package podman

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"os"
	"time"

	"github.com/containers/podman/v4/pkg/bindings/images"
)

// BusyboxImage is the image EnsureBusyboxImage makes by default.
const BusyboxImage = "localhost/busybox:latest"

// BusyboxBinary is where busybox-static installs the static binary.
var BusyboxBinary = "/bin/busybox"

// busyboxApplets get a link to /bin/busybox in the image.
var busyboxApplets = []string{
	"sh", "ash", "httpd", "nc", "wget", "sleep", "cat", "echo", "ls", "env",
	"hostname", "ip", "ifconfig", "ps", "kill", "mkdir", "rm", "cp", "mv",
	"touch", "true", "false", "test", "[", "printf", "grep", "sed", "awk",
	"head", "tail", "date", "id", "whoami", "nslookup", "ping", "top", "df",
	"du", "chmod", "chown", "ln", "find", "xargs", "wc", "sort", "uniq",
	"tr", "cut", "tee", "yes", "seq", "uname", "mount", "dd", "vi", "less",
	"more", "stat", "timeout", "pwd", "basename", "dirname", "readlink",
	"tar", "tty", "stty", "cmp", "sha256sum", // kubectl cp runs tar
}

// EnsureBusyboxImage imports a busybox image under name (BusyboxImage if
// "") into the service's storage unless it is there: a root filesystem of
// the host's static /bin/busybox with applet links in /bin, minimal
// /etc/passwd and /etc/group, and a /www directory. No registry is needed.
func EnsureBusyboxImage(ctx context.Context, rt *Runtime, name string) error {
	if name == "" {
		name = BusyboxImage
	}
	ok, err := rt.ImageExists(ctx, name)
	if err != nil {
		return err
	}
	if ok {
		return nil
	}
	bin, err := os.ReadFile(BusyboxBinary)
	if err != nil {
		return fmt.Errorf("busybox image: read %s (apt-get install busybox-static): %w", BusyboxBinary, err)
	}
	rootfs, err := busyboxRootfs(bin)
	if err != nil {
		return fmt.Errorf("busybox image: %w", err)
	}
	c, cancel := rt.with(ctx)
	defer cancel()
	changes := []string{`CMD ["/bin/sh"]`, "ENV PATH=/bin:/sbin:/usr/bin:/usr/sbin"}
	opts := new(images.ImportOptions).WithReference(name).WithChanges(changes).WithMessage("flotilla busybox")
	if _, err := images.Import(c, bytes.NewReader(rootfs), opts); err != nil {
		return fmt.Errorf("busybox image: import %s: %w", name, err)
	}
	return nil
}

// busyboxRootfs returns the root filesystem tar.
func busyboxRootfs(bin []byte) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	now := time.Now()
	dirs := []string{"bin/", "sbin/", "usr/", "usr/bin/", "usr/sbin/", "etc/", "tmp/", "www/", "root/", "proc/", "sys/", "dev/", "var/", "var/www/", "run/"}
	for _, d := range dirs {
		mode := int64(0o755)
		if d == "tmp/" {
			mode = 0o1777
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d, Mode: mode, ModTime: now}); err != nil {
			return nil, err
		}
	}
	files := []struct {
		name string
		mode int64
		data []byte
	}{
		{"bin/busybox", 0o755, bin},
		{"etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")},
		{"etc/group", 0o644, []byte("root:x:0:\nnogroup:x:65534:\n")},
	}
	for _, f := range files {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: f.name, Mode: f.mode, Size: int64(len(f.data)), ModTime: now}); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.data); err != nil {
			return nil, err
		}
	}
	for _, a := range busyboxApplets {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: "bin/" + a, Linkname: "busybox", Mode: 0o777, ModTime: now}); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
