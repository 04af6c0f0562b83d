package netfabric

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/flotilla-dev/flotilla/node/podnet"
)

// peer is nd as the others see it in gossip.
func (nd *labNode) peer() Peer {
	return Peer{Node: nd.name, UnderlayIP: nd.underlay, PodCIDR: nd.cfg.PodCIDR, VTEPMAC: nd.f.VTEPMAC()}
}

// peers is every node of the lab (each fabric skips itself).
func (l *lab) peers() []Peer {
	var ps []Peer
	for _, nd := range l.nodes {
		ps = append(ps, nd.peer())
	}
	return ps
}

// sync runs SetPeers' work inside nd's namespace and returns the number of
// kernel changes it made.
func (nd *labNode) sync(tb testing.TB, peers []Peer) (changes int) {
	tb.Helper()
	err := inNetNS(tb, nd.path, func() error {
		if err := nd.f.SetPeers(context.Background(), peers); err != nil {
			return err
		}
		nd.f.ov.mu.Lock()
		defer nd.f.ov.mu.Unlock()
		var err error
		changes, err = nd.f.syncPeers(peers) // again: must find nothing to do
		return err
	})
	if err != nil {
		tb.Fatalf("SetPeers on %s: %v", nd.name, err)
	}
	return changes
}

func (nd *labNode) setupPod(tb testing.TB, uid string) podnet.PodNetwork {
	tb.Helper()
	var pn podnet.PodNetwork
	err := inNetNS(tb, nd.path, func() (err error) {
		pn, err = nd.f.Setup(context.Background(), podnet.PodRef{UID: uid, Namespace: "default", Name: uid})
		return err
	})
	if err != nil {
		tb.Fatalf("Setup %s on %s: %v", uid, nd.name, err)
	}
	return pn
}

// whoamiServer listens on addr inside the namespace at path and answers
// each connection with the client's IP as it sees it.
func whoamiServer(tb testing.TB, path, addr string) {
	tb.Helper()
	var ln net.Listener
	if err := inNetNS(tb, path, func() (err error) { ln, err = net.Listen("tcp4", addr); return err }); err != nil {
		tb.Fatalf("listening on %s in %s: %v", addr, path, err)
	}
	tb.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			host, _, _ := net.SplitHostPort(c.RemoteAddr().String())
			fmt.Fprintf(c, "%s\n", host)
			c.Close()
		}
	}()
}

// whoami connects from the namespace at path to addr and returns the
// source IP the server saw.
func whoami(tb testing.TB, path, addr string) (string, error) {
	tb.Helper()
	var c net.Conn
	if err := inNetNS(tb, path, func() (err error) {
		c, err = net.DialTimeout("tcp4", addr, 2*time.Second)
		return err
	}); err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(line), err
}

// overlayEntries lists, in nd's namespace, the pod CIDRs routed over the
// VXLAN device, its neighbour IPs and its fdb "mac dst" entries.
func (nd *labNode) overlayEntries(tb testing.TB) (routes, neighs, fdbs []string) {
	tb.Helper()
	err := inNetNS(tb, nd.path, func() error {
		link, err := netlink.LinkByName(DefaultOverlayDevice)
		if err != nil {
			return err
		}
		rs, err := netlink.RouteList(link, netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		for _, r := range rs {
			if r.Dst != nil && r.Protocol != unix.RTPROT_KERNEL {
				routes = append(routes, r.Dst.String()+" via "+r.Gw.String())
			}
		}
		ns, err := netlink.NeighList(link.Attrs().Index, netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		for _, n := range ns {
			neighs = append(neighs, n.IP.String()+" "+n.HardwareAddr.String())
		}
		fs, err := netlink.NeighList(link.Attrs().Index, unix.AF_BRIDGE)
		if err != nil {
			return err
		}
		for _, n := range fs {
			if n.LinkIndex == link.Attrs().Index {
				fdbs = append(fdbs, n.HardwareAddr.String()+" "+n.IP.String())
			}
		}
		return nil
	})
	if err != nil {
		tb.Fatalf("listing overlay entries on %s: %v", nd.name, err)
	}
	slices.Sort(routes)
	slices.Sort(neighs)
	slices.Sort(fdbs)
	return routes, neighs, fdbs
}

// wantEntries is what nd should hold for peers.
func wantEntries(peers ...*labNode) (routes, neighs, fdbs []string) {
	for _, p := range peers {
		vtep := VTEPAddrFor(p.cfg.PodCIDR).String()
		routes = append(routes, p.cfg.PodCIDR.String()+" via "+vtep)
		neighs = append(neighs, vtep+" "+p.f.VTEPMAC().String())
		fdbs = append(fdbs, p.f.VTEPMAC().String()+" "+p.underlay.String())
	}
	slices.Sort(routes)
	slices.Sort(neighs)
	slices.Sort(fdbs)
	return
}

func assertEntries(t *testing.T, nd *labNode, peers ...*labNode) {
	t.Helper()
	r, n, f := nd.overlayEntries(t)
	wr, wn, wf := wantEntries(peers...)
	if !slices.Equal(r, wr) || !slices.Equal(n, wn) || !slices.Equal(f, wf) {
		t.Errorf("%s overlay entries:\n routes %q\n neighs %q\n fdb    %q\nwant:\n routes %q\n neighs %q\n fdb    %q",
			nd.name, r, n, f, wr, wn, wf)
	}
}

func TestOverlayPodToPodAcrossNodes(t *testing.T) {
	l := newLab(t, 3, discardLogger())
	a, b, c := l.nodes[0], l.nodes[1], l.nodes[2]
	for _, nd := range l.nodes {
		if n := nd.sync(t, l.peers()); n != 0 {
			t.Errorf("%s: a second SetPeers with the same peers made %d changes", nd.name, n)
		}
	}
	assertEntries(t, a, b, c)
	assertEntries(t, b, a, c)

	pa := a.setupPod(t, "pod-a-"+randHex(t, 8))
	pb := b.setupPod(t, "pod-b-"+randHex(t, 8))
	pc := c.setupPod(t, "pod-c-"+randHex(t, 8))
	whoamiServer(t, pb.NetNSPath, ":7777")
	whoamiServer(t, pc.NetNSPath, ":7777")
	whoamiServer(t, pa.NetNSPath, ":7777")

	// Pod → pod across nodes, both ways, source address kept.
	for _, tc := range []struct {
		name     string
		from, to podnet.PodNetwork
	}{{"a→b", pa, pb}, {"a→c", pa, pc}, {"c→a", pc, pa}, {"b→c", pb, pc}} {
		got, err := whoami(t, tc.from.NetNSPath, net.JoinHostPort(tc.to.IP.String(), "7777"))
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
		} else if got != tc.from.IP.String() {
			t.Errorf("%s: server saw %s, want the client pod's %s (no NAT)", tc.name, got, tc.from.IP)
		}
	}
	// A node reaches a remote pod (from its VTEP address).
	if got, err := whoami(t, a.path, net.JoinHostPort(pb.IP.String(), "7777")); err != nil {
		t.Errorf("node a → pod b: %v", err)
	} else if got != VTEPAddrFor(a.cfg.PodCIDR).String() {
		t.Errorf("node a → pod b: server saw %s, want a's VTEP %s", got, VTEPAddrFor(a.cfg.PodCIDR))
	}
	// Pod → outside the cluster CIDR (node b's underlay address) is masqueraded.
	whoamiServer(t, b.path, net.JoinHostPort(b.underlay.String(), "7778"))
	if got, err := whoami(t, pa.NetNSPath, net.JoinHostPort(b.underlay.String(), "7778")); err != nil {
		t.Errorf("pod a → node b's underlay: %v", err)
	} else if got != a.underlay.String() {
		t.Errorf("pod a → node b's underlay: server saw %s, want a's underlay %s (masquerade)", got, a.underlay)
	}

	// b leaves: a forgets it, and a's traffic to b's pods fails.
	if n := a.sync(t, []Peer{a.peer(), c.peer()}); n != 0 {
		t.Errorf("second SetPeers after removal made %d changes", n)
	}
	assertEntries(t, a, c)
	if _, err := whoami(t, pa.NetNSPath, net.JoinHostPort(pb.IP.String(), "7777")); err == nil {
		t.Errorf("a → b still works after b left a's peers")
	}
	if _, err := whoami(t, pa.NetNSPath, net.JoinHostPort(pc.IP.String(), "7777")); err != nil {
		t.Errorf("a → c after b left: %v", err)
	}
	// b returns.
	a.sync(t, l.peers())
	assertEntries(t, a, b, c)
	if _, err := whoami(t, pa.NetNSPath, net.JoinHostPort(pb.IP.String(), "7777")); err != nil {
		t.Errorf("a → b after b rejoined: %v", err)
	}
}

// TestOverlayRestartAdopts: a new Fabric over the same node (an agent
// restart) finds the device and entries in place and changes nothing, and
// a wrong entry (a peer moved to another underlay address) is repaired.
func TestOverlayRestartAdopts(t *testing.T) {
	l := newLab(t, 2, discardLogger())
	a, b := l.nodes[0], l.nodes[1]
	a.sync(t, l.peers())
	var index int
	linkIndex := func() int {
		var i int
		inNetNS(t, a.path, func() error {
			link, err := netlink.LinkByName(DefaultOverlayDevice)
			if err == nil {
				i = link.Attrs().Index
				if link.Attrs().HardwareAddr.String() != a.f.VTEPMAC().String() {
					t.Errorf("device MAC %s, want %s", link.Attrs().HardwareAddr, a.f.VTEPMAC())
				}
				if link.Attrs().MTU != a.cfg.MTU || a.cfg.MTU != 1450 {
					t.Errorf("device MTU %d, pod MTU %d, want 1450", link.Attrs().MTU, a.cfg.MTU)
				}
			}
			return err
		})
		return i
	}
	index = linkIndex()

	restarted := &labNode{name: a.name, path: a.path, underlay: a.underlay, cfg: a.cfg, ov: a.ov}
	err := inNetNS(t, a.path, func() (err error) {
		if restarted.f, err = New(a.cfg); err != nil {
			return err
		}
		if err := restarted.f.Init(context.Background()); err != nil {
			return err
		}
		return restarted.f.InitOverlay(context.Background(), a.ov)
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := linkIndex(); got != index {
		t.Errorf("InitOverlay after a restart recreated the device (index %d → %d)", index, got)
	}
	var changes int
	inNetNS(t, a.path, func() error {
		restarted.f.ov.mu.Lock()
		defer restarted.f.ov.mu.Unlock()
		changes, err = restarted.f.syncPeers(l.peers())
		return err
	})
	if err != nil || changes != 0 {
		t.Errorf("first SetPeers after a restart: %d changes, err %v; want none", changes, err)
	}

	// b moves to another underlay address: the fdb entry follows.
	moved := b.peer()
	moved.UnderlayIP = net.IPv4(10, 99, 0, 250).To4()
	if n := restarted.sync(t, []Peer{moved}); n != 0 {
		t.Errorf("second SetPeers made %d changes", n)
	}
	_, _, fdbs := a.overlayEntries(t)
	if want := []string{b.f.VTEPMAC().String() + " 10.99.0.250"}; !slices.Equal(fdbs, want) {
		t.Errorf("fdb after the move: %q, want %q", fdbs, want)
	}

	// A changed VNI recreates the device and replays the peers.
	ov := a.ov
	ov.VNI = 42
	if err := inNetNS(t, a.path, func() error { return restarted.f.InitOverlay(context.Background(), ov) }); err != nil {
		t.Fatal(err)
	}
	if got := linkIndex(); got == index {
		t.Errorf("a new VNI did not recreate the device")
	}
	routes, _, _ := a.overlayEntries(t)
	if len(routes) != 1 {
		t.Errorf("routes after recreation: %q, want b's", routes)
	}
}

func TestOverlayRefusesLargePodMTU(t *testing.T) {
	l := newLab(t, 1, discardLogger())
	a := l.nodes[0]
	cfg := a.cfg
	cfg.MTU = 1500
	cfg.StateDir = t.TempDir()
	cfg.Bridge, cfg.NFTable = "flt"+randHex(t, 8), "flt_"+randHex(t, 8)
	err := inNetNS(t, a.path, func() error {
		f, err := New(cfg)
		if err != nil {
			return err
		}
		return f.InitOverlay(context.Background(), OverlayConfig{UnderlayIP: a.underlay, Device: "flt" + randHex(t, 8)})
	})
	if err == nil || !strings.Contains(err.Error(), "exceeds the overlay MTU 1450") {
		t.Errorf("InitOverlay with pod MTU 1500 over a 1500 link: %v, want a refusal", err)
	}
	if err := inNetNS(t, a.path, func() error { return a.f.SetPeers(context.Background(), nil) }); err != nil {
		t.Errorf("SetPeers(nil): %v", err)
	}
	f, err := New(a.cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.SetPeers(context.Background(), nil); !errors.Is(err, ErrOverlayNotInitialized) {
		t.Errorf("SetPeers before InitOverlay: %v", err)
	}
}

func TestDesiredPeersValidates(t *testing.T) {
	cidr := func(s string) *net.IPNet { _, n, _ := net.ParseCIDR(s); return n }
	f, err := New(Config{PodCIDR: cidr("10.244.1.0/24"), StateDir: t.TempDir(), Logger: discardLogger()})
	if err != nil {
		t.Fatal(err)
	}
	f.ov.cfg.UnderlayIP = net.IPv4(192, 0, 2, 1).To4()
	ip := func(s string) net.IP { return net.ParseIP(s) }
	want, err := f.desiredPeers([]Peer{
		{Node: "self", UnderlayIP: ip("192.0.2.1"), PodCIDR: cidr("10.244.1.0/24")},
		{Node: "ok", UnderlayIP: ip("192.0.2.2"), PodCIDR: cidr("10.244.2.0/24")},
		{Node: "dup", UnderlayIP: ip("192.0.2.3"), PodCIDR: cidr("10.244.2.0/25")},
		{Node: "nocidr", UnderlayIP: ip("192.0.2.4")},
		{Node: "outside", UnderlayIP: ip("192.0.2.5"), PodCIDR: cidr("10.9.0.0/24")},
		{Node: "overlap", UnderlayIP: ip("192.0.2.6"), PodCIDR: cidr("10.244.0.0/23")},
		{Node: "v6", UnderlayIP: ip("2001:db8::1"), PodCIDR: cidr("10.244.7.0/24")},
		{Node: "mac", UnderlayIP: ip("192.0.2.8"), PodCIDR: cidr("10.244.8.0/24"), VTEPMAC: net.HardwareAddr{1, 0, 0, 0, 0, 1}},
		{Node: "selfip", UnderlayIP: ip("192.0.2.1"), PodCIDR: cidr("10.244.9.0/24")},
	})
	if len(want) != 1 {
		t.Fatalf("kept %d peers, want only \"ok\": %v", len(want), want)
	}
	for _, e := range want {
		if e.node != "ok" || e.vtep.String() != "10.244.2.0" || e.mac != VTEPMACFor(cidr("10.244.2.0/24")).String() {
			t.Errorf("entry %+v", e)
		}
	}
	for _, name := range []string{"dup", "nocidr", "outside", "overlap", "v6", "mac", "selfip"} {
		if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("%q", name)) {
			t.Errorf("error does not name peer %q: %v", name, err)
		}
	}
	if strings.Contains(err.Error(), `"self"`) {
		t.Errorf("this node itself reported as an error: %v", err)
	}
	m1, m2 := VTEPMACFor(cidr("10.244.1.0/24")), VTEPMACFor(cidr("10.244.1.0/24"))
	if m1.String() != m2.String() || m1[0]&3 != 2 || m1.String() == VTEPMACFor(cidr("10.244.2.0/24")).String() {
		t.Errorf("VTEP MACs not stable, local unicast and distinct: %s %s", m1, VTEPMACFor(cidr("10.244.2.0/24")))
	}
}
