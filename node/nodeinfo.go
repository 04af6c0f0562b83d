package node

import (
	"bufio"
	"context"
	"os"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"

	"github.com/flotilla-dev/flotilla/node/runtimeapi"
)

// hostInfo is what the node reports of its machine, read once: the
// kernel, the OS image, the boot and machine IDs.
var hostInfo = sync.OnceValue(func() corev1.NodeSystemInfo {
	read := func(p string) string {
		b, err := os.ReadFile(p)
		if err != nil {
			return ""
		}
		return strings.TrimSpace(string(b))
	}
	return corev1.NodeSystemInfo{
		KernelVersion: read("/proc/sys/kernel/osrelease"),
		OSImage:       osImage("/etc/os-release"),
		BootID:        read("/proc/sys/kernel/random/boot_id"),
		MachineID:     read("/etc/machine-id"),
		SystemUUID:    read("/sys/class/dmi/id/product_uuid"),
	}
})

// osImage is os-release's PRETTY_NAME, as the kubelet reports it
// ("Debian GNU/Linux 12 (bookworm)"); "Unknown" without one.
func osImage(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return "Unknown"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "PRETTY_NAME="); ok {
			return strings.Trim(v, `"'`)
		}
	}
	return "Unknown"
}

// runtimeVersion is the runtime's reported version, asked until it
// answers once; "podman" until then.
func (a *Agent) runtimeVersion(ctx context.Context) string {
	if v := a.rtVersionOr(""); v != "" {
		return v
	}
	rv, ok := a.cfg.Runtime.(runtimeapi.RuntimeVersioner)
	if !ok {
		return "podman"
	}
	ctx, cancel := context.WithTimeout(ctx, a.cfg.RuntimeTimeout)
	defer cancel()
	v, err := rv.RuntimeVersion(ctx)
	if err != nil || v == "" {
		return "podman"
	}
	a.mu.Lock()
	a.rtVersion = v
	a.mu.Unlock()
	return v
}

// rtVersionOr is the runtime's version once known, else def.
func (a *Agent) rtVersionOr(def string) string {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.rtVersion == "" {
		return def
	}
	return a.rtVersion
}
