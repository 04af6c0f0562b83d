package dns

import (
	"slices"
	"testing"

	"github.com/miekg/dns"
)

// TestClusterRecords asks the server, over real UDP and TCP on loopback,
// for every kind of record the Kubernetes DNS specification defines.
func TestClusterRecords(t *testing.T) {
	up := startUpstream(t)
	s, addr := startServer(t, Config{Upstreams: []string{up.addr}})
	s.Update(testSnapshot())

	const (
		nxdomain = dns.RcodeNameError
		noerror  = dns.RcodeSuccess
	)
	tests := []struct {
		name   string
		qtype  uint16
		rcode  int
		answer []string
		extra  []string
		// nodata: no answer, the zone's SOA in authority (NXDOMAIN always has it)
	}{
		// 2.3 services with a ClusterIP
		{"web.default.svc.cluster.local.", dns.TypeA, noerror, []string{"web.default.svc.cluster.local. A 10.96.0.10"}, nil},
		{"web.default.svc.cluster.local.", dns.TypeAAAA, noerror, nil, nil}, // NODATA
		{"WEB.Default.SVC.Cluster.Local.", dns.TypeA, noerror, []string{"WEB.Default.SVC.Cluster.Local. A 10.96.0.10"}, nil},
		{"dual.default.svc.cluster.local.", dns.TypeAAAA, noerror, []string{"dual.default.svc.cluster.local. AAAA fd00::11"}, nil},
		{"dual.default.svc.cluster.local.", dns.TypeA, noerror, []string{"dual.default.svc.cluster.local. A 10.96.0.11"}, nil},
		{"web.default.svc.cluster.local.", dns.TypeTXT, noerror, nil, nil},
		{"api.other.svc.cluster.local.", dns.TypeA, noerror, []string{"api.other.svc.cluster.local. A 10.96.1.1"}, nil},
		{"api.default.svc.cluster.local.", dns.TypeA, nxdomain, nil, nil},
		{"nope.default.svc.cluster.local.", dns.TypeA, nxdomain, nil, nil},
		{"_http._tcp.web.default.svc.cluster.local.", dns.TypeSRV, noerror,
			[]string{"_http._tcp.web.default.svc.cluster.local. SRV 0 100 80 web.default.svc.cluster.local."},
			[]string{"web.default.svc.cluster.local. A 10.96.0.10"}},
		{"_dns._udp.web.default.svc.cluster.local.", dns.TypeSRV, noerror,
			[]string{"_dns._udp.web.default.svc.cluster.local. SRV 0 100 53 web.default.svc.cluster.local."},
			[]string{"web.default.svc.cluster.local. A 10.96.0.10"}},
		{"_dns._tcp.web.default.svc.cluster.local.", dns.TypeSRV, nxdomain, nil, nil}, // wrong protocol
		{"_http._tcp.web.default.svc.cluster.local.", dns.TypeA, noerror, nil, nil},
		{"_tcp.web.default.svc.cluster.local.", dns.TypeSRV, noerror, nil, nil}, // empty non-terminal
		{"_sctp.web.default.svc.cluster.local.", dns.TypeSRV, nxdomain, nil, nil},
		{"web.default.svc.cluster.local.", dns.TypeSRV, noerror,
			[]string{
				"web.default.svc.cluster.local. SRV 0 50 53 web.default.svc.cluster.local.",
				"web.default.svc.cluster.local. SRV 0 50 80 web.default.svc.cluster.local.",
			},
			[]string{"web.default.svc.cluster.local. A 10.96.0.10"}},
		{"10-244-1-9.web.default.svc.cluster.local.", dns.TypeA, nxdomain, nil, nil}, // endpoint names: headless only

		// 2.4 headless services: ready endpoints only
		{"nginx.default.svc.cluster.local.", dns.TypeA, noerror, []string{
			"nginx.default.svc.cluster.local. A 10.244.1.5",
			"nginx.default.svc.cluster.local. A 10.244.2.6",
			"nginx.default.svc.cluster.local. A 10.244.3.8",
		}, nil},
		{"nginx.default.svc.cluster.local.", dns.TypeAAAA, noerror, nil, nil},
		{"web-0.nginx.default.svc.cluster.local.", dns.TypeA, noerror, []string{"web-0.nginx.default.svc.cluster.local. A 10.244.1.5"}, nil},
		{"Web-1.nginx.default.svc.cluster.local.", dns.TypeA, noerror, []string{"Web-1.nginx.default.svc.cluster.local. A 10.244.2.6"}, nil},
		{"web-0.nginx.default.svc.cluster.local.", dns.TypeAAAA, noerror, nil, nil},
		{"web-2.nginx.default.svc.cluster.local.", dns.TypeA, nxdomain, nil, nil}, // not ready
		{"10-244-3-8.nginx.default.svc.cluster.local.", dns.TypeA, noerror, []string{"10-244-3-8.nginx.default.svc.cluster.local. A 10.244.3.8"}, nil},
		{"10-244-1-5.nginx.default.svc.cluster.local.", dns.TypeA, nxdomain, nil, nil}, // has a hostname
		{"_web._tcp.nginx.default.svc.cluster.local.", dns.TypeSRV, noerror,
			[]string{
				"_web._tcp.nginx.default.svc.cluster.local. SRV 0 33 8080 10-244-3-8.nginx.default.svc.cluster.local.",
				"_web._tcp.nginx.default.svc.cluster.local. SRV 0 33 8080 web-0.nginx.default.svc.cluster.local.",
				"_web._tcp.nginx.default.svc.cluster.local. SRV 0 33 8080 web-1.nginx.default.svc.cluster.local.",
			},
			[]string{
				"10-244-3-8.nginx.default.svc.cluster.local. A 10.244.3.8",
				"web-0.nginx.default.svc.cluster.local. A 10.244.1.5",
				"web-1.nginx.default.svc.cluster.local. A 10.244.2.6",
			}},
		{"h6.default.svc.cluster.local.", dns.TypeAAAA, noerror, []string{"h6.default.svc.cluster.local. AAAA fd00::5"}, nil},
		{"h6.default.svc.cluster.local.", dns.TypeA, noerror, nil, nil},
		{"fd00--5.h6.default.svc.cluster.local.", dns.TypeAAAA, noerror, []string{"fd00--5.h6.default.svc.cluster.local. AAAA fd00::5"}, nil},
		{"_grpc._tcp.h6.default.svc.cluster.local.", dns.TypeSRV, noerror,
			[]string{"_grpc._tcp.h6.default.svc.cluster.local. SRV 0 100 9000 fd00--5.h6.default.svc.cluster.local."},
			[]string{"fd00--5.h6.default.svc.cluster.local. AAAA fd00::5"}},
		{"portless.default.svc.cluster.local.", dns.TypeA, noerror, []string{"portless.default.svc.cluster.local. A 10.244.4.4"}, nil},
		{"portless.default.svc.cluster.local.", dns.TypeSRV, noerror, nil, nil},
		{"starting.default.svc.cluster.local.", dns.TypeA, nxdomain, nil, nil}, // spec 2.4.1: no ready endpoint
		{"_web._tcp.starting.default.svc.cluster.local.", dns.TypeSRV, nxdomain, nil, nil},

		// 2.5 ExternalName: CNAME, chased (upstream or in the zone)
		{"ext.default.svc.cluster.local.", dns.TypeA, noerror, []string{
			"db.example.com. A 192.0.2.1",
			"ext.default.svc.cluster.local. CNAME db.example.com.",
		}, nil},
		{"ext.default.svc.cluster.local.", dns.TypeCNAME, noerror, []string{"ext.default.svc.cluster.local. CNAME db.example.com."}, nil},
		{"alias.default.svc.cluster.local.", dns.TypeA, noerror, []string{
			"alias.default.svc.cluster.local. CNAME web.default.svc.cluster.local.",
			"web.default.svc.cluster.local. A 10.96.0.10",
		}, nil},
		{"alias.default.svc.cluster.local.", dns.TypeAAAA, noerror, []string{ // NODATA at the end of the chain
			"alias.default.svc.cluster.local. CNAME web.default.svc.cluster.local.",
		}, nil},

		// 2.6 pods
		{"10-244-1-5.default.pod.cluster.local.", dns.TypeA, noerror, []string{"10-244-1-5.default.pod.cluster.local. A 10.244.1.5"}, nil},
		{"10-244-1-5.anything.pod.cluster.local.", dns.TypeAAAA, noerror, nil, nil},
		{"fd00--7.default.pod.cluster.local.", dns.TypeAAAA, noerror, []string{"fd00--7.default.pod.cluster.local. AAAA fd00::7"}, nil},
		{"10-244-1-256.default.pod.cluster.local.", dns.TypeA, nxdomain, nil, nil},
		{"x.10-244-1-5.default.pod.cluster.local.", dns.TypeA, nxdomain, nil, nil},

		// 2.2 schema version, the zone's structure
		{"dns-version.cluster.local.", dns.TypeTXT, noerror, []string{`dns-version.cluster.local. TXT "1.1.0"`}, nil},
		{"cluster.local.", dns.TypeA, noerror, nil, nil},
		{"svc.cluster.local.", dns.TypeA, noerror, nil, nil},
		{"default.svc.cluster.local.", dns.TypeA, noerror, nil, nil},
		{"nons.svc.cluster.local.", dns.TypeA, nxdomain, nil, nil},
		{"pod.cluster.local.", dns.TypeA, noerror, nil, nil},
		{"google.com.default.svc.cluster.local.", dns.TypeA, nxdomain, nil, nil}, // ndots:5 search miss
		{"a.b.c.web.default.svc.cluster.local.", dns.TypeA, nxdomain, nil, nil},
		{"foo.cluster.local.", dns.TypeA, nxdomain, nil, nil},

		// reverse
		{"10.0.96.10.in-addr.arpa.", dns.TypePTR, noerror, []string{"10.0.96.10.in-addr.arpa. PTR web.default.svc.cluster.local."}, nil},
		{"5.1.244.10.in-addr.arpa.", dns.TypePTR, noerror, []string{"5.1.244.10.in-addr.arpa. PTR web-0.nginx.default.svc.cluster.local."}, nil},
		{"8.3.244.10.in-addr.arpa.", dns.TypePTR, noerror, []string{"8.3.244.10.in-addr.arpa. PTR 10-244-3-8.nginx.default.svc.cluster.local."}, nil},
		{"1.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.", dns.TypePTR, noerror,
			[]string{"1.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa. PTR dual.default.svc.cluster.local."}, nil},
	}
	for _, network := range []string{"udp", "tcp"} {
		for _, tc := range tests {
			t.Run(network+"/"+tc.name+"/"+dns.TypeToString[tc.qtype], func(t *testing.T) {
				r := query(t, network, addr, tc.name, tc.qtype)
				if r.Rcode != tc.rcode {
					t.Fatalf("rcode %s, want %s\n%v", dns.RcodeToString[r.Rcode], dns.RcodeToString[tc.rcode], r)
				}
				if got := rrs(r.Answer); !slices.Equal(got, tc.answer) {
					t.Errorf("answer:\n got %q\nwant %q", got, tc.answer)
				}
				if got := rrs(r.Extra); !slices.Equal(got, tc.extra) {
					t.Errorf("additional:\n got %q\nwant %q", got, tc.extra)
				}
				if !r.Authoritative {
					t.Errorf("not authoritative")
				}
				if !r.RecursionAvailable {
					t.Errorf("RA not set")
				}
				if len(r.Answer) == 0 {
					if len(r.Ns) != 1 || r.Ns[0].Header().Rrtype != dns.TypeSOA || r.Ns[0].Header().Name != "cluster.local." {
						t.Errorf("negative answer without the zone's SOA in authority: %v", r.Ns)
					} else if soa := r.Ns[0].(*dns.SOA); soa.Minttl != 5 || soa.Hdr.Ttl != 5 {
						t.Errorf("SOA %v: want TTL and minimum 5", soa)
					}
				}
				for _, rr := range r.Answer {
					if rr.Header().Ttl != 5 && rr.Header().Name != "db.example.com." {
						t.Errorf("TTL %d, want 5: %v", rr.Header().Ttl, rr)
					}
				}
			})
		}
	}
}

// TestNoViewYet: before the first Update, names in the domain get
// SERVFAIL (retry), not NXDOMAIN (which clients would cache); Update(nil)
// goes back there.
func TestNoViewYet(t *testing.T) {
	s, addr := startServer(t, Config{})
	if r := query(t, "udp", addr, "web.default.svc.cluster.local.", dns.TypeA); r.Rcode != dns.RcodeServerFailure {
		t.Fatalf("before Update: %s, want SERVFAIL", dns.RcodeToString[r.Rcode])
	}
	s.Update(testSnapshot())
	if r := query(t, "udp", addr, "web.default.svc.cluster.local.", dns.TypeA); r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
		t.Fatalf("after Update: %v", r)
	}
	s.Update(nil)
	if r := query(t, "udp", addr, "web.default.svc.cluster.local.", dns.TypeA); r.Rcode != dns.RcodeServerFailure {
		t.Fatalf("after Update(nil): %s, want SERVFAIL", dns.RcodeToString[r.Rcode])
	}
}

// TestOtherDomain: a custom domain, given in upper case with a dot.
func TestOtherDomain(t *testing.T) {
	s, addr := startServer(t, Config{Domain: "Edge.Example.", TTL: 30})
	s.Update(testSnapshot())
	r := query(t, "udp", addr, "web.default.svc.edge.example.", dns.TypeA)
	if got := rrs(r.Answer); !slices.Equal(got, []string{"web.default.svc.edge.example. A 10.96.0.10"}) || r.Answer[0].Header().Ttl != 30 {
		t.Fatalf("got %v", r)
	}
	// cluster.local is not ours now: forwarded, and there is no upstream.
	if r := query(t, "udp", addr, "web.default.svc.cluster.local.", dns.TypeA); r.Rcode != dns.RcodeServerFailure || r.Authoritative {
		t.Fatalf("cluster.local with domain edge.example: %v", r)
	}
}

// TestTruncation: a headless answer larger than the client's UDP buffer
// comes truncated (TC) over UDP, whole over TCP.
func TestTruncation(t *testing.T) {
	s, addr := startServer(t, Config{})
	var eps []ep
	for i := range 200 {
		eps = append(eps, ep{addr: "10.244.9." + itoa(i)})
	}
	snap := testSnapshot()
	s.Update(newSnap(snap, slice("default", "nginx", "IPv4", nil, eps...)))

	r := query(t, "udp", addr, "nginx.default.svc.cluster.local.", dns.TypeA)
	if !r.Truncated || len(r.Answer) >= 200 {
		t.Fatalf("UDP: TC=%v with %d answers, want truncated", r.Truncated, len(r.Answer))
	}
	m := new(dns.Msg)
	m.SetQuestion("nginx.default.svc.cluster.local.", dns.TypeA)
	m.SetEdns0(4096, false)
	r = exchange(t, "udp", addr, m)
	if r.Truncated || len(r.Answer) != 200 || r.IsEdns0() == nil {
		t.Fatalf("UDP with EDNS 4096: TC=%v with %d answers (EDNS %v)", r.Truncated, len(r.Answer), r.IsEdns0())
	}
	r = query(t, "tcp", addr, "nginx.default.svc.cluster.local.", dns.TypeA)
	if r.Truncated || len(r.Answer) != 200 {
		t.Fatalf("TCP: TC=%v with %d answers, want 200", r.Truncated, len(r.Answer))
	}
}

func TestReverseAddr(t *testing.T) {
	for _, tc := range []struct {
		name string
		want string
	}{
		{"1.0.96.10.in-addr.arpa.", "10.96.0.1"},
		{"1.0.96.010.in-addr.arpa.", ""},
		{"1.0.96.in-addr.arpa.", ""},
		{"256.0.96.10.in-addr.arpa.", ""},
		{"b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.0.0.0.0.1.2.3.4.ip6.arpa.", "4321:0:1:2:3:4:567:89ab"},
		{"x.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.0.0.0.0.1.2.3.4.ip6.arpa.", ""},
		{"example.com.", ""},
	} {
		a, ok := reverseAddr(tc.name)
		if (tc.want == "") == ok || (ok && a != mustAddr(tc.want)) {
			t.Errorf("reverseAddr(%q) = %v, %v; want %q", tc.name, a, ok, tc.want)
		}
	}
}
