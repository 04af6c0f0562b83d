package netfabric

import (
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// The overlay tests build a miniature cluster inside namespaces they own:
//
//	switch netns: bridge "sw0" ── veth ── node netns 1: under0 10.99.X.1/24, Fabric
//	                           ── veth ── node netns 2: under0 10.99.X.2/24, Fabric
//	                           ── …
//
// Each node's Fabric runs "inside" its node namespace: every call goes
// through inNetNS, which locks an OS thread and switches it into the node
// namespace for the call (netlink, /proc/sys and the nft/iptables children
// all follow the calling thread's namespace). TestFabricUnderNsenter checks
// the other way the agent runs, a whole process under nsenter. Pod CIDRs are
// 10.(200+r).(10+i).0/24 of cluster 10.(200+r).0.0/16 with a random r, and
// every name carries a random suffix, so labs never collide with each other
// or with other tests.

// labNode is one simulated node.
type labNode struct {
	name     string // its netns under /run/netns
	path     string
	underlay net.IP
	cfg      Config
	ov       OverlayConfig
	f        *Fabric
}

// lab is a switch namespace and its nodes.
type lab struct {
	switchNS string
	nodes    []*labNode
	cluster  *net.IPNet
}

func requireRootTB(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("needs root (network namespaces, bridges, VXLAN)")
	}
}

func randInt(tb testing.TB, n int64) int {
	tb.Helper()
	x, err := rand.Int(rand.Reader, big.NewInt(n))
	if err != nil {
		tb.Fatal(err)
	}
	return int(x.Int64())
}

// makeNetNS creates a named namespace removed when the test ends.
func makeNetNS(tb testing.TB, name string) netns.NsHandle {
	tb.Helper()
	h, _, err := EnsureNetNS(name)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		h.Close()
		if err := DeleteNetNS(name); err != nil {
			tb.Errorf("cleanup: %v", err)
		}
	})
	return h
}

// newLab builds the switch and n nodes, each with an initialised Fabric
// and overlay (no peers yet). Everything is removed when the test ends.
func newLab(tb testing.TB, n int, logger *slog.Logger) *lab {
	tb.Helper()
	requireRootTB(tb)
	id := randHex(tb, 6)
	r, x := randInt(tb, 50), 1+randInt(tb, 250)
	_, cluster, _ := net.ParseCIDR(fmt.Sprintf("10.%d.0.0/16", 200+r))
	l := &lab{switchNS: "flv" + id + "sw", cluster: cluster}

	sw := makeNetNS(tb, l.switchNS)
	swh, err := netlink.NewHandleAt(sw)
	if err != nil {
		tb.Fatal(err)
	}
	defer swh.Close()
	attrs := netlink.NewLinkAttrs()
	attrs.Name = "sw0"
	if err := swh.LinkAdd(&netlink.Bridge{LinkAttrs: attrs}); err != nil {
		tb.Fatalf("switch bridge: %v", err)
	}
	br, err := swh.LinkByName("sw0")
	if err != nil {
		tb.Fatal(err)
	}
	if err := swh.LinkSetUp(br); err != nil {
		tb.Fatal(err)
	}

	for i := 0; i < n; i++ {
		nd := &labNode{name: fmt.Sprintf("flv%sn%d", id, i)}
		nd.path = filepath.Join(NetNSDir, nd.name)
		nd.underlay = net.IPv4(10, 99, byte(x), byte(i+1)).To4()
		h := makeNetNS(tb, nd.name)
		wireNode(tb, h, sw, swh, br, i, nd.underlay)

		_, pod, _ := net.ParseCIDR(fmt.Sprintf("10.%d.%d.0/24", 200+r, 10+i))
		nd.ov = OverlayConfig{UnderlayIP: nd.underlay}
		nd.cfg = Config{PodCIDR: pod, ClusterCIDR: cluster, StateDir: tb.TempDir(),
			NetNSPrefix: fmt.Sprintf("flv%sp%d-", id, i), Logger: logger}
		err := inNetNS(tb, nd.path, func() error {
			mtu, err := OverlayMTU(nd.ov)
			if err != nil {
				return err
			}
			nd.cfg.MTU = mtu
			if nd.f, err = New(nd.cfg); err != nil {
				return err
			}
			tb.Cleanup(func() { // runs before the namespaces go
				err := inNetNS(tb, nd.path, func() error { return nd.f.Destroy(context.Background()) })
				if err != nil {
					tb.Errorf("cleanup of %s: %v", nd.name, err)
				}
			})
			if err := nd.f.Init(context.Background()); err != nil {
				return err
			}
			return nd.f.InitOverlay(context.Background(), nd.ov)
		})
		if err != nil {
			tb.Fatalf("node %d: %v", i, err)
		}
		l.nodes = append(l.nodes, nd)
	}
	return l
}

// wireNode plugs node namespace h into the switch: veth under0 (node side,
// with addr/24) ↔ p<i> (switch side, on the bridge).
func wireNode(tb testing.TB, h, sw netns.NsHandle, swh *netlink.Handle, br netlink.Link, i int, addr net.IP) {
	tb.Helper()
	nh, err := netlink.NewHandleAt(h)
	if err != nil {
		tb.Fatal(err)
	}
	defer nh.Close()
	attrs := netlink.NewLinkAttrs()
	attrs.Name = "under0"
	veth := netlink.NewVeth(attrs)
	veth.PeerName = fmt.Sprintf("p%d", i)
	if err := nh.LinkAdd(veth); err != nil {
		tb.Fatalf("underlay veth: %v", err)
	}
	peer, err := nh.LinkByName(veth.PeerName)
	if err != nil {
		tb.Fatal(err)
	}
	if err := nh.LinkSetNsFd(peer, int(sw)); err != nil {
		tb.Fatalf("moving %s to the switch: %v", veth.PeerName, err)
	}
	sp, err := swh.LinkByName(veth.PeerName)
	if err != nil {
		tb.Fatal(err)
	}
	if err := swh.LinkSetMaster(sp, br); err != nil {
		tb.Fatal(err)
	}
	if err := swh.LinkSetUp(sp); err != nil {
		tb.Fatal(err)
	}
	under, err := nh.LinkByName("under0")
	if err != nil {
		tb.Fatal(err)
	}
	if err := nh.AddrAdd(under, &netlink.Addr{IPNet: &net.IPNet{IP: addr, Mask: net.CIDRMask(24, 32)}}); err != nil {
		tb.Fatal(err)
	}
	if err := nh.LinkSetUp(under); err != nil {
		tb.Fatal(err)
	}
	if lo, err := nh.LinkByName("lo"); err == nil {
		nh.LinkSetUp(lo)
	}
}
