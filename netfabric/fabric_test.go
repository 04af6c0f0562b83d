package netfabric

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/flotilla-dev/flotilla/node/podnet"
)

// echoServer listens on port 7777 inside the pod namespace at path and
// answers each line with "pong <line>".
func echoServer(t *testing.T, path string) {
	t.Helper()
	var ln net.Listener
	err := inNetNS(t, path, func() (err error) {
		ln, err = net.Listen("tcp4", ":7777")
		return err
	})
	if err != nil {
		t.Fatalf("listening in %s: %v", path, err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				line, _ := bufio.NewReader(c).ReadString('\n')
				fmt.Fprintf(c, "pong %s", line)
			}()
		}
	}()
}

func ping(ip net.IP, msg string) error {
	c, err := net.DialTimeout("tcp4", net.JoinHostPort(ip.String(), "7777"), 3*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	fmt.Fprintf(c, "%s\n", msg)
	got, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return fmt.Errorf("reading reply: %w", err)
	}
	if got != "pong "+msg+"\n" {
		return fmt.Errorf("reply %q", got)
	}
	return nil
}

func setup(t *testing.T, f *Fabric, uid string) podnet.PodNetwork {
	t.Helper()
	pn, err := f.Setup(context.Background(), podnet.PodRef{UID: uid, Namespace: "default", Name: "p-" + uid[:4]})
	if err != nil {
		t.Fatalf("Setup(%s): %v", uid, err)
	}
	return pn
}

func TestTwoPodsTalk(t *testing.T) {
	requireRoot(t)
	tn := newTestNet(t, 24)
	f := tn.fabric(t)
	a := setup(t, f, "aaaa-"+randHex(t, 8))
	b := setup(t, f, "bbbb-"+randHex(t, 8))

	for _, pn := range []podnet.PodNetwork{a, b} {
		if !tn.cfg.PodCIDR.Contains(pn.IP) || pn.IP.Equal(f.Gateway()) || pn.IP.Equal(tn.cfg.PodCIDR.IP) {
			t.Errorf("IP %s is not a pod address of %s", pn.IP, tn.cfg.PodCIDR)
		}
		if !isNetNS(pn.NetNSPath) {
			t.Errorf("%s is not a network namespace", pn.NetNSPath)
		}
	}
	if a.IP.Equal(b.IP) || a.NetNSPath == b.NetNSPath {
		t.Fatalf("pods share a network: %+v %+v", a, b)
	}

	echoServer(t, a.NetNSPath)
	if err := ping(a.IP, "from-host"); err != nil {
		t.Errorf("host → pod A: %v", err)
	}
	err := inNetNS(t, b.NetNSPath, func() error { return ping(a.IP, "from-b") })
	if err != nil {
		t.Errorf("pod B → pod A: %v", err)
	}
	// And the pod reaches the host through its gateway.
	err = inNetNS(t, a.NetNSPath, func() error {
		c, err := net.DialTimeout("tcp4", net.JoinHostPort(f.Gateway().String(), "1"), 2*time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if errors.Is(err, syscallECONNREFUSED) { // reached the host, nothing listens: fine
			return nil
		}
		return err
	})
	if err != nil {
		t.Errorf("pod A → gateway: %v", err)
	}
}

func TestSetupIsIdempotentAndSurvivesRestart(t *testing.T) {
	requireRoot(t)
	tn := newTestNet(t, 24)
	f := tn.fabric(t)
	uid := "cccc-" + randHex(t, 8)
	first := setup(t, f, uid)
	again := setup(t, f, uid)
	if again.NetNSPath != first.NetNSPath || !again.IP.Equal(first.IP) {
		t.Fatalf("second Setup gave %+v, first %+v", again, first)
	}

	// Agent restart: a new Fabric over the same state directory.
	f2, err := New(tn.cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := f2.Init(context.Background()); err != nil {
		t.Fatal(err)
	}
	pods, _ := f2.Pods(context.Background())
	if len(pods) != 1 || pods[0] != uid {
		t.Fatalf("Pods after restart = %v, want [%s]", pods, uid)
	}
	restarted := setup(t, f2, uid)
	if restarted.NetNSPath != first.NetNSPath || !restarted.IP.Equal(first.IP) {
		t.Fatalf("after restart Setup gave %+v, first %+v", restarted, first)
	}

	// Reboot: the kernel forgets the bridge, the veth and /run/netns; the
	// state directory remains.
	rec, _ := f2.state.get(uid)
	for _, err := range []error{deleteLink(rec.HostVeth), DeleteNetNS(rec.NetNS), deleteLink(tn.cfg.Bridge)} {
		if err != nil {
			t.Fatal(err)
		}
	}
	f3, err := New(tn.cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f3.Setup(context.Background(), podnet.PodRef{UID: uid}); !errors.Is(err, ErrNotInitialized) {
		t.Fatalf("Setup before Init after reboot: %v, want ErrNotInitialized", err)
	}
	if err := f3.Init(context.Background()); err != nil {
		t.Fatal(err)
	}
	rebooted := setup(t, f3, uid)
	if rebooted.NetNSPath != first.NetNSPath || !rebooted.IP.Equal(first.IP) {
		t.Fatalf("after reboot Setup gave %+v, first %+v", rebooted, first)
	}
	echoServer(t, rebooted.NetNSPath)
	if err := ping(rebooted.IP, "after-reboot"); err != nil {
		t.Errorf("host → pod after reboot: %v", err)
	}

	// Half-made pod (veth deleted behind our back): Setup repairs it in place.
	if err := deleteLink(rec.HostVeth); err != nil {
		t.Fatal(err)
	}
	repaired := setup(t, f3, uid)
	if !repaired.IP.Equal(first.IP) {
		t.Fatalf("repair changed the IP to %s", repaired.IP)
	}
	if err := ping(repaired.IP, "after-repair"); err != nil {
		t.Errorf("host → pod after repair (same netns, listener kept): %v", err)
	}
}

func TestTeardownFreesEverything(t *testing.T) {
	requireRoot(t)
	tn := newTestNet(t, 30) // exactly one pod address
	f := tn.fabric(t)
	ctx := context.Background()
	a := "dddd-" + randHex(t, 8)
	b := "eeee-" + randHex(t, 8)
	pa := setup(t, f, a)

	// The pool is full: B fails and leaves nothing behind.
	if _, err := f.Setup(ctx, podnet.PodRef{UID: b}); !errors.Is(err, ErrPoolExhausted) {
		t.Fatalf("Setup with a full pool: %v, want ErrPoolExhausted", err)
	}
	assertGone(t, f, b)

	if err := f.Teardown(ctx, a); err != nil {
		t.Fatal(err)
	}
	assertGone(t, f, a)
	if err := f.Teardown(ctx, a); err != nil {
		t.Fatalf("second Teardown: %v", err)
	}
	if err := f.Teardown(ctx, "never-seen"); err != nil {
		t.Fatalf("Teardown of an unknown UID: %v", err)
	}
	pb := setup(t, f, b)
	if !pb.IP.Equal(pa.IP) {
		t.Fatalf("freed address %s not reused, got %s", pa.IP, pb.IP)
	}
}

// assertGone checks that uid has no record, netns, veth or state file.
func assertGone(t *testing.T, f *Fabric, uid string) {
	t.Helper()
	key := shortKey(f.cfg.NetNSPrefix, uid)
	if _, err := os.Lstat(filepath.Join(NetNSDir, f.cfg.NetNSPrefix+key)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("netns of %s still there: %v", uid, err)
	}
	if _, err := netlink.LinkByName("veth" + key[:11]); err == nil {
		t.Errorf("veth of %s still there", uid)
	}
	if _, err := os.Lstat(filepath.Join(f.cfg.StateDir, key+".json")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("record of %s still there: %v", uid, err)
	}
	pods, _ := f.Pods(context.Background())
	for _, p := range pods {
		if p == uid {
			t.Errorf("Pods still lists %s", uid)
		}
	}
}

func TestConcurrentSetups(t *testing.T) {
	requireRoot(t)
	tn := newTestNet(t, 24)
	f := tn.fabric(t)
	const n = 24
	uids := make([]string, n)
	ips := make([]net.IP, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		uids[i] = fmt.Sprintf("%04d-%s", i, randHex(t, 8))
		wg.Add(1)
		go func() {
			defer wg.Done()
			pn, err := f.Setup(context.Background(), podnet.PodRef{UID: uids[i]})
			ips[i], errs[i] = pn.IP, err
		}()
		if i%3 == 0 { // and the same UID twice at once
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := f.Setup(context.Background(), podnet.PodRef{UID: uids[i]}); err != nil {
					t.Errorf("duplicate Setup(%s): %v", uids[i], err)
				}
			}()
		}
	}
	wg.Wait()
	seen := map[string]string{}
	for i, ip := range ips {
		if errs[i] != nil {
			t.Fatalf("Setup(%s): %v", uids[i], errs[i])
		}
		if other, dup := seen[ip.String()]; dup {
			t.Errorf("%s and %s both got %s", other, uids[i], ip)
		}
		seen[ip.String()] = uids[i]
	}
	pods, _ := f.Pods(context.Background())
	if len(pods) != n {
		t.Errorf("Pods lists %d, want %d", len(pods), n)
	}
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f.Teardown(context.Background(), uids[i]); err != nil {
				t.Errorf("Teardown(%s): %v", uids[i], err)
			}
		}()
	}
	wg.Wait()
	for _, uid := range uids {
		assertGone(t, f, uid)
	}
	left, _ := filepath.Glob(filepath.Join(NetNSDir, f.cfg.NetNSPrefix+"*"))
	if len(left) != 0 {
		t.Errorf("namespaces left behind: %v", left)
	}
}

func TestInitIsIdempotent(t *testing.T) {
	requireRoot(t)
	tn := newTestNet(t, 24)
	f := tn.fabric(t)
	for range 2 {
		if err := f.Init(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	out, err := run(context.Background(), "", "nft", "list", "table", "inet", tn.cfg.NFTable)
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("ip saddr %s ip daddr != 10.250.0.0/16 masquerade", tn.cfg.PodCIDR)
	if strings.Count(out, want) != 1 {
		t.Errorf("nft table:\n%s\nwant exactly one %q", out, want)
	}
	br, err := netlink.LinkByName(tn.cfg.Bridge)
	if err != nil {
		t.Fatal(err)
	}
	addrs, _ := netlink.AddrList(br, netlink.FAMILY_V4)
	if len(addrs) != 1 || !addrs[0].IP.Equal(f.Gateway()) {
		t.Errorf("bridge addresses %v, want only %s", addrs, f.Gateway())
	}
	if b, _ := os.ReadFile("/proc/sys/net/ipv4/ip_forward"); strings.TrimSpace(string(b)) != "1" {
		t.Errorf("ip_forward = %q", b)
	}
}

func TestNewValidates(t *testing.T) {
	cidr := func(s string) *net.IPNet { _, n, _ := net.ParseCIDR(s); return n }
	dir := t.TempDir()
	for name, cfg := range map[string]Config{
		"no pod cidr":        {StateDir: dir},
		"no state dir":       {PodCIDR: cidr("10.244.1.0/24")},
		"outside cluster":    {PodCIDR: cidr("10.9.0.0/24"), StateDir: dir},
		"ipv6":               {PodCIDR: cidr("fd00::/64"), StateDir: dir},
		"too small":          {PodCIDR: cidr("10.244.1.0/31"), StateDir: dir},
		"bridge name length": {PodCIDR: cidr("10.244.1.0/24"), StateDir: dir, Bridge: "a-very-long-bridge"},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("%s: New accepted %+v", name, cfg)
		}
	}
	f, err := New(Config{PodCIDR: cidr("10.244.1.0/24"), StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if f.cfg.Bridge != "flotilla0" || f.cfg.NetNSPrefix != "flo-" || f.cluster.String() != "10.244.0.0/16" || f.Gateway().String() != "10.244.1.1" {
		t.Errorf("defaults: %+v gateway %s", f.cfg, f.Gateway())
	}
}

func TestStoreAllocatesAndPersists(t *testing.T) {
	dir := t.TempDir()
	pool := netip.MustParsePrefix("10.244.1.0/29") // .2 … .6 allocatable
	s, err := openStore(dir, pool, discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for i := range 5 {
		r, err := s.allocate(record{UID: fmt.Sprint("u", i), Key: fmt.Sprint("k", i)})
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, r.IP)
	}
	if strings.Join(got, ",") != "10.244.1.2,10.244.1.3,10.244.1.4,10.244.1.5,10.244.1.6" {
		t.Fatalf("allocated %v", got)
	}
	if _, err := s.allocate(record{UID: "u5", Key: "k5"}); !errors.Is(err, ErrPoolExhausted) {
		t.Fatalf("sixth allocation: %v", err)
	}
	if _, err := s.allocate(record{UID: "other", Key: "k1"}); err == nil {
		t.Fatal("two UIDs with one key accepted")
	}
	if err := s.release("u2"); err != nil {
		t.Fatal(err)
	}
	s2, err := openStore(dir, pool, discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	if r, ok := s2.get("u3"); !ok || r.IP != "10.244.1.5" {
		t.Fatalf("reloaded u3 = %+v, %v", r, ok)
	}
	r, err := s2.allocate(record{UID: "u9", Key: "k9"})
	if err != nil || r.IP != "10.244.1.4" {
		t.Fatalf("reuse of the freed address: %+v, %v", r, err)
	}
	// The pod CIDR changed under the records: they re-address.
	s3, err := openStore(dir, netip.MustParsePrefix("10.244.2.0/24"), discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	r, err = s3.allocate(record{UID: "u0", Key: "k0"})
	if err != nil || r.IP != "10.244.2.2" {
		t.Fatalf("re-addressing after a CIDR change: %+v, %v", r, err)
	}
}

// TestFailedSetupLeavesNothing makes the kernel half of Setup fail (a
// foreign link holds the pod's veth name) and checks that the netns and the
// record are gone and the foreign link is untouched.
func TestFailedSetupLeavesNothing(t *testing.T) {
	requireRoot(t)
	tn := newTestNet(t, 24)
	f := tn.fabric(t)
	uid := "iiii-" + randHex(t, 8)
	name := "veth" + shortKey(f.cfg.NetNSPrefix, uid)[:11]
	attrs := netlink.NewLinkAttrs()
	attrs.Name = name
	if err := netlink.LinkAdd(&netlink.Bridge{LinkAttrs: attrs}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { deleteLink(name) })

	if _, err := f.Setup(context.Background(), podnet.PodRef{UID: uid}); err == nil {
		t.Fatal("Setup succeeded over a foreign link with the veth's name")
	}
	key := shortKey(f.cfg.NetNSPrefix, uid)
	if _, err := os.Lstat(filepath.Join(NetNSDir, f.cfg.NetNSPrefix+key)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("netns left behind: %v", err)
	}
	if pods, _ := f.Pods(context.Background()); len(pods) != 0 {
		t.Errorf("records left behind: %v", pods)
	}
	if l, err := netlink.LinkByName(name); err != nil || l.Type() != "bridge" {
		t.Errorf("foreign link touched: %v %v", l, err)
	}
	f.state.mu.Lock()
	defer f.state.mu.Unlock()
	if len(f.state.used) != 0 {
		t.Errorf("addresses still held: %v", f.state.used)
	}
}

// TestInitRefusesARouteInsideThePodCIDR: a route of another link inside the
// pod CIDR (a leftover bridge, a VPN) would take the pods' traffic, so Init
// refuses and names it; a broader route (the host's 10/8 via a VPN, say)
// loses to the bridge's own and is fine.
func TestInitRefusesARouteInsideThePodCIDR(t *testing.T) {
	requireRoot(t)
	tn := newTestNet(t, 24)
	ns := "flt" + randHex(t, 8)
	makeNetNS(t, ns)
	other := "fltd" + randHex(t, 8)
	inside, _ := prefixOf(tn.cfg.PodCIDR)
	inside = netip.PrefixFrom(inside.Addr(), 26)
	err := inNetNS(t, filepath.Join(NetNSDir, ns), func() error {
		if err := netlink.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: other}}); err != nil {
			return err
		}
		link, err := netlink.LinkByName(other)
		if err != nil {
			return err
		}
		if err := netlink.LinkSetUp(link); err != nil {
			return err
		}
		route := &netlink.Route{LinkIndex: link.Attrs().Index, Dst: ipNet(inside)}
		if err := netlink.RouteAdd(route); err != nil {
			return err
		}
		f, err := New(tn.cfg)
		if err != nil {
			return err
		}
		err = f.Init(context.Background())
		want := fmt.Sprintf("pod CIDR %s overlaps the host's route %s dev %s", tn.cfg.PodCIDR, inside, other)
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "ip route del "+inside.String()+" dev "+other) {
			t.Errorf("Init with a route inside the pod CIDR = %v, want an error with %q and how to remove it", err, want)
		}
		if _, err := netlink.LinkByName(tn.cfg.Bridge); err == nil {
			t.Errorf("refused Init created bridge %s", tn.cfg.Bridge)
		}

		if err := netlink.RouteDel(route); err != nil {
			return err
		}
		broad := &netlink.Route{LinkIndex: link.Attrs().Index, Dst: ipNet(netip.MustParsePrefix("10.0.0.0/8"))}
		if err := netlink.RouteAdd(broad); err != nil {
			return err
		}
		if err := f.Init(context.Background()); err != nil {
			t.Errorf("Init with only a broader route: %v", err)
		}
		if err := f.Init(context.Background()); err != nil {
			t.Errorf("Init again (the bridge's own route is not foreign): %v", err)
		}
		return f.Destroy(context.Background())
	})
	if err != nil {
		t.Fatal(err)
	}
}
