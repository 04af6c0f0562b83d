package svcproxy

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/flotilla-dev/flotilla/internal/testkit"
	corev1 "k8s.io/api/core/v1"
)

var (
	vip  = netip.MustParseAddr("10.96.0.10")
	lbIP = netip.MustParseAddr("203.0.113.10")
)

// TestClusterIP: pods reach every ready endpoint through the VIP, with
// their own address (a pod that gets itself sees the bridge's address: the
// hairpin masquerade), over TCP and UDP; a not-ready endpoint stops getting
// connections after Sync; the node itself reaches the VIP.
func TestClusterIP(t *testing.T) {
	l := newLab(t, 3)
	web := svc{ns: "default", name: "web", clusterIP: vip.String(),
		ports: []port{tcp("http", 80, 8080), {name: "u", proto: corev1.ProtocolUDP, port: 53, target: 8080}},
		eps:   l.eps(0, 1, 2)}
	l.sync(t, web)
	client := l.pods[0]

	for _, network := range []string{"tcp4", "udp4"} {
		port := uint16(80)
		if network == "udp4" {
			port = 53
		}
		byPod, peers := calls(t, client.path, network, netip.AddrPortFrom(vip, port), 60)
		t.Logf("%s from %s: %v", network, client.name, byPod)
		for _, p := range l.pods {
			if byPod[p.name] == 0 {
				t.Errorf("%s: endpoint %s never reached in 60 connections", network, p.name)
			}
			want := client.ip
			if p.name == client.name {
				want = l.gateway // a pod reaching itself is masqueraded (see kernel.go)
			}
			if got, ok := peers[p.name]; ok && got != want {
				t.Errorf("%s: %s saw client %s, want %s", network, p.name, got, want)
			}
		}
	}

	web.eps[2].notReady = true
	l.sync(t, web)
	byPod, _ := calls(t, client.path, "tcp4", netip.AddrPortFrom(vip, 80), 40)
	if byPod["pod2"] != 0 || byPod["pod0"] == 0 || byPod["pod1"] == 0 {
		t.Errorf("after pod2 went unready: %v, want pod0 and pod1 only", byPod)
	}

	byPod, peers := calls(t, l.node, "tcp4", netip.AddrPortFrom(vip, 80), 20)
	t.Logf("from the node: %v %v", byPod, peers)
	if byPod["pod2"] != 0 || len(byPod) == 0 {
		t.Errorf("from the node: %v", byPod)
	}
}

// TestUDPStaleFlows: a UDP client that keeps its socket (its source port)
// moves to another endpoint when its endpoint leaves the service, because
// Sync deletes the conntrack entry that still pointed at it.
func TestUDPStaleFlows(t *testing.T) {
	l := newLab(t, 3)
	dns := svc{ns: "kube-system", name: "dns", clusterIP: vip.String(),
		ports: []port{{name: "dns", proto: corev1.ProtocolUDP, port: 53, target: 8080}}, eps: l.eps(1, 2)}
	l.sync(t, dns)
	var c net.Conn
	if err := inNetNS(t, l.pods[0].path, func() (err error) { c, err = net.Dial("udp4", netip.AddrPortFrom(vip, 53).String()); return err }); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ask := func() string {
		t.Helper()
		c.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Write([]byte("hi")); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 100)
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("no answer: %v", err)
		}
		name, _, _ := strings.Cut(string(buf[:n]), " ")
		return name
	}
	first := ask()
	if again := ask(); again != first {
		t.Fatalf("one UDP flow answered by %s then %s", first, again)
	}
	if first == "pod1" {
		dns.eps = l.eps(2)
	} else {
		dns.eps = l.eps(1)
	}
	l.sync(t, dns) // the pod that answered is still running: only conntrack could send us back to it
	if got := ask(); got == first {
		t.Errorf("still answered by %s after it left the service", got)
	}
}

// TestExternalTraffic: a NodePort on the node's address and a
// load-balancer IP work from outside the cluster, masqueraded to the
// node's address; a pod of the node calling the load-balancer IP keeps its
// own address.
func TestExternalTraffic(t *testing.T) {
	l := newLab(t, 3)
	np := svc{ns: "shop", name: "front", typ: corev1.ServiceTypeNodePort, clusterIP: "10.96.0.11",
		ports: []port{{name: "http", proto: corev1.ProtocolTCP, port: 80, target: 8080, nodePort: 30080}}, eps: l.eps(0, 1)}
	lb := svc{ns: "shop", name: "lb", typ: corev1.ServiceTypeLoadBalancer, clusterIP: "10.96.0.12", lbIPs: []string{lbIP.String()},
		ports: []port{{name: "http", proto: corev1.ProtocolTCP, port: 80, target: 8080, nodePort: 30081}}, eps: l.eps(1, 2)}
	l.sync(t, np, lb)

	for _, c := range []struct {
		what string
		addr netip.AddrPort
		eps  []string
	}{
		{"NodePort", netip.AddrPortFrom(l.nodeIP, 30080), []string{"pod0", "pod1"}},
		{"load-balancer IP", netip.AddrPortFrom(lbIP, 80), []string{"pod1", "pod2"}},
		{"load-balancer's NodePort", netip.AddrPortFrom(l.nodeIP, 30081), []string{"pod1", "pod2"}},
	} {
		byPod, peers := calls(t, l.client, "tcp4", c.addr, 30)
		t.Logf("%s %s from outside: %v %v", c.what, c.addr, byPod, peers)
		for _, name := range c.eps {
			if byPod[name] == 0 {
				t.Errorf("%s: %s never reached", c.what, name)
			}
		}
		if len(byPod) != len(c.eps) {
			t.Errorf("%s: reached %v, want only %v", c.what, byPod, c.eps)
		}
		for name, peer := range peers {
			if peer != l.gateway {
				t.Errorf("%s: %s saw client %s, want the node's %s (masqueraded)", c.what, name, peer, l.gateway)
			}
		}
	}

	_, peers := calls(t, l.pods[0].path, "tcp4", netip.AddrPortFrom(lbIP, 80), 20)
	for name, peer := range peers {
		if peer != l.pods[0].ip {
			t.Errorf("pod0 → load-balancer IP: %s saw %s, want pod0's own %s", name, peer, l.pods[0].ip)
		}
	}
	byPod, _ := calls(t, l.node, "tcp4", netip.AddrPortFrom(l.nodeIP, 30080), 20)
	if byPod["pod0"] == 0 || byPod["pod1"] == 0 || byPod["pod2"] != 0 {
		t.Errorf("the node → its own NodePort: %v, want pod0 and pod1", byPod)
	}
}

// TestSessionAffinity: a ClientIP service sends each client to one
// endpoint, through its cluster IP and its NodePort, and the memberships
// survive Syncs that change other services.
func TestSessionAffinity(t *testing.T) {
	l := newLab(t, 3)
	sticky := svc{ns: "default", name: "sticky", typ: corev1.ServiceTypeNodePort, clusterIP: vip.String(), affinity: -1,
		ports: []port{{name: "http", proto: corev1.ProtocolTCP, port: 80, target: 8080, nodePort: 30090}}, eps: l.eps(0, 1, 2)}
	l.sync(t, sticky)

	one := func(path string, addr netip.AddrPort) string {
		t.Helper()
		byPod, _ := calls(t, path, "tcp4", addr, 15)
		if len(byPod) != 1 {
			t.Fatalf("%s: one client reached %v, want a single endpoint", addr, byPod)
		}
		for name := range byPod {
			return name
		}
		return ""
	}
	fromPod := one(l.pods[0].path, netip.AddrPortFrom(vip, 80))
	fromOutside := one(l.client, netip.AddrPortFrom(l.nodeIP, 30090))
	t.Logf("pod0 sticks to %s, the outside client to %s", fromPod, fromOutside)

	for i := 0; i < 3; i++ {
		other := svc{ns: "default", name: "other", clusterIP: "10.96.0.99", ports: []port{tcp("http", 80, 8080)}, eps: l.eps(i % 3)}
		l.sync(t, sticky, other)
		out, err := l.nft(t, "list", "table", "ip", l.proxy.cfg.Table)
		if err != nil {
			t.Fatal(err)
		}
		if n := strings.Count(out, l.pods[0].ip.String()+" expires"); n != 1 {
			t.Errorf("after sync %d: pod0 is in %d affinity sets, want 1", i, n)
		}
		if got := one(l.pods[0].path, netip.AddrPortFrom(vip, 80)); got != fromPod {
			t.Errorf("after sync %d: pod0 moved from %s to %s", i, fromPod, got)
		}
		if got := one(l.client, netip.AddrPortFrom(l.nodeIP, 30090)); got != fromOutside {
			t.Errorf("after sync %d: the outside client moved from %s to %s", i, fromOutside, got)
		}
	}
}

// TestNoEndpointsRejected: connecting to a service without a ready
// endpoint fails at once with "connection refused" (TCP and UDP, VIP and
// NodePort, from a pod, from outside and from the node), not a timeout.
func TestNoEndpointsRejected(t *testing.T) {
	l := newLab(t, 1)
	l.sync(t,
		svc{ns: "default", name: "empty", clusterIP: vip.String(),
			ports: []port{tcp("http", 80, 8080), {name: "u", proto: corev1.ProtocolUDP, port: 53, target: 8080}}},
		svc{ns: "default", name: "unready", typ: corev1.ServiceTypeNodePort, clusterIP: "10.96.0.11",
			ports: []port{{name: "http", proto: corev1.ProtocolTCP, port: 80, target: 8080, nodePort: 30099}},
			eps:   []ep{{ip: l.pods[0].ip.String(), notReady: true}}})
	for _, c := range []struct {
		from, network string
		addr          netip.AddrPort
	}{
		{l.pods[0].path, "tcp4", netip.AddrPortFrom(vip, 80)},
		{l.pods[0].path, "udp4", netip.AddrPortFrom(vip, 53)},
		{l.node, "tcp4", netip.AddrPortFrom(vip, 80)},
		{l.client, "tcp4", netip.AddrPortFrom(l.nodeIP, 30099)},
		{l.pods[0].path, "tcp4", netip.AddrPortFrom(l.gateway, 30099)},
	} {
		start := time.Now()
		_, err := call(t, c.from, c.network, c.addr)
		took := time.Since(start)
		if !errors.Is(err, syscall.ECONNREFUSED) || took > 1500*time.Millisecond { // a dropped SYN would wait for 2 s
			t.Errorf("%s %s from %s: %v after %v, want connection refused at once", c.network, c.addr, c.from, err, took)
		}
	}
}

// TestSyncNoopAndDestroy: the same snapshot runs no nft; Destroy removes
// the table; Sync after Destroy programs it again.
func TestSyncNoopAndDestroy(t *testing.T) {
	l := newLab(t, 1)
	s := svc{ns: "default", name: "web", clusterIP: vip.String(), ports: []port{tcp("http", 80, 8080)}, eps: l.eps(0)}
	l.sync(t, s)
	runs := l.nftRuns
	l.sync(t, s)
	l.sync(t, s)
	if l.nftRuns != runs {
		t.Errorf("unchanged snapshot ran nft %d more times", l.nftRuns-runs)
	}
	s.eps = nil
	l.sync(t, s)
	if l.nftRuns != runs+1 {
		t.Errorf("a change ran nft %d times, want once", l.nftRuns-runs)
	}
	ctx := context.Background()
	if err := inNetNS(t, l.node, func() error { return l.proxy.Destroy(ctx) }); err != nil {
		t.Fatal(err)
	}
	if out, err := l.nft(t, "list", "table", "ip", l.proxy.cfg.Table); err == nil {
		t.Errorf("table still there after Destroy:\n%s", out)
	}
	l.sync(t, s)
	if _, err := l.nft(t, "list", "table", "ip", l.proxy.cfg.Table); err != nil {
		t.Errorf("Sync after Destroy: %v", err)
	}
}

// TestRestartAndRecovery: a new Proxy on an existing table (an agent
// restart) keeps the affinity memberships; objects no longer wanted are
// deleted; a transaction that fails because the proxy's idea of the table
// is wrong falls back to replacing it.
func TestRestartAndRecovery(t *testing.T) {
	requireNFT(t)
	ns := newNetNS(t, "fsp"+randHex(t, 8)+"r")
	table := "fsp-" + randHex(t, 8)
	cfg := Config{Table: table, PodCIDR: netip.MustParsePrefix("10.244.1.0/24"), Bridge: "fspnone", Logger: testkit.Logger(t)}
	ctx := context.Background()
	in := func(fn func() error) {
		t.Helper()
		if err := inNetNS(t, ns, fn); err != nil {
			t.Fatal(err)
		}
	}
	nft := func(args ...string) string {
		t.Helper()
		var out []byte
		in(func() (err error) {
			out, err = exec.Command("nft", args...).CombinedOutput()
			if err != nil {
				return errors.New(string(out))
			}
			return nil
		})
		return string(out)
	}
	sticky := svc{ns: "default", name: "sticky", clusterIP: "10.96.0.10", affinity: -1, ports: []port{tcp("http", 80, 8080)},
		eps: []ep{{ip: "10.244.1.5"}, {ip: "10.244.1.6"}, {ip: "10.244.2.7"}}}
	first, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	in(func() error { return first.Sync(ctx, snapshot(sticky)) })
	t.Cleanup(func() { inNetNS(t, ns, func() error { return first.Destroy(ctx) }) })
	var set string
	for _, o := range first.applied.objects {
		if o.kind == kindAffinity && strings.Contains(o.name, "10.244.1.6") {
			set = o.name
		}
	}
	nft("add", "element", "ip", table, set, "{ 10.244.1.99 }")

	second, err := New(cfg) // the agent restarted
	if err != nil {
		t.Fatal(err)
	}
	plain := svc{ns: "default", name: "web", clusterIP: "10.96.0.20", ports: []port{tcp("http", 80, 8080)},
		eps: []ep{{ip: "10.244.1.5"}, {ip: "10.244.1.6"}, {ip: "10.244.2.7"}}}
	in(func() error { return second.Sync(ctx, snapshot(sticky, plain)) })
	if !strings.Contains(nft("list", "set", "ip", table, set), "10.244.1.99") {
		t.Error("a restarted proxy's first Sync dropped a client's affinity")
	}

	plain.eps = plain.eps[:1]
	sticky.eps = sticky.eps[1:]
	in(func() error { return second.Sync(ctx, snapshot(sticky, plain)) })
	out := nft("-t", "list", "table", "ip", table)
	for _, gone := range []string{"endpoints-2", "pick-cluster-3", "10.244.1.5/8080"} {
		if strings.Contains(out, gone) {
			t.Errorf("%s still in the table after it was no longer wanted", gone)
		}
	}
	if !strings.Contains(nft("list", "set", "ip", table, set), "10.244.1.99") {
		t.Error("an update in place dropped a client's affinity")
	}

	// An hour after the last rewrite, a Sync rewrites the whole table
	// rather than update it, in case anything else edited it.
	clock := time.Now()
	second.now = func() time.Time { return clock }
	plain.eps = plain.eps[:0:0]
	plain.eps = append(plain.eps, ep{ip: "10.244.1.7"})
	in(func() error { return second.Sync(ctx, snapshot(sticky, plain)) })
	plain.eps = append(plain.eps, ep{ip: "10.244.1.8"})
	in(func() error { return second.Sync(ctx, snapshot(sticky, plain)) })
	if second.lastMode != "update" {
		t.Errorf("Sync within the hour: %q, want an update", second.lastMode)
	}
	clock = clock.Add(fullSyncPeriod)
	plain.eps = plain.eps[:1]
	in(func() error { return second.Sync(ctx, snapshot(sticky, plain)) })
	if second.lastMode != "rewrite" {
		t.Errorf("Sync an hour later: %q, want a rewrite", second.lastMode)
	}

	// Someone deletes an element behind the proxy's back: the next update
	// (which deletes it too) fails, and Sync rewrites the table, keeping
	// the affinities.
	nft("delete", "element", "ip", table, "service-ips", "{ 10.96.0.20 . tcp . 80 }")
	plain.eps = nil
	in(func() error { return second.Sync(ctx, snapshot(sticky, plain)) })
	if second.lastMode != "rewrite" {
		t.Errorf("Sync after a lost element: %q, want a rewrite", second.lastMode)
	}
	if out := nft("list", "map", "ip", table, "no-endpoint-services"); !strings.Contains(out, "10.96.0.20 . tcp . 80") {
		t.Errorf("after the rewrite the table is not the rendered one:\n%s", out)
	}
	if !strings.Contains(nft("list", "set", "ip", table, set), "10.244.1.99") {
		t.Error("a rewrite dropped a client's affinity")
	}

	// Someone makes a map under a name the next rendering needs, of
	// another type: neither an update nor a rewrite can declare it, and
	// Sync replaces the table.
	nft("add", "map", "ip", table, "endpoints-3", "{ type ipv4_addr : ipv4_addr; }")
	plain.eps = []ep{{ip: "10.244.1.5"}, {ip: "10.244.1.6"}, {ip: "10.244.2.7"}, {ip: "10.244.2.8"}}
	in(func() error { return second.Sync(ctx, snapshot(sticky, plain)) })
	if second.lastMode != "replace" {
		t.Errorf("Sync after a foreign set: %q, want a replacement", second.lastMode)
	}
	if out := nft("list", "map", "ip", table, "endpoints-3"); !strings.Contains(out, "10.96.0.20 . tcp . 80 : 10.244.2.8 . 8080") {
		t.Errorf("after the replacement the table is not the rendered one:\n%s", out)
	}
}
