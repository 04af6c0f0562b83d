package netfabric

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/flotilla-dev/flotilla/node/podnet"
)

// netnsDirHelperEnv carries the fabric's names to the re-executed test
// binary that runs TestNetNSDirHelper.
const netnsDirHelperEnv = "FLOTILLA_NETFABRIC_NETNSDIR_HELPER"

type netnsDirHelperArgs struct {
	PodCIDR, ClusterCIDR, Bridge, StateDir, Prefix, Table string
}

// TestNetNSDirAnyHost runs pods through the real fabric (namespaces, veths,
// bridge) while /run/netns is a plain directory with namespaces mounted on
// it by an older Flotilla, while `ip netns add` stacks a mount over it
// midway, while another tool stacks a bind mount without copies over it,
// and while it is missing. Each happens in a private mount namespace (the
// test binary re-executed under `unshare --mount --propagation private`)
// so the host's /run/netns is never changed. Afterwards no namespace, file,
// mount or veth of the test may be left, in the helper's mount namespace
// and, checked here, in the host's directory.
func TestNetNSDirAnyHost(t *testing.T) {
	requireRoot(t)
	for _, tool := range []string{"unshare", "ip"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	tn := newTestNet(t, 24)
	// Whatever the helper leaves (it crashed, say), remove from here: the
	// records in StateDir name every namespace and veth.
	t.Cleanup(func() {
		f, err := New(tn.cfg)
		if err == nil {
			err = f.Destroy(context.Background())
		}
		if err != nil {
			t.Errorf("cleanup: %v", err)
		}
		left, _ := ListNetNS(tn.cfg.NetNSPrefix)
		for _, n := range left {
			DeleteNetNS(n)
		}
	})
	args, _ := json.Marshal(netnsDirHelperArgs{
		PodCIDR: tn.cfg.PodCIDR.String(), ClusterCIDR: tn.cfg.ClusterCIDR.String(),
		Bridge: tn.cfg.Bridge, StateDir: tn.cfg.StateDir, Prefix: tn.cfg.NetNSPrefix, Table: tn.cfg.NFTable,
	})
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", "--", os.Args[0],
		"-test.run=^TestNetNSDirHelper$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), netnsDirHelperEnv+"="+string(args))
	out, err := cmd.CombinedOutput()
	t.Logf("helper output:\n%s", out)
	if err != nil || !strings.Contains(string(out), "HELPER OK") {
		t.Fatalf("helper in a private mount namespace: %v", err)
	}
	if left, err := ListNetNS(tn.cfg.NetNSPrefix); err != nil || len(left) > 0 {
		t.Errorf("files left in the host's %s: %v (%v)", NetNSDir, left, err)
	}
	if _, err := netlink.LinkByName(tn.cfg.Bridge); err == nil {
		t.Errorf("bridge %s left", tn.cfg.Bridge)
	}
}

// TestNetNSDirHelper is the body of TestNetNSDirAnyHost, run in a private
// mount namespace; on its own it skips.
func TestNetNSDirHelper(t *testing.T) {
	env := os.Getenv(netnsDirHelperEnv)
	if env == "" {
		t.Skip("helper for TestNetNSDirAnyHost")
	}
	var a netnsDirHelperArgs
	if err := json.Unmarshal([]byte(env), &a); err != nil {
		t.Fatal(err)
	}
	_, pod, _ := net.ParseCIDR(a.PodCIDR)
	_, cluster, _ := net.ParseCIDR(a.ClusterCIDR)
	tn := testNet{cfg: Config{PodCIDR: pod, ClusterCIDR: cluster, Bridge: a.Bridge, StateDir: a.StateDir,
		NetNSPrefix: a.Prefix, NFTable: a.Table, Logger: discardLogger()}}
	f := tn.fabric(t)
	h := nsDirHelper{t: t, f: f, prefix: a.Prefix}
	// Remove what `ip netns add` made even when the test fails.
	t.Cleanup(func() {
		left, _ := ListNetNS(a.Prefix + "ip")
		for _, n := range left {
			DeleteNetNS(n)
		}
	})

	t.Run("plain dir, ip netns add midway", func(t *testing.T) {
		h.t = t
		h.plainDir()
		// An older Flotilla mounted pod A's namespace on the plain dir.
		inoA := h.oldNamed("a1")
		// Another tool makes /run/netns a mount point (iproute2 binds it
		// over itself, recursively): A's mount is now hidden under a copy.
		h.run("ip", "netns", "add", a.Prefix+"ip1")
		if n := len(mountsAt(h.mounts(), h.path("a1"))); n != 2 {
			t.Fatalf("setup: want a copy over a hidden mount at %s, found %d mounts", h.path("a1"), n)
		}
		h.setupSame("a1", inoA)
		h.setup("b1")
		h.run("ip", "netns", "add", a.Prefix+"ip2") // midway, with pods running
		h.setup("c1")
		h.run("ip", "netns", "del", a.Prefix+"ip1")
		h.run("ip", "netns", "del", a.Prefix+"ip2")
		for _, uid := range []string{"a1", "b1", "c1"} {
			h.teardown(uid)
		}
		h.assertClean()
	})

	t.Run("bind mount stacked without copies", func(t *testing.T) {
		h.t = t
		h.plainDir()
		inoA := h.oldNamed("a2")
		// A tool that binds /run/netns over itself without MS_REC hides
		// the namespace entirely: its path shows an empty file.
		h.run("mount", "--bind", NetNSDir, NetNSDir)
		if isNetNS(h.path("a2")) {
			t.Fatal("setup: the namespace is not hidden")
		}
		h.setupSame("a2", inoA)
		h.setup("b2")
		h.teardown("a2")
		h.teardown("b2")
		h.assertClean()
	})

	t.Run("shared mount point", func(t *testing.T) {
		h.t = t
		h.plainDir()
		h.run("ip", "netns", "add", a.Prefix+"ip3") // the usual host: already a shared mount point
		h.setup("a3")
		h.run("mount", "--rbind", NetNSDir, NetNSDir) // stacked later, recursively
		h.setup("b3")
		h.run("ip", "netns", "del", a.Prefix+"ip3")
		h.teardown("a3")
		h.teardown("b3")
		h.assertClean()
	})

	t.Run("missing", func(t *testing.T) {
		h.t = t
		// An empty tmpfs on /run, in this mount namespace only: no
		// /run/netns at all, as on a fresh machine.
		h.run("mount", "-t", "tmpfs", "-o", "size=1m", "flotilla-test", "/run")
		defer h.run("umount", "-l", "/run")
		if _, err := os.Stat(NetNSDir); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("setup: %s exists on a fresh tmpfs", NetNSDir)
		}
		h.setup("a4")
		if !h.sharedMountPoint() {
			t.Errorf("%s is not a shared mount point after a pod's setup", NetNSDir)
		}
		h.teardown("a4")
		h.assertClean()
	})
	if !t.Failed() {
		fmt.Println("HELPER OK")
	}
}

type nsDirHelper struct {
	t      *testing.T
	f      *Fabric
	prefix string
}

func (h nsDirHelper) name(uid string) string { return h.prefix + shortKey(h.prefix, uid) }
func (h nsDirHelper) path(uid string) string { return filepath.Join(NetNSDir, h.name(uid)) }

func (h nsDirHelper) run(name string, args ...string) {
	h.t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		h.t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
}

func (h nsDirHelper) mounts() []mountEntry {
	h.t.Helper()
	m, err := readMountinfo()
	if err != nil {
		h.t.Fatal(err)
	}
	return m
}

// plainDir makes /run/netns a plain directory in this mount namespace.
func (h nsDirHelper) plainDir() {
	h.t.Helper()
	for len(mountsAt(h.mounts(), NetNSDir)) > 0 {
		if err := unix.Unmount(NetNSDir, unix.MNT_DETACH); err != nil {
			h.t.Fatalf("unmounting %s: %v", NetNSDir, err)
		}
	}
	if err := os.MkdirAll(NetNSDir, 0o755); err != nil {
		h.t.Fatal(err)
	}
}

func (h nsDirHelper) sharedMountPoint() bool {
	at := mountsAt(h.mounts(), NetNSDir)
	return len(at) > 0 && at[len(at)-1].shared
}

// oldNamed mounts uid's pod namespace the way Flotilla did before it made
// /run/netns a mount point: straight on the directory. It returns the
// namespace's inode.
func (h nsDirHelper) oldNamed(uid string) uint64 {
	h.t.Helper()
	p := h.path(uid)
	if err := os.WriteFile(p, nil, 0o444); err != nil {
		h.t.Fatal(err)
	}
	h.run("unshare", "--net="+p, "true")
	ino := NetNSInode(p)
	if ino == 0 {
		h.t.Fatalf("setup: no namespace at %s", p)
	}
	return ino
}

func (h nsDirHelper) setup(uid string) podnet.PodNetwork {
	h.t.Helper()
	pn, err := h.f.Setup(context.Background(), podnet.PodRef{UID: uid, Namespace: "default", Name: "p-" + uid})
	if err != nil {
		h.t.Fatalf("Setup(%s): %v", uid, err)
	}
	// The pod's namespace is usable: eth0 has its address.
	err = InNetNS(pn.NetNSPath, func() error {
		l, err := netlink.LinkByName(podIfName)
		if err != nil {
			return err
		}
		addrs, err := netlink.AddrList(l, netlink.FAMILY_V4)
		if err != nil || len(addrs) != 1 || !addrs[0].IP.Equal(pn.IP) {
			return fmt.Errorf("addresses of eth0: %v, %v; want %s", addrs, err, pn.IP)
		}
		return nil
	})
	if err != nil {
		h.t.Errorf("pod %s's namespace: %v", uid, err)
	}
	return pn
}

// setupSame sets the pod up and checks it kept the namespace it had.
func (h nsDirHelper) setupSame(uid string, ino uint64) {
	h.t.Helper()
	pn := h.setup(uid)
	if got := NetNSInode(pn.NetNSPath); got != ino {
		h.t.Errorf("pod %s: namespace %d at %s, want its own %d (found again, not made anew)", uid, got, pn.NetNSPath, ino)
	}
}

func (h nsDirHelper) teardown(uid string) {
	h.t.Helper()
	if err := h.f.Teardown(context.Background(), uid); err != nil {
		h.t.Errorf("Teardown(%s): %v", uid, err)
	}
}

// assertClean checks that no namespace, file, mount or veth of the test is
// left, and no namespace mount anywhere under /run/netns hides one.
func (h nsDirHelper) assertClean() {
	h.t.Helper()
	for _, m := range h.mounts() {
		if strings.HasPrefix(m.point, NetNSDir+"/"+h.prefix) {
			h.t.Errorf("mount %d left at %s (%s)", m.id, m.point, m.root)
		}
	}
	if left, err := ListNetNS(h.prefix); err != nil || len(left) > 0 {
		h.t.Errorf("namespaces left: %v (%v)", left, err)
	}
	links, err := netlink.LinkList()
	if err != nil {
		h.t.Fatal(err)
	}
	for _, l := range links {
		if l.Type() == "veth" && strings.HasPrefix(l.Attrs().Name, "veth") {
			for _, uid := range []string{"a1", "b1", "c1", "a2", "b2", "a3", "b3", "a4"} {
				if l.Attrs().Name == "veth"+shortKey(h.prefix, uid)[:11] {
					h.t.Errorf("veth %s of pod %s left", l.Attrs().Name, uid)
				}
			}
		}
	}
	if pods, _ := h.f.Pods(context.Background()); len(pods) > 0 {
		h.t.Errorf("pod records left: %v", pods)
	}
}
