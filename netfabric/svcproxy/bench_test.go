package svcproxy

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/flotilla-dev/flotilla/netfabric/svcview"
)

// bigCluster is 1,000 services with 5 endpoints each (5,000 endpoints): all
// have a cluster IP, every 4th is a NodePort, every 10th a LoadBalancer
// (with a NodePort and an ingress IP), every 50th has ClientIP affinity
// (20 services, 100 per-endpoint chains and sets). Endpoints spread over
// 10.244.0.0/16, about 1 in 50 on this node's 10.244.1.0/24. With
// unready = k, one endpoint of service k is not ready.
func bigCluster(unready int) *svcview.Snapshot {
	var svcs []svc
	for i := 0; i < 1000; i++ {
		s := svc{ns: fmt.Sprintf("ns%d", i%20), name: fmt.Sprintf("svc%d", i),
			clusterIP: fmt.Sprintf("10.96.%d.%d", i/250, i%250+1),
			ports:     []port{tcp("http", 80, 8080)}}
		switch {
		case i%10 == 0:
			s.typ = corev1.ServiceTypeLoadBalancer
			s.lbIPs = []string{fmt.Sprintf("192.0.2.%d", i/10+1)}
			s.ports[0].nodePort = int32(30000 + i)
		case i%4 == 0:
			s.typ = corev1.ServiceTypeNodePort
			s.ports[0].nodePort = int32(30000 + i)
		}
		if i%50 == 1 {
			s.affinity = -1
		}
		for e := 0; e < 5; e++ {
			n := i*5 + e
			s.eps = append(s.eps, ep{ip: fmt.Sprintf("10.244.%d.%d", n%50, n/50+2), notReady: i == unready && e == 2})
		}
		svcs = append(svcs, s)
	}
	return snapshot(svcs...)
}

// BenchmarkRender1000Services5000Endpoints is the pure part of a Sync.
func BenchmarkRender1000Services5000Endpoints(b *testing.B) {
	snap := bigCluster(-1)
	var size int
	for b.Loop() {
		size = len(render(testParams, snap).text)
	}
	b.ReportMetric(float64(size), "bytes")
}

// BenchmarkSync1000Services5000Endpoints is one Sync that changes
// something (one endpoint's readiness, alternately), on a real namespace:
// render, the nft transaction and the kernel's commit (target ≤ 200 ms).
// "update" is the usual Sync (what changed); "rewrite" the whole table, as
// after an agent restart (with the listing of the table it needs then) and
// once an hour:
//
//	go test -run '^$' -bench Sync1000 -benchtime 20x ./netfabric/svcproxy/
func BenchmarkSync1000Services5000Endpoints(b *testing.B) {
	for _, mode := range []string{"update", "rewrite"} {
		b.Run(mode, func(b *testing.B) {
			requireNFT(b)
			ns := newNetNS(b, "fsp"+randHex(b, 8)+"b")
			p, err := New(Config{Table: "fsp-" + randHex(b, 8), PodCIDR: netip.MustParsePrefix("10.244.1.0/24"), Bridge: "fspnone"})
			if err != nil {
				b.Fatal(err)
			}
			snaps := []*svcview.Snapshot{bigCluster(3), bigCluster(7)}
			ctx := context.Background()
			var durs []time.Duration
			var size int
			err = inNetNS(b, ns, func() error {
				defer p.Destroy(ctx)
				if err := p.Sync(ctx, bigCluster(-1)); err != nil { // the first, which creates the table
					return err
				}
				i := 0
				for b.Loop() {
					if mode == "rewrite" {
						p.applied = nil // as after a restart: list, then rewrite
					}
					start := time.Now()
					if err := p.Sync(ctx, snaps[i%2]); err != nil {
						return err
					}
					durs = append(durs, time.Since(start))
					if p.lastMode != mode {
						return fmt.Errorf("Sync did a %q", p.lastMode)
					}
					i++
				}
				size = len(p.applied.text)
				return nil
			})
			if err != nil {
				b.Fatal(err)
			}
			slices.Sort(durs)
			ms := func(d time.Duration) float64 { return float64(d) / 1e6 }
			b.ReportMetric(ms(durs[len(durs)/2]), "median-ms")
			b.ReportMetric(ms(durs[len(durs)-1]), "max-ms")
			b.ReportMetric(float64(size), "table-bytes")
		})
	}
}

// rrServer answers every byte it reads with one byte, on port 9000 in the
// pod's namespace, until the client closes; it closes first after a
// request when close is set (so TIME_WAIT piles up on its side, not in the
// client's ephemeral ports).
func rrServer(tb testing.TB, p pod) {
	tb.Helper()
	var ln net.Listener
	if err := inNetNS(tb, p.path, func() (err error) { ln, err = net.Listen("tcp4", ":9000"); return err }); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 1)
				for {
					if _, err := c.Read(buf); err != nil {
						return
					}
					if _, err := c.Write(buf); err != nil {
						return
					}
					if buf[0] == 'c' {
						return
					}
				}
			}()
		}
	}()
}

// connRequests makes n requests, each on a new TCP connection (dial, one
// byte each way, the server closes), and returns how long they took.
func connRequests(addr string, n int) (time.Duration, error) {
	start := time.Now()
	buf := []byte{'c'}
	for i := 0; i < n; i++ {
		c, err := net.DialTimeout("tcp4", addr, 2*time.Second)
		if err != nil {
			return 0, err
		}
		if _, err := c.Write(buf); err != nil {
			c.Close()
			return 0, err
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			c.Close()
			return 0, err
		}
		c.Read(buf) // the server's FIN
		c.Close()
		buf[0] = 'c'
	}
	return time.Since(start), nil
}

// keepAliveRequests makes n requests on one connection and returns how
// long they took.
func keepAliveRequests(addr string, n int) (time.Duration, error) {
	c, err := net.DialTimeout("tcp4", addr, 2*time.Second)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	buf := []byte{'k'}
	start := time.Now()
	for i := 0; i < n; i++ {
		if _, err := c.Write(buf); err != nil {
			return 0, err
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			return 0, err
		}
	}
	return time.Since(start), nil
}

// BenchmarkVIPvsPodIP compares a client pod talking to a server pod on the
// same node through the service IP and straight to the pod IP, with a new
// TCP connection per request (conntrack and a DNAT per connection: the
// worst case) and, more cheaply, on one kept-alive connection. Each
// iteration interleaves blocks of requests to both (50 connections or 500
// round trips a block, in alternating order) so that both see the same
// background load — the machine is shared — and the ratios reported are
// the medians of the per-iteration VIP/pod rate ratios (target ≥ 0.9):
//
//	go test -run '^$' -bench VIPvsPodIP -benchtime 10x ./netfabric/svcproxy/
func BenchmarkVIPvsPodIP(b *testing.B) {
	const blocks, conns, roundTrips = 10, 50, 500
	l := newLab(b, 3)
	l.proxy.log = discardLog()
	server := l.pods[0]
	rrServer(b, server)
	l.sync(b, svc{ns: "default", name: "rr", clusterIP: vip.String(), ports: []port{tcp("rr", 80, 9000)}, eps: l.eps(0)})
	benchVIPvsPodIP(b, [2]pod{l.pods[1], l.pods[2]}, netip.AddrPortFrom(vip, 80), netip.AddrPortFrom(server.ip, 9000), blocks, conns, roundTrips)
}

// BenchmarkVIPvsPodIPOneRuleDNAT is the same measurement with a table of
// one DNAT rule in place of the proxy's: what a DNAT on the bridge costs
// the kernel by itself, the floor for BenchmarkVIPvsPodIP.
func BenchmarkVIPvsPodIPOneRuleDNAT(b *testing.B) {
	const blocks, conns, roundTrips = 10, 50, 500
	l := newLab(b, 3)
	server := l.pods[0]
	rrServer(b, server)
	table := "fsp-dnat-" + l.id
	rules := fmt.Sprintf("table ip %s {\n\tchain pre {\n\t\ttype nat hook prerouting priority dstnat; policy accept;\n"+
		"\t\tip daddr %s tcp dport 80 dnat to %s:9000\n\t}\n}\n", table, vip, server.ip)
	ctx := context.Background()
	if err := inNetNS(b, l.node, func() error { _, err := runNFT(ctx, rules, "-f", "-"); return err }); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		inNetNS(b, l.node, func() error { _, err := runNFT(ctx, "", "delete", "table", "ip", table); return err })
	})
	benchVIPvsPodIP(b, [2]pod{l.pods[1], l.pods[2]}, netip.AddrPortFrom(vip, 80), netip.AddrPortFrom(server.ip, 9000), blocks, conns, roundTrips)
}

// benchVIPvsPodIP measures clients[0] → viaVIP against clients[1] →
// direct. Two client pods (alike: same node, same bridge), because one
// client calling both would reuse a source port of a direct connection for
// one through the VIP while conntrack still holds the first in TIME_WAIT:
// the DNATed connection's reply tuple then clashes with it, and its SYN is
// dropped (a 1 s retransmission) — a benchmark artefact, not a cost.
func benchVIPvsPodIP(b *testing.B, clients [2]pod, viaVIP, direct netip.AddrPort, blocks, conns, roundTrips int) {
	addrs := []string{viaVIP.String(), direct.String()}
	var vipConn, podConn, vipKA, podKA, connRatios, kaRatios []float64
	// A worker per client, each on a thread in its client's namespace.
	type job struct {
		conns, roundTrips int
		done              chan error
		took              *time.Duration
	}
	var jobs [2]chan job
	for j := range 2 {
		jobs[j] = make(chan job)
		go inNetNS(b, clients[j].path, func() error {
			for jb := range jobs[j] {
				var d time.Duration
				var err error
				if jb.conns > 0 {
					d, err = connRequests(addrs[j], jb.conns)
				} else {
					d, err = keepAliveRequests(addrs[j], jb.roundTrips)
				}
				*jb.took += d
				jb.done <- err
			}
			return nil
		})
		defer close(jobs[j])
	}
	do := func(j, conns, roundTrips int, took *time.Duration) error {
		done := make(chan error)
		jobs[j] <- job{conns, roundTrips, done, took}
		if err := <-done; err != nil {
			return fmt.Errorf("%s: %w", addrs[j], err)
		}
		return nil
	}
	err := func() error {
		var warm time.Duration
		for j := range 2 {
			if err := do(j, 50, 0, &warm); err != nil {
				return err
			}
		}
		for b.Loop() {
			var connTime, kaTime [2]time.Duration
			for blk := 0; blk < blocks; blk++ {
				for k := range 2 {
					j := (k + blk) % 2
					if err := do(j, conns, 0, &connTime[j]); err != nil {
						return err
					}
					if err := do(j, 0, roundTrips, &kaTime[j]); err != nil {
						return err
					}
				}
			}
			rate := func(n int, d time.Duration) float64 { return float64(blocks*n) / d.Seconds() }
			vipConn, podConn = append(vipConn, rate(conns, connTime[0])), append(podConn, rate(conns, connTime[1]))
			vipKA, podKA = append(vipKA, rate(roundTrips, kaTime[0])), append(podKA, rate(roundTrips, kaTime[1]))
			connRatios = append(connRatios, connTime[1].Seconds()/connTime[0].Seconds())
			kaRatios = append(kaRatios, kaTime[1].Seconds()/kaTime[0].Seconds())
		}
		return nil
	}()
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(median(vipConn), "vip-conn/s")
	b.ReportMetric(median(podConn), "pod-conn/s")
	b.ReportMetric(median(connRatios), "vip/pod-conn")
	b.ReportMetric(slices.Min(connRatios), "vip/pod-conn-min")
	b.ReportMetric(slices.Max(connRatios), "vip/pod-conn-max")
	b.ReportMetric(median(vipKA), "vip-rr/s")
	b.ReportMetric(median(podKA), "pod-rr/s")
	b.ReportMetric(median(kaRatios), "vip/pod-keepalive")
	b.ReportMetric(0, "ns/op")
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}
