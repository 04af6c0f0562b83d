package netfabric

import (
	"io"
	"net"
	"slices"
	"testing"
	"time"
)

// benchBytes is what one transfer moves.
const benchBytes = 64 << 20

// sinkServer listens on :7000 in the namespace at path; each connection is
// read to EOF (1 MiB reads) and acknowledged with one byte.
func sinkServer(tb testing.TB, path string) {
	tb.Helper()
	var ln net.Listener
	if err := inNetNS(tb, path, func() (err error) { ln, err = net.Listen("tcp4", ":7000"); return err }); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ln.Close() })
	go func() {
		buf := make([]byte, 1<<20)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			for {
				if _, err := c.Read(buf); err != nil {
					break
				}
			}
			c.Write([]byte{1})
			c.Close()
		}
	}()
}

// transfer sends benchBytes from the namespace at path to ip:7000 and
// returns how long it took until the server acknowledged all of it.
func transfer(tb testing.TB, path string, ip net.IP, buf []byte) time.Duration {
	tb.Helper()
	start := time.Now()
	var c net.Conn
	if err := inNetNS(tb, path, func() (err error) {
		c, err = net.DialTimeout("tcp4", net.JoinHostPort(ip.String(), "7000"), 3*time.Second)
		return err
	}); err != nil {
		tb.Fatal(err)
	}
	defer c.Close()
	for sent := 0; sent < benchBytes; sent += len(buf) {
		if _, err := c.Write(buf); err != nil {
			tb.Fatal(err)
		}
	}
	c.(*net.TCPConn).CloseWrite()
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
		tb.Fatalf("waiting for the acknowledgement: %v", err)
	}
	return time.Since(start)
}

// BenchmarkPodToPodThroughput measures one TCP stream (a Go copy of 64 MiB
// per transfer) from a pod to a pod on the same node (veth → bridge →
// veth) and to a pod on another node (… → VXLAN → underlay veth → switch
// bridge → … → VXLAN → bridge → veth), alternating so that both see the
// same load, and reports both rates and their ratio (target ≥ 0.7; the
// median of the per-iteration ratios):
//
//	go test -run '^$' -bench BenchmarkPodToPodThroughput -benchtime 5x ./netfabric/
func BenchmarkPodToPodThroughput(b *testing.B) {
	l := newLab(b, 2, discardLogger())
	a, other := l.nodes[0], l.nodes[1]
	a.sync(b, l.peers())
	other.sync(b, l.peers())
	client := a.setupPod(b, "bench-client-"+randHex(b, 6))
	local := a.setupPod(b, "bench-local-"+randHex(b, 6))
	remote := other.setupPod(b, "bench-remote-"+randHex(b, 6))
	sinkServer(b, local.NetNSPath)
	sinkServer(b, remote.NetNSPath)
	buf := make([]byte, 1<<20)
	transfer(b, client.NetNSPath, local.IP, buf) // warm up
	transfer(b, client.NetNSPath, remote.IP, buf)

	// Each iteration pairs a same-node and a cross-node transfer (in
	// alternating order); the ratio reported is the median of the pairs',
	// which a burst of load from other processes on the machine skews less
	// than the ratio of the totals.
	var same, cross time.Duration
	var ratios []float64
	for b.Loop() {
		var s, c time.Duration
		if len(ratios)%2 == 0 {
			s = transfer(b, client.NetNSPath, local.IP, buf)
			c = transfer(b, client.NetNSPath, remote.IP, buf)
		} else {
			c = transfer(b, client.NetNSPath, remote.IP, buf)
			s = transfer(b, client.NetNSPath, local.IP, buf)
		}
		same, cross = same+s, cross+c
		ratios = append(ratios, s.Seconds()/c.Seconds())
	}
	mbps := func(d time.Duration) float64 { return float64(len(ratios)) * benchBytes / 1e6 / d.Seconds() }
	slices.Sort(ratios)
	b.ReportMetric(mbps(same), "same-node-MB/s")
	b.ReportMetric(mbps(cross), "cross-node-MB/s")
	b.ReportMetric(ratios[len(ratios)/2], "cross/same")
	b.ReportMetric(0, "ns/op")
}
