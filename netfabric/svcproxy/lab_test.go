package svcproxy

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/flotilla-dev/flotilla/internal/testkit"
	"github.com/flotilla-dev/flotilla/netfabric"
	"github.com/flotilla-dev/flotilla/node/podnet"
)

// The integration tests build one node inside namespaces they own:
//
//	client netns: eth0 192.168.X.2/24 ── veth ── node netns: up0 192.168.X.1/24
//	                                              bridge fspID 10.(200+r).1.1/24 (netfabric.Fabric)
//	pod netns 0..n-1 (netfabric pods) ── veth ──┘   the Proxy's table
//
// The client namespace stands for the world outside the cluster: it routes
// everything (load-balancer IPs included) to the node, and the node's
// default route points back at it. Every name carries a random suffix and
// everything is removed when the test ends, even on failure. Traffic only
// goes to addresses inside these namespaces.

func requireNFT(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("needs root (network namespaces, nftables)")
	}
	if _, err := exec.LookPath("nft"); err != nil {
		tb.Skip("nft not installed")
	}
}

func randHex(tb testing.TB, n int) string {
	tb.Helper()
	b := make([]byte, (n+1)/2)
	if _, err := rand.Read(b); err != nil {
		tb.Fatal(err)
	}
	return hex.EncodeToString(b)[:n]
}

func randInt(tb testing.TB, n int64) int {
	tb.Helper()
	x, err := rand.Int(rand.Reader, big.NewInt(n))
	if err != nil {
		tb.Fatal(err)
	}
	return int(x.Int64())
}

// newNetNS creates /run/netns/NAME, removed when the test ends; it returns
// the path.
func newNetNS(tb testing.TB, name string) string {
	tb.Helper()
	h, _, err := netfabric.EnsureNetNS(name)
	if err != nil {
		tb.Fatal(err)
	}
	h.Close()
	path := filepath.Join("/run/netns", name)
	tb.Cleanup(func() {
		if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			tb.Errorf("cleanup: unmounting %s: %v", path, err)
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			tb.Errorf("cleanup: %v", err)
		}
	})
	return path
}

// inNetNS runs fn inside the namespace at path (netfabric.InNetNS):
// sockets made by fn stay in the namespace; children that fn starts (nft)
// run in it.
func inNetNS(tb testing.TB, path string, fn func() error) error {
	tb.Helper()
	return netfabric.InNetNS(path, fn)
}

type pod struct {
	name string
	path string
	ip   netip.Addr
}

type lab struct {
	id       string
	node     string // path of the node namespace
	client   string // path of the client namespace
	nodeIP   netip.Addr
	clientIP netip.Addr
	gateway  netip.Addr // the bridge's address
	cluster  netip.Prefix
	podCIDR  netip.Prefix
	bridge   string
	pods     []pod
	proxy    *Proxy
	nftRuns  int // nft commands the proxy ran
}

// newLab builds the node, its client and n pods, each pod serving on TCP
// and UDP port 8080 (see serve).
func newLab(tb testing.TB, n int) *lab {
	tb.Helper()
	requireNFT(tb)
	ctx := context.Background()
	r, x := randInt(tb, 50), 1+randInt(tb, 250)
	l := &lab{
		id:       randHex(tb, 8),
		cluster:  netip.MustParsePrefix(fmt.Sprintf("10.%d.0.0/16", 200+r)),
		podCIDR:  netip.MustParsePrefix(fmt.Sprintf("10.%d.1.0/24", 200+r)),
		gateway:  netip.MustParseAddr(fmt.Sprintf("10.%d.1.1", 200+r)),
		nodeIP:   netip.MustParseAddr(fmt.Sprintf("192.168.%d.1", x)),
		clientIP: netip.MustParseAddr(fmt.Sprintf("192.168.%d.2", x)),
	}
	l.bridge = "fsp" + l.id
	l.node = newNetNS(tb, "fsp"+l.id+"n")
	l.client = newNetNS(tb, "fsp"+l.id+"c")
	l.wireClient(tb)

	_, podNet, _ := net.ParseCIDR(l.podCIDR.String())
	_, clusterNet, _ := net.ParseCIDR(l.cluster.String())
	f, err := netfabric.New(netfabric.Config{PodCIDR: podNet, ClusterCIDR: clusterNet, Bridge: l.bridge,
		StateDir: tb.TempDir(), NetNSPrefix: "fsp" + l.id + "-", NFTable: "fsp_" + l.id,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := inNetNS(tb, l.node, func() error { return f.Destroy(ctx) }); err != nil {
			tb.Errorf("cleanup: %v", err)
		}
	})
	if err := inNetNS(tb, l.node, func() error { return f.Init(ctx) }); err != nil {
		tb.Fatal(err)
	}
	for i := 0; i < n; i++ {
		var pn podnet.PodNetwork
		if err := inNetNS(tb, l.node, func() (err error) {
			pn, err = f.Setup(ctx, podnet.PodRef{UID: fmt.Sprintf("%s-pod%d", l.id, i), Namespace: "default", Name: fmt.Sprintf("pod%d", i)})
			return err
		}); err != nil {
			tb.Fatal(err)
		}
		ip, _ := netip.AddrFromSlice(pn.IP)
		p := pod{name: fmt.Sprintf("pod%d", i), path: pn.NetNSPath, ip: ip.Unmap()}
		serve(tb, p)
		l.pods = append(l.pods, p)
	}

	l.proxy, err = New(Config{Table: "fsp-" + l.id, ClusterCIDR: l.cluster, PodCIDR: l.podCIDR, Bridge: l.bridge, Logger: testkit.Logger(tb)})
	if err != nil {
		tb.Fatal(err)
	}
	run := l.proxy.nft
	l.proxy.nft = func(ctx context.Context, stdin string, args ...string) ([]byte, error) {
		l.nftRuns++
		return run(ctx, stdin, args...)
	}
	tb.Cleanup(func() {
		if err := inNetNS(tb, l.node, func() error { return l.proxy.Destroy(ctx) }); err != nil {
			tb.Errorf("cleanup: %v", err)
		}
	})
	return l
}

// wireClient connects the client namespace to the node with a veth and
// routes each side's default through the other.
func (l *lab) wireClient(tb testing.TB) {
	tb.Helper()
	nodeNS, err := netns.GetFromPath(l.node)
	if err != nil {
		tb.Fatal(err)
	}
	defer nodeNS.Close()
	clientNS, err := netns.GetFromPath(l.client)
	if err != nil {
		tb.Fatal(err)
	}
	defer clientNS.Close()
	nh, err := netlink.NewHandleAt(nodeNS)
	if err != nil {
		tb.Fatal(err)
	}
	defer nh.Close()
	ch, err := netlink.NewHandleAt(clientNS)
	if err != nil {
		tb.Fatal(err)
	}
	defer ch.Close()
	attrs := netlink.NewLinkAttrs()
	attrs.Name = "up0"
	veth := netlink.NewVeth(attrs)
	veth.PeerName = "eth0"
	veth.PeerNamespace = netlink.NsFd(int(clientNS))
	if err := nh.LinkAdd(veth); err != nil {
		tb.Fatalf("client veth: %v", err)
	}
	for _, side := range []struct {
		h       *netlink.Handle
		link    string
		addr    netip.Addr
		gateway netip.Addr
	}{{nh, "up0", l.nodeIP, l.clientIP}, {ch, "eth0", l.clientIP, l.nodeIP}} {
		for _, name := range []string{"lo", side.link} {
			link, err := side.h.LinkByName(name)
			if err != nil {
				tb.Fatal(err)
			}
			if err := side.h.LinkSetUp(link); err != nil {
				tb.Fatal(err)
			}
			if name == "lo" {
				continue
			}
			if err := side.h.AddrAdd(link, &netlink.Addr{IPNet: &net.IPNet{IP: side.addr.AsSlice(), Mask: net.CIDRMask(24, 32)}}); err != nil {
				tb.Fatal(err)
			}
			if err := side.h.RouteAdd(&netlink.Route{LinkIndex: link.Attrs().Index, Gw: side.gateway.AsSlice()}); err != nil {
				tb.Fatalf("default route: %v", err)
			}
		}
	}
}

// serve answers on TCP and UDP port 8080 inside the pod's namespace with
// "<pod name> <client address:port>\n": who was reached, and who it saw.
func serve(tb testing.TB, p pod) {
	tb.Helper()
	var ln net.Listener
	var pc net.PacketConn
	if err := inNetNS(tb, p.path, func() (err error) {
		if ln, err = net.Listen("tcp4", ":8080"); err != nil {
			return err
		}
		pc, err = net.ListenPacket("udp4", ":8080")
		return err
	}); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ln.Close(); pc.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			fmt.Fprintf(c, "%s %s\n", p.name, c.RemoteAddr())
			c.Close()
		}
	}()
	go func() {
		buf := make([]byte, 64)
		for {
			_, addr, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(fmt.Appendf(nil, "%s %s\n", p.name, addr), addr)
		}
	}()
}

// reply is what one call got back.
type reply struct {
	pod  string
	peer netip.Addr // the client address the pod saw
}

// call connects from the namespace at path to addr over network ("tcp4"
// or "udp4") and returns the answer.
func call(tb testing.TB, path, network string, addr netip.AddrPort) (reply, error) {
	var c net.Conn
	if err := inNetNS(tb, path, func() (err error) {
		c, err = net.DialTimeout(network, addr.String(), 2*time.Second)
		return err
	}); err != nil {
		return reply{}, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if network == "udp4" {
		if _, err := c.Write([]byte("hi")); err != nil {
			return reply{}, err
		}
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return reply{}, fmt.Errorf("reading the answer of %s: %w", addr, err)
	}
	name, peer, ok := strings.Cut(strings.TrimSpace(line), " ")
	ap, err := netip.ParseAddrPort(peer)
	if !ok || err != nil {
		return reply{}, fmt.Errorf("answer %q", line)
	}
	return reply{pod: name, peer: ap.Addr().Unmap()}, nil
}

// calls makes n calls and counts the answers by pod and by client address
// seen; any failure fails the test.
func calls(tb testing.TB, path, network string, addr netip.AddrPort, n int) (byPod map[string]int, peers map[string]netip.Addr) {
	tb.Helper()
	byPod, peers = map[string]int{}, map[string]netip.Addr{}
	for i := 0; i < n; i++ {
		r, err := call(tb, path, network, addr)
		if err != nil {
			tb.Fatalf("call %d to %s %s: %v", i, network, addr, err)
		}
		byPod[r.pod]++
		if old, ok := peers[r.pod]; ok && old != r.peer {
			tb.Errorf("%s saw two client addresses: %s and %s", r.pod, old, r.peer)
		}
		peers[r.pod] = r.peer
	}
	return byPod, peers
}

func (l *lab) sync(tb testing.TB, svcs ...svc) {
	tb.Helper()
	if err := inNetNS(tb, l.node, func() error { return l.proxy.Sync(context.Background(), snapshot(svcs...)) }); err != nil {
		tb.Fatalf("sync: %v", err)
	}
}

// nft runs nft in the node namespace.
func (l *lab) nft(tb testing.TB, args ...string) (string, error) {
	var out []byte
	err := inNetNS(tb, l.node, func() (err error) {
		out, err = exec.Command("nft", args...).CombinedOutput()
		return err
	})
	return string(out), err
}

func (l *lab) eps(idx ...int) []ep {
	var out []ep
	for _, i := range idx {
		out = append(out, ep{ip: l.pods[i].ip.String()})
	}
	return out
}

func discardLog() *slog.Logger { return slog.New(slog.DiscardHandler) }
