package dns

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"

	"github.com/flotilla-dev/flotilla/internal/testkit"
	"github.com/flotilla-dev/flotilla/netfabric/svcview"
)

// TestRunListenError: a taken address fails Run at once, naming it.
func TestRunListenError(t *testing.T) {
	for _, network := range []string{"udp", "tcp"} {
		t.Run(network, func(t *testing.T) {
			pc, l := listenPair(t)
			addr := pc.LocalAddr().String()
			if network == "udp" {
				l.Close()
				defer pc.Close()
			} else {
				pc.Close()
				defer l.Close()
			}
			s, err := New(Config{Listen: []string{addr}, Upstreams: []string{"192.0.2.53"}, Logger: testkit.Logger(t)})
			if err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- s.Run(context.Background()) }()
			select {
			case err = <-done:
			case <-time.After(5 * time.Second):
				t.Fatal("Run did not fail")
			}
			want := "cluster DNS: listen " + network + " " + addr + ": bind: address already in use"
			if err == nil || err.Error() != want {
				t.Fatalf("Run: %v\nwant %s", err, want)
			}
			<-s.Ready()
			if s.Addrs() != nil {
				t.Errorf("Addrs after a failed Run: %v", s.Addrs())
			}
			if err := s.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "twice") {
				t.Errorf("second Run: %v", err)
			}
		})
	}
}

// TestRunStops: Run returns nil when its context ends, and the port is
// free again.
func TestRunStops(t *testing.T) {
	s, err := New(Config{Listen: []string{"127.0.0.1:0", "127.0.0.1:0"}, Upstreams: []string{"192.0.2.53"}, Logger: testkit.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	<-s.Ready()
	addrs := s.Addrs()
	if len(addrs) != 2 || addrs[0] == addrs[1] {
		t.Fatalf("Addrs %v: want two", addrs)
	}
	s.Update(testSnapshot())
	for _, a := range addrs {
		for _, network := range []string{"udp", "tcp"} {
			if r := query(t, network, a.String(), "web.default.svc.cluster.local.", dns.TypeA); len(r.Answer) != 1 {
				t.Fatalf("%s %s: %v", network, a, r)
			}
		}
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not stop")
	}
	for _, a := range addrs {
		l, err := net.Listen("tcp", a.String())
		if err != nil {
			t.Fatalf("port still taken after Run: %v", err)
		}
		l.Close()
	}
}

func TestNewErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"no listen", Config{}, "Config.Listen: at least one"},
		{"bad listen", Config{Listen: []string{"localhost:53"}}, `Config.Listen "localhost:53": want an IP address`},
		{"bad domain", Config{Listen: []string{":53"}, Domain: "a..b"}, "Config.Domain"},
		{"root domain", Config{Listen: []string{":53"}, Domain: "."}, "Config.Domain"},
		{"bad upstream", Config{Listen: []string{":53"}, Upstreams: []string{"dns.google"}}, `Config.Upstreams "dns.google"`},
		{"upstream is us", Config{Listen: []string{"10.244.1.1:53"}, Upstreams: []string{"10.244.1.1"}}, "would loop"},
		{"upstream is us, wildcard", Config{Listen: []string{":53"}, Upstreams: []string{"127.0.0.1:53"}}, "would loop"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "cluster DNS: ") {
				t.Fatalf("New: %v; want %q", err, tc.want)
			}
		})
	}
}

// TestDefaultUpstreams: the nameservers of resolv.conf, minus ourselves;
// a loopback stub (127.0.0.53) is kept unless it is us.
func TestDefaultUpstreams(t *testing.T) {
	path := filepath.Join(t.TempDir(), "resolv.conf")
	conf := "# generated\nnameserver 127.0.0.53\nnameserver 192.0.2.1 ; comment\nnameserver fe80::1%eth0\nnameserver bogus\nsearch example.com\noptions edns0\n"
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		listen string
		want   []string
	}{
		{"10.244.1.1:53", []string{"127.0.0.53:53", "192.0.2.1:53", "[fe80::1%eth0]:53"}},
		{"127.0.0.53:53", []string{"192.0.2.1:53", "[fe80::1%eth0]:53"}},
		{"127.0.0.53:5353", []string{"127.0.0.53:53", "192.0.2.1:53", "[fe80::1%eth0]:53"}},
		{":53", []string{"192.0.2.1:53", "[fe80::1%eth0]:53"}}, // a wildcard listener would receive what goes to a loopback address
	} {
		s, err := New(Config{Listen: []string{tc.listen}, ResolvConf: path, Logger: testkit.Logger(t)})
		if err != nil {
			t.Fatal(err)
		}
		if got := s.Upstreams(); !slices.Equal(got, tc.want) {
			t.Errorf("listen %s: upstreams %q, want %q", tc.listen, got, tc.want)
		}
	}
	s, err := New(Config{Listen: []string{":53"}, ResolvConf: filepath.Join(t.TempDir(), "missing"), Logger: testkit.Logger(t)})
	if err != nil || len(s.Upstreams()) != 0 {
		t.Fatalf("missing resolv.conf: %v, %v", s, err)
	}
}

// TestUpdateUnderLoad: answers during a stream of Updates come whole from
// one snapshot or the other, never a mix (run with -race).
func TestUpdateUnderLoad(t *testing.T) {
	s, addr := startServer(t, Config{})
	a := testSnapshot()
	var eps []ep
	for _, ip := range []string{"10.244.7.1", "10.244.7.2", "10.244.7.3", "10.244.7.4"} {
		eps = append(eps, ep{addr: ip})
	}
	b := newSnap(a, slice("default", "nginx", "IPv4", nil, eps...))
	wantA := []string{"10.244.1.5", "10.244.2.6", "10.244.3.8"}
	wantB := []string{"10.244.7.1", "10.244.7.2", "10.244.7.3", "10.244.7.4"}
	s.Update(a)

	stop := make(chan struct{})
	var updates sync.WaitGroup
	updates.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if i%2 == 0 {
				s.Update(b)
			} else {
				s.Update(a)
			}
		}
	})
	var queries sync.WaitGroup
	seen := make([]map[int]int, 4)
	for g := range seen {
		seen[g] = map[int]int{}
		queries.Go(func() {
			c := &dns.Client{Net: "udp", Timeout: 5 * time.Second}
			for range 150 {
				m := new(dns.Msg)
				m.SetQuestion("nginx.default.svc.cluster.local.", dns.TypeA)
				r, _, err := c.Exchange(m, addr)
				if err != nil {
					t.Error(err)
					return
				}
				var got []string
				for _, rr := range r.Answer {
					got = append(got, rr.(*dns.A).A.String())
				}
				if !slices.Equal(got, wantA) && !slices.Equal(got, wantB) {
					t.Errorf("mixed answer %v", got)
					return
				}
				seen[g][len(got)]++
				// the in-process handler too, as hard as it goes
				w := &recorder{}
				s.ServeDNS(w, m)
				if n := len(w.msg.Answer); n != 3 && n != 4 {
					t.Errorf("ServeDNS: %d answers", n)
					return
				}
			}
		})
	}
	queries.Wait()
	close(stop)
	updates.Wait()
	t.Logf("answers by size per goroutine: %v", seen)
}

// recorder is a dns.ResponseWriter that keeps the answer.
type recorder struct {
	tcp bool
	msg *dns.Msg
}

func (w *recorder) LocalAddr() net.Addr {
	if w.tcp {
		return &net.TCPAddr{IP: net.IPv4(10, 244, 1, 1), Port: 53}
	}
	return &net.UDPAddr{IP: net.IPv4(10, 244, 1, 1), Port: 53}
}
func (w *recorder) RemoteAddr() net.Addr {
	return &net.UDPAddr{IP: net.IPv4(10, 244, 1, 9), Port: 40000}
}
func (w *recorder) WriteMsg(m *dns.Msg) error { w.msg = m; return nil }
func (w *recorder) Write([]byte) (int, error) { panic("Write not used") }
func (w *recorder) Close() error              { return nil }
func (w *recorder) TsigStatus() error         { return nil }
func (w *recorder) TsigTimersOnly(bool)       {}
func (w *recorder) Hijack()                   {}

// TestServeDNSMalformed: what the server's accept function would stop,
// ServeDNS handles itself.
func TestServeDNSMalformed(t *testing.T) {
	s, err := New(Config{Listen: []string{"127.0.0.1:0"}, Upstreams: []string{"192.0.2.53"}, Logger: testkit.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	s.Update(testSnapshot())
	q := func(mod func(m *dns.Msg)) *dns.Msg {
		m := new(dns.Msg)
		m.SetQuestion("web.default.svc.cluster.local.", dns.TypeA)
		mod(m)
		w := &recorder{}
		s.ServeDNS(w, m)
		return w.msg
	}
	if r := q(func(m *dns.Msg) { m.Response = true }); r != nil {
		t.Errorf("answered a response: %v", r)
	}
	if r := q(func(m *dns.Msg) { m.Question = nil }); r.Rcode != dns.RcodeFormatError {
		t.Errorf("no question: %v", r)
	}
	if r := q(func(m *dns.Msg) { m.Question = append(m.Question, m.Question[0]) }); r.Rcode != dns.RcodeFormatError {
		t.Errorf("two questions: %v", r)
	}
	if r := q(func(m *dns.Msg) { m.Opcode = dns.OpcodeUpdate }); r.Rcode != dns.RcodeNotImplemented {
		t.Errorf("update: %v", r)
	}
	if r := q(func(m *dns.Msg) { m.Question[0].Qclass = dns.ClassCHAOS }); r.Rcode != dns.RcodeRefused {
		t.Errorf("CHAOS: %v", r)
	}
	if r := q(func(m *dns.Msg) { m.Question[0].Qtype = dns.TypeAXFR }); r.Rcode != dns.RcodeRefused {
		t.Errorf("AXFR: %v", r)
	}
	if r := q(func(m *dns.Msg) { m.Question[0].Qtype = dns.TypeANY }); len(r.Answer) != 1 {
		t.Errorf("ANY: %v", r)
	}
	if r := q(func(m *dns.Msg) { m.Question[0].Name = `web\.default.svc.cluster.local.` }); r.Rcode != dns.RcodeNameError {
		t.Errorf("escaped dot: %v", r)
	}
}

// TestPortlessExternalIsNotHeadless: an ExternalName service is never
// treated as headless, whatever its clusterIP says.
func TestPortlessExternalIsNotHeadless(t *testing.T) {
	s, err := New(Config{Listen: []string{"127.0.0.1:0"}, Upstreams: []string{"192.0.2.53"}, Logger: testkit.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ext := service("default", "x", corev1.ClusterIPNone)
	ext.Spec.Type, ext.Spec.ExternalName = corev1.ServiceTypeExternalName, "example.com"
	s.Update(svcview.NewSnapshot([]*corev1.Service{ext}, nil, nil, nil))
	m := new(dns.Msg)
	m.SetQuestion("x.default.svc.cluster.local.", dns.TypeCNAME)
	w := &recorder{}
	s.ServeDNS(w, m)
	if got := rrs(w.msg.Answer); !slices.Equal(got, []string{"x.default.svc.cluster.local. CNAME example.com."}) {
		t.Fatalf("got %v", w.msg)
	}
}
