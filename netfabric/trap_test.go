package netfabric

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/vishvananda/netns"
)

// TestForwardDropPolicy reproduces the bridge trap (br_netfilter on and an
// iptables FORWARD policy of DROP: ARP crosses the bridge, IP does not) and
// checks that Init lets our bridge through, and Destroy takes its rules
// back out. It runs the whole fabric inside a scratch network namespace so
// that the DROP policy never touches the machine's own.
func TestForwardDropPolicy(t *testing.T) {
	requireRoot(t)
	tn := newTestNet(t, 24)
	scratch := tn.cfg.NetNSPrefix + "host"
	t.Cleanup(func() {
		left, _ := filepath.Glob(filepath.Join(NetNSDir, tn.cfg.NetNSPrefix+"*"))
		for _, p := range left {
			DeleteNetNS(filepath.Base(p))
		}
	})
	hostNS, _, err := EnsureNetNS(scratch)
	if err != nil {
		t.Fatal(err)
	}
	defer hostNS.Close()

	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	if err := netns.Set(hostNS); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := netns.Set(orig); err != nil {
			t.Errorf("switching back to the test's netns: %v", err) // thread stays locked, dies
			return
		}
		runtime.UnlockOSThread()
	}()

	ctx := context.Background()
	if b, err := os.ReadFile("/proc/sys/net/bridge/bridge-nf-call-iptables"); err != nil || strings.TrimSpace(string(b)) != "1" {
		t.Logf("br_netfilter is not on in the scratch namespace (%q, %v): the trap cannot bite here", b, err)
	}
	if _, err := run(ctx, "", "iptables", "-w", "-P", "FORWARD", "DROP"); err != nil {
		t.Skipf("cannot set an iptables policy here: %v", err)
	}
	if _, err := run(ctx, "", "ip", "link", "set", "lo", "up"); err != nil {
		t.Fatal(err)
	}
	f, err := New(tn.cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := f.Destroy(ctx); err != nil {
			t.Errorf("destroy: %v", err)
		}
		out, _ := run(ctx, "", "iptables", "-w", "-S", "FORWARD")
		if strings.Contains(out, iptablesComment) {
			t.Errorf("Destroy left our rules in FORWARD:\n%s", out)
		}
	}()
	if err := f.Init(ctx); err != nil {
		t.Fatal(err)
	}
	if err := f.Init(ctx); err != nil { // rules are not inserted twice
		t.Fatal(err)
	}
	out, _ := run(ctx, "", "iptables", "-w", "-S", "FORWARD")
	if n := strings.Count(out, iptablesComment); n != 2 {
		t.Errorf("FORWARD has %d of our rules, want 2:\n%s", n, out)
	}
	a := setup(t, f, "ffff-"+randHex(t, 8))
	b := setup(t, f, "gggg-"+randHex(t, 8))
	echoServer(t, a.NetNSPath)
	if err := inNetNS(t, b.NetNSPath, func() error { return ping(a.IP, "across-drop") }); err != nil {
		t.Errorf("pod B → pod A with FORWARD policy DROP: %v", err)
	}
	if err := ping(a.IP, "host-across-drop"); err != nil {
		t.Errorf("host → pod A with FORWARD policy DROP: %v", err)
	}

	// Without our rules the trap bites: that is what the test is about.
	if err := f.deleteIPTables(ctx); err != nil {
		t.Fatal(err)
	}
	if err := inNetNS(t, b.NetNSPath, func() error { return ping(a.IP, "no-rules") }); err == nil {
		t.Errorf("pod B → pod A worked with FORWARD policy DROP and no rules: the trap is not reproduced")
	}

	// A native nftables drop policy is named for the operator.
	if _, err := run(ctx, "table inet fltfw { chain fw { type filter hook forward priority 0; policy drop; }; }\n", "nft", "-f", "-"); err != nil {
		t.Fatal(err)
	}
	drops, err := f.foreignDrops(ctx)
	if err != nil || len(drops) != 1 || drops[0] != "inet fltfw fw" {
		t.Errorf("foreignDrops = %q, %v; want [inet fltfw fw]", drops, err)
	}
}
