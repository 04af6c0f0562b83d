package dns

import (
	"context"
	"net"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flotilla-dev/flotilla/internal/testkit"
	"github.com/flotilla-dev/flotilla/netfabric/svcview"
)

// --- the service view used by the tests ---

func service(ns, name, clusterIP string, ports ...corev1.ServicePort) *corev1.Service {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, ClusterIP: clusterIP, Ports: ports},
	}
	if clusterIP != "" && clusterIP != corev1.ClusterIPNone {
		svc.Spec.ClusterIPs = strings.Split(clusterIP, ",")
		svc.Spec.ClusterIP = svc.Spec.ClusterIPs[0]
	}
	return svc
}

func port(name string, proto corev1.Protocol, p int32) corev1.ServicePort {
	return corev1.ServicePort{Name: name, Protocol: proto, Port: p}
}

type ep struct {
	addr     string
	hostname string
	ready    *bool // nil: unset (counts as ready)
}

func ptr[T any](v T) *T { return &v }

func slice(ns, svc string, family discoveryv1.AddressType, ports []discoveryv1.EndpointPort, eps ...ep) *discoveryv1.EndpointSlice {
	sl := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: svc + "-" + string(family),
			Labels: map[string]string{svcview.LabelServiceName: svc}},
		AddressType: family,
		Ports:       ports,
	}
	for _, e := range eps {
		x := discoveryv1.Endpoint{Addresses: []string{e.addr}, Conditions: discoveryv1.EndpointConditions{Ready: e.ready}}
		if e.hostname != "" {
			x.Hostname = ptr(e.hostname)
		}
		sl.Endpoints = append(sl.Endpoints, x)
	}
	return sl
}

func slicePort(name string, proto corev1.Protocol, p int32) discoveryv1.EndpointPort {
	return discoveryv1.EndpointPort{Name: ptr(name), Protocol: ptr(proto), Port: ptr(p)}
}

// testSnapshot is a small cluster:
//
//	default/web      ClusterIP 10.96.0.10, ports http 80/TCP, dns 53/UDP
//	default/dual     ClusterIPs 10.96.0.11 and fd00::11, port 80 unnamed
//	default/nginx    headless, port web 80 → 8080: web-0 10.244.1.5, web-1 10.244.2.6,
//	                 10.244.3.8 (no hostname), web-2 10.244.1.7 not ready
//	default/h6       headless IPv6, port grpc 9000: fd00::5 (no hostname)
//	default/portless headless without ports: 10.244.4.4
//	default/starting headless, only not-ready endpoints
//	default/ext      ExternalName db.example.com.
//	default/alias    ExternalName web.default.svc.cluster.local
//	other/api        ClusterIP 10.96.1.1, port https 443
func testSnapshot() *svcview.Snapshot {
	services := []*corev1.Service{
		service("default", "web", "10.96.0.10", port("http", corev1.ProtocolTCP, 80), port("dns", corev1.ProtocolUDP, 53)),
		service("default", "dual", "10.96.0.11,fd00::11", port("", "", 80)),
		service("default", "nginx", corev1.ClusterIPNone, port("web", "", 80)),
		service("default", "h6", corev1.ClusterIPNone, port("grpc", corev1.ProtocolTCP, 9000)),
		service("default", "portless", corev1.ClusterIPNone),
		service("default", "starting", corev1.ClusterIPNone, port("web", "", 80)),
		{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "ext"},
			Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "db.example.com"}},
		{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "alias"},
			Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "web.default.svc.cluster.local."}},
		service("other", "api", "10.96.1.1", port("https", corev1.ProtocolTCP, 443)),
	}
	v4, v6 := discoveryv1.AddressTypeIPv4, discoveryv1.AddressTypeIPv6
	slices := []*discoveryv1.EndpointSlice{
		slice("default", "web", v4, []discoveryv1.EndpointPort{slicePort("http", corev1.ProtocolTCP, 8080), slicePort("dns", corev1.ProtocolUDP, 5353)},
			ep{addr: "10.244.1.9"}),
		slice("default", "nginx", v4, []discoveryv1.EndpointPort{slicePort("web", corev1.ProtocolTCP, 8080)},
			ep{addr: "10.244.2.6", hostname: "web-1", ready: ptr(true)},
			ep{addr: "10.244.1.5", hostname: "web-0"},
			ep{addr: "10.244.1.7", hostname: "web-2", ready: ptr(false)},
			ep{addr: "10.244.3.8"}),
		slice("default", "h6", v6, []discoveryv1.EndpointPort{slicePort("grpc", corev1.ProtocolTCP, 9000)},
			ep{addr: "fd00::5"}),
		slice("default", "portless", v4, nil, ep{addr: "10.244.4.4"}),
		slice("default", "starting", v4, []discoveryv1.EndpointPort{slicePort("web", corev1.ProtocolTCP, 8080)},
			ep{addr: "10.244.1.20", ready: ptr(false)}),
	}
	return svcview.NewSnapshot(services, slices, nil, nil)
}

// --- servers on loopback ---

// startServer runs a Server on 127.0.0.1 (a free port) until the test ends
// and returns it with its address.
func startServer(tb testing.TB, cfg Config) (*Server, string) {
	tb.Helper()
	if cfg.Listen == nil {
		cfg.Listen = []string{"127.0.0.1:0"}
	}
	if cfg.Logger == nil {
		cfg.Logger = testkit.Logger(tb)
	}
	if cfg.Upstreams == nil && cfg.ResolvConf == "" {
		cfg.ResolvConf = "/nonexistent" // never the host's resolvers in tests
	}
	s, err := New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	tb.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			tb.Errorf("Run: %v", err)
		}
	})
	select {
	case <-s.Ready():
	case err := <-done:
		tb.Fatalf("Run: %v", err)
	}
	return s, s.Addrs()[0].String()
}

// fakeUpstream is a resolver on 127.0.0.1 (UDP and TCP on one port):
// "big.example." has 100 A records (truncated over UDP without EDNS), any
// other name one A record 192.0.2.1, "nx.example." is NXDOMAIN and
// "fail.example." SERVFAIL.
type fakeUpstream struct {
	addr    string
	queries atomic.Int32 // over UDP and TCP
	tcp     atomic.Int32 // over TCP
}

func startUpstream(tb testing.TB) *fakeUpstream {
	tb.Helper()
	u := &fakeUpstream{}
	h := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		u.queries.Add(1)
		_, tcp := w.LocalAddr().(*net.TCPAddr)
		if tcp {
			u.tcp.Add(1)
		}
		m := new(dns.Msg)
		m.SetReply(r)
		m.RecursionAvailable = true
		q := r.Question[0]
		switch strings.ToLower(q.Name) {
		case "nx.example.":
			m.Rcode = dns.RcodeNameError
		case "fail.example.":
			m.Rcode = dns.RcodeServerFailure
		case "big.example.":
			for i := range 100 {
				m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60},
					A: net.IPv4(192, 0, 2, byte(i+1))})
			}
			if !tcp {
				size := dns.MinMsgSize
				if opt := r.IsEdns0(); opt != nil {
					size = int(opt.UDPSize())
				}
				m.Truncate(size)
			}
		default:
			if q.Qtype == dns.TypeA {
				m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60},
					A: net.IPv4(192, 0, 2, 1)})
			}
		}
		w.WriteMsg(m)
	})
	u.addr = startHandler(tb, h)
	return u
}

// startHandler serves h on a free loopback port over UDP and TCP until the
// test ends and returns the address.
func startHandler(tb testing.TB, h dns.Handler) string {
	tb.Helper()
	pc, l := listenPair(tb)
	for _, srv := range []*dns.Server{{PacketConn: pc, Handler: h}, {Listener: l, Handler: h}} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		go srv.ActivateAndServe()
		<-started
		tb.Cleanup(func() { srv.Shutdown() })
	}
	return pc.LocalAddr().String()
}

// blackhole returns a loopback UDP address that reads queries and never
// answers (a resolver that hangs).
func blackhole(tb testing.TB) string {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 65536)
		for {
			if _, _, err := pc.ReadFrom(buf); err != nil {
				return
			}
		}
	}()
	return pc.LocalAddr().String()
}

// listenPair binds UDP and TCP on one free loopback port.
func listenPair(tb testing.TB) (net.PacketConn, net.Listener) {
	tb.Helper()
	for range 20 {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			tb.Fatal(err)
		}
		l, err := net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			return pc, l
		}
		pc.Close()
	}
	tb.Fatal("no free port pair")
	return nil, nil
}

// deadAddr returns a loopback address where nothing listens (UDP sends
// vanish or are refused; TCP connections are refused).
func deadAddr(tb testing.TB) string {
	pc, l := listenPair(tb)
	addr := pc.LocalAddr().String()
	pc.Close()
	l.Close()
	return addr
}

// --- queries ---

func exchange(tb testing.TB, network, addr string, m *dns.Msg) *dns.Msg {
	tb.Helper()
	c := &dns.Client{Net: network, Timeout: 5 * time.Second}
	r, _, err := c.Exchange(m, addr)
	if err != nil {
		tb.Fatalf("%s %s %s: %v", network, m.Question[0].Name, dns.TypeToString[m.Question[0].Qtype], err)
	}
	return r
}

func query(tb testing.TB, network, addr, name string, qtype uint16) *dns.Msg {
	tb.Helper()
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	return exchange(tb, network, addr, m)
}

// rrs writes records as sorted "name TYPE rdata" lines (no TTL, no class).
func rrs(list []dns.RR) []string {
	var out []string
	for _, rr := range list {
		if rr.Header().Rrtype == dns.TypeOPT {
			continue
		}
		h := rr.Header()
		data := strings.TrimSpace(strings.TrimPrefix(rr.String(), h.String()))
		out = append(out, h.Name+" "+dns.TypeToString[h.Rrtype]+" "+data)
	}
	sort.Strings(out)
	return out
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

func itoa(i int) string { return strconv.Itoa(i) }

// newSnap is snap with the EndpointSlices of repl's service replaced by repl.
func newSnap(snap *svcview.Snapshot, repl ...*discoveryv1.EndpointSlice) *svcview.Snapshot {
	replaced := map[string]bool{}
	for _, sl := range repl {
		replaced[sl.Namespace+"/"+sl.Labels[svcview.LabelServiceName]] = true
	}
	var slices []*discoveryv1.EndpointSlice
	for _, sl := range snap.Slices {
		if !replaced[sl.Namespace+"/"+sl.Labels[svcview.LabelServiceName]] {
			slices = append(slices, sl)
		}
	}
	slices = append(slices, repl...)
	return svcview.NewSnapshot(append([]*corev1.Service(nil), snap.Services...), slices, nil, nil)
}
