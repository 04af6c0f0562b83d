package lbip

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flotilla-dev/flotilla/internal/testkit"
	"github.com/flotilla-dev/flotilla/netfabric"
	"github.com/flotilla-dev/flotilla/netfabric/svcview"
)

func TestOwnerIsStableAndSpread(t *testing.T) {
	nodes := []string{"node1", "node2", "node3"}
	counts := map[string]int{}
	for i := range 300 {
		ip := netip.AddrFrom4([4]byte{10, 0, byte(i / 250), byte(i % 250)})
		o := Owner(ip, nodes)
		counts[o]++
		if o2 := Owner(ip, []string{"node3", "node1", "node2"}); o2 != o {
			t.Fatalf("owner of %s depends on the order of nodes: %s vs %s", ip, o, o2)
		}
		// Removing a node that does not hold ip never moves it.
		for _, gone := range nodes {
			if gone == o {
				continue
			}
			var rest []string
			for _, n := range nodes {
				if n != gone {
					rest = append(rest, n)
				}
			}
			if Owner(ip, rest) != o {
				t.Fatalf("removing %s moved %s away from %s", gone, ip, o)
			}
		}
	}
	for _, n := range nodes {
		if counts[n] < 60 {
			t.Errorf("node %s holds %d of 300 addresses: not spread (%v)", n, counts[n], counts)
		}
	}
	if Owner(netip.MustParseAddr("10.0.0.1"), nil) != "" {
		t.Error("an owner among no nodes")
	}
}

// TestTakeoverOnARP runs two "nodes" and a "client" in network namespaces on
// one bridge: exactly the owner holds the address and the client resolves
// it to the owner's MAC; when the owner dies, the other node takes over and
// its gratuitous ARP repoints the client's existing neighbour entry.
func TestTakeoverOnARP(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces")
	}
	id := randHex(t)
	sw, a, b, c := "lbs"+id, "lba"+id, "lbb"+id, "lbc"+id
	for _, ns := range []string{sw, a, b, c} {
		sh(t, "ip", "netns", "add", ns)
		t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	}
	sh(t, "ip", "-n", sw, "link", "add", "br0", "type", "bridge")
	sh(t, "ip", "-n", sw, "link", "set", "br0", "up")
	addrs := map[string]string{a: "198.51.100.1/24", b: "198.51.100.2/24", c: "198.51.100.3/24"}
	for _, ns := range []string{a, b, c} {
		sh(t, "ip", "-n", sw, "link", "add", "p"+ns, "type", "veth", "peer", "name", "eth0", "netns", ns)
		sh(t, "ip", "-n", sw, "link", "set", "p"+ns, "master", "br0", "up")
		sh(t, "ip", "-n", ns, "addr", "add", addrs[ns], "dev", "eth0")
		sh(t, "ip", "-n", ns, "link", "set", "eth0", "up")
		sh(t, "ip", "-n", ns, "link", "set", "lo", "up")
	}
	lb := netip.MustParseAddr("198.51.100.200")
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web"}, Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer}}
	svc.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: lb.String()}}
	// A Service whose status names an address outside the pool (written
	// straight into the store: admission refuses it) is never held.
	outside := netip.MustParseAddr("198.51.100.201")
	rogue := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "rogue"}, Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer}}
	rogue.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: outside.String()}}
	snap := svcview.NewSnapshot([]*corev1.Service{svc, rogue}, nil, nil, nil)

	ann := map[string]*Announcer{}
	for _, ns := range []string{a, b} {
		an, err := New(Config{NodeName: ns, Link: "eth0", InPool: func(a netip.Addr) bool { return a == lb }})
		if err != nil {
			t.Fatal(err)
		}
		ann[ns] = an
	}
	alive := []string{a, b}
	owner := Owner(lb, alive)
	other := a
	if owner == a {
		other = b
	}
	for _, ns := range alive {
		inNS(t, ns, func() error { return ann[ns].Sync(context.Background(), snap, alive) })
	}
	if !holds(t, owner, lb) || holds(t, other, lb) {
		t.Fatalf("want only %s to hold %s", owner, lb)
	}
	if holds(t, a, outside) || holds(t, b, outside) {
		t.Fatalf("%s, outside the pool, is held", outside)
	}
	// The client's kernel resolves the address to the owner.
	inNS(t, c, func() error {
		conn, err := net.Dial("udp4", netip.AddrPortFrom(lb, 9).String())
		if err != nil {
			return err
		}
		defer conn.Close()
		_, err = conn.Write([]byte("x"))
		return err
	})
	eventuallyNeigh(t, c, lb, mac(t, owner))

	// The owner dies (its link goes down); the survivor takes over.
	sh(t, "ip", "-n", owner, "link", "set", "eth0", "down")
	// Kept sleep: real (kernel) time must pass, as a real failure detection
	// takes: the client's kernel ignores ARP for an entry updated less than
	// its neighbour lock time (1 s) ago, and no clock of ours drives that.
	time.Sleep(1100 * time.Millisecond)
	inNS(t, other, func() error { return ann[other].Sync(context.Background(), snap, []string{other}) })
	if !holds(t, other, lb) {
		t.Fatalf("%s did not take %s over", other, lb)
	}
	eventuallyNeigh(t, c, lb, mac(t, other))

	// Release gives it up.
	inNS(t, other, func() error { return ann[other].Release(context.Background()) })
	if holds(t, other, lb) {
		t.Fatal("Release left the address")
	}

	// A server's API VIP on the same link, under its own label: the
	// node's announcer leaves it alone, and the other way round.
	vip := netip.MustParseAddr("198.51.100.100")
	server, err := New(Config{NodeName: other, Link: "eth0", Label: "eth0:vip", InPool: func(a netip.Addr) bool { return a == vip }})
	if err != nil {
		t.Fatal(err)
	}
	inNS(t, other, func() error { return server.Hold(context.Background(), []netip.Addr{vip, outside}) })
	inNS(t, other, func() error { return ann[other].Sync(context.Background(), snap, []string{other}) })
	if !holds(t, other, vip) || !holds(t, other, lb) || holds(t, other, outside) {
		t.Fatalf("want %s to hold the VIP %s and %s (not %s)", other, vip, lb, outside)
	}
	inNS(t, c, func() error {
		conn, err := net.Dial("udp4", netip.AddrPortFrom(vip, 9).String())
		if err != nil {
			return err
		}
		defer conn.Close()
		_, err = conn.Write([]byte("x"))
		return err
	})
	eventuallyNeigh(t, c, vip, mac(t, other))
	inNS(t, other, func() error { return server.Release(context.Background()) })
	if holds(t, other, vip) || !holds(t, other, lb) {
		t.Fatal("the VIP's Release took the wrong addresses")
	}
}

func randHex(t *testing.T) string {
	b := make([]byte, 3)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func sh(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// inNS runs fn inside the named namespace.
func inNS(t *testing.T, name string, fn func() error) {
	t.Helper()
	if err := netfabric.InNetNS("/run/netns/"+name, fn); err != nil {
		t.Fatalf("in %s: %v", name, err)
	}
}

func holds(t *testing.T, ns string, ip netip.Addr) bool {
	return strings.Contains(sh(t, "ip", "-n", ns, "-4", "addr", "show", "dev", "eth0"), " "+ip.String()+"/32 ")
}

func mac(t *testing.T, ns string) string {
	var m string
	inNS(t, ns, func() error {
		l, err := netlink.LinkByName("eth0")
		if err == nil {
			m = l.Attrs().HardwareAddr.String()
		}
		return err
	})
	return m
}

func eventuallyNeigh(t *testing.T, ns string, ip netip.Addr, want string) {
	t.Helper()
	testkit.Eventually(t, fmt.Sprintf("%s's neighbour %s at %s", ns, ip, want), 10*time.Second, func() error {
		if got := sh(t, "ip", "-n", ns, "neigh", "show", ip.String()); !strings.Contains(got, want) {
			return fmt.Errorf("neighbour entry %q", strings.TrimSpace(got))
		}
		return nil
	})
}
