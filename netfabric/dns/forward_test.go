package dns

import (
	"slices"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// TestForward: names outside the domain get the upstream's answer, with
// the client's ID, over the client's transport.
func TestForward(t *testing.T) {
	up := startUpstream(t)
	s, addr := startServer(t, Config{Upstreams: []string{up.addr}})
	s.Update(testSnapshot())

	for _, network := range []string{"udp", "tcp"} {
		m := new(dns.Msg)
		m.SetQuestion("www.example.org.", dns.TypeA)
		m.Id = 4242
		r := exchange(t, network, addr, m)
		if r.Id != 4242 || r.Rcode != dns.RcodeSuccess || r.Authoritative {
			t.Fatalf("%s: id %d rcode %s AA %v", network, r.Id, dns.RcodeToString[r.Rcode], r.Authoritative)
		}
		if got := rrs(r.Answer); !slices.Equal(got, []string{"www.example.org. A 192.0.2.1"}) {
			t.Fatalf("%s: answer %q", network, got)
		}
	}
	if got := up.tcp.Load(); got != 1 {
		t.Errorf("upstream got %d TCP queries, want 1 (the client's TCP query forwarded over TCP)", got)
	}

	// NXDOMAIN is an answer, passed on as it is.
	if r := query(t, "udp", addr, "nx.example.", dns.TypeA); r.Rcode != dns.RcodeNameError {
		t.Fatalf("nx.example.: %s", dns.RcodeToString[r.Rcode])
	}
	// A reverse name we do not know is forwarded too.
	before := up.queries.Load()
	if r := query(t, "udp", addr, "1.2.0.192.in-addr.arpa.", dns.TypePTR); r.Rcode != dns.RcodeSuccess || r.Authoritative {
		t.Fatalf("foreign PTR: %v", r)
	}
	if up.queries.Load() != before+1 {
		t.Errorf("foreign PTR not forwarded")
	}
}

// TestForwardTruncated: a truncated UDP answer is asked again over TCP,
// then fitted to the client's buffer.
func TestForwardTruncated(t *testing.T) {
	up := startUpstream(t)
	_, addr := startServer(t, Config{Upstreams: []string{up.addr}})

	r := query(t, "udp", addr, "big.example.", dns.TypeA)
	if up.tcp.Load() != 1 {
		t.Fatalf("upstream got %d TCP queries, want 1 (retry of the truncated answer)", up.tcp.Load())
	}
	if !r.Truncated || len(r.Answer) == 0 || len(r.Answer) >= 100 {
		t.Fatalf("UDP client without EDNS: TC=%v, %d answers; want the first records and TC", r.Truncated, len(r.Answer))
	}
	if r := query(t, "tcp", addr, "big.example.", dns.TypeA); r.Truncated || len(r.Answer) != 100 {
		t.Fatalf("TCP client: TC=%v, %d answers; want all 100", r.Truncated, len(r.Answer))
	}
	m := new(dns.Msg)
	m.SetQuestion("big.example.", dns.TypeA)
	m.SetEdns0(4096, false)
	if r := exchange(t, "udp", addr, m); r.Truncated || len(r.Answer) != 100 {
		t.Fatalf("UDP client with EDNS 4096: TC=%v, %d answers; want all 100", r.Truncated, len(r.Answer))
	}
}

// TestForwardFailover: a dead or failing upstream is passed over for the
// next; with none left the answer is SERVFAIL within ForwardTimeout.
func TestForwardFailover(t *testing.T) {
	servfail := startHandler(t, dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetRcode(r, dns.RcodeServerFailure)
		w.WriteMsg(m)
	}))
	live := startUpstream(t)
	tests := []struct {
		name      string
		upstreams []string
		rcode     int
		within    time.Duration
	}{
		{"refused, then live", []string{deadAddr(t), live.addr}, dns.RcodeSuccess, time.Second},
		{"hanging, then live", []string{blackhole(t), live.addr}, dns.RcodeSuccess, 800 * time.Millisecond},
		{"servfail, then live", []string{servfail, live.addr}, dns.RcodeSuccess, time.Second},
		{"only refused", []string{deadAddr(t)}, dns.RcodeServerFailure, time.Second},
		{"only hanging", []string{blackhole(t), blackhole(t)}, dns.RcodeServerFailure, 800 * time.Millisecond},
		{"only servfail", []string{servfail}, dns.RcodeServerFailure, time.Second},
		{"none", []string{}, dns.RcodeServerFailure, time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Config{Upstreams: tc.upstreams, ForwardTimeout: 500 * time.Millisecond}
			if len(tc.upstreams) == 0 {
				cfg.Upstreams, cfg.ResolvConf = nil, "/nonexistent"
			}
			_, addr := startServer(t, cfg)
			start := time.Now()
			r := query(t, "udp", addr, "www.example.org.", dns.TypeA)
			if took := time.Since(start); took > tc.within {
				t.Errorf("took %v, want under %v", took, tc.within)
			}
			if r.Rcode != tc.rcode {
				t.Fatalf("rcode %s, want %s", dns.RcodeToString[r.Rcode], dns.RcodeToString[tc.rcode])
			}
			if tc.rcode == dns.RcodeSuccess && len(r.Answer) != 1 {
				t.Fatalf("answer %v", r.Answer)
			}
		})
	}
}

// TestForwardDefaultTimeout: with the default ForwardTimeout a hanging
// upstream gives SERVFAIL after about 2s, not a hang.
func TestForwardDefaultTimeout(t *testing.T) {
	if testing.Short() {
		t.Skip("waits 2s")
	}
	_, addr := startServer(t, Config{Upstreams: []string{blackhole(t)}})
	start := time.Now()
	r := query(t, "udp", addr, "www.example.org.", dns.TypeA)
	took := time.Since(start)
	if r.Rcode != dns.RcodeServerFailure || took < 1500*time.Millisecond || took > 3*time.Second {
		t.Fatalf("rcode %s after %v; want SERVFAIL after ~2s", dns.RcodeToString[r.Rcode], took)
	}
}

// TestExternalNameUpstreamDown: the CNAME of an ExternalName service is
// still answered when its target cannot be resolved (SERVFAIL).
func TestExternalNameUpstreamDown(t *testing.T) {
	s, addr := startServer(t, Config{Upstreams: []string{deadAddr(t)}})
	s.Update(testSnapshot())
	r := query(t, "udp", addr, "ext.default.svc.cluster.local.", dns.TypeA)
	if r.Rcode != dns.RcodeServerFailure || len(r.Answer) != 1 || r.Answer[0].Header().Rrtype != dns.TypeCNAME {
		t.Fatalf("got %v", r)
	}
}

// TestNoForward: with NoForward the server answers the cluster domain and
// refuses everything else at once, reading no resolv.conf and sending
// nothing anywhere.
func TestNoForward(t *testing.T) {
	if _, err := New(Config{Listen: []string{"127.0.0.1:0"}, NoForward: true, Upstreams: []string{"127.0.0.1:53"}}); err == nil {
		t.Fatal("NoForward with Upstreams accepted")
	}
	s, addr := startServer(t, Config{NoForward: true, ResolvConf: "/etc/resolv.conf"})
	if len(s.Upstreams()) != 0 {
		t.Fatalf("upstreams %v with NoForward", s.Upstreams())
	}
	s.Update(testSnapshot())
	start := time.Now()
	if m := query(t, "udp", addr, "example.org.", dns.TypeA); m.Rcode != dns.RcodeServerFailure {
		t.Errorf("outside name: %s, want SERVFAIL", dns.RcodeToString[m.Rcode])
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("outside name took %s: something waited on an upstream", d)
	}
	if m := query(t, "udp", addr, "nope.default.svc.cluster.local.", dns.TypeA); m.Rcode != dns.RcodeNameError {
		t.Errorf("cluster name: %s, want NXDOMAIN", dns.RcodeToString[m.Rcode])
	}
}
