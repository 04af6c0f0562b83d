package dns

import (
	"log/slog"
	"testing"

	"github.com/miekg/dns"
)

// BenchmarkServeDNS measures the in-process handler (no sockets).
func BenchmarkServeDNS(b *testing.B) {
	s, err := New(Config{Listen: []string{"127.0.0.1:0"}, Upstreams: []string{"192.0.2.53"}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	s.Update(testSnapshot())
	for _, q := range []struct {
		bench, name string
		qtype       uint16
	}{
		{"clusterIP", "web.default.svc.cluster.local.", dns.TypeA},
		{"headless", "nginx.default.svc.cluster.local.", dns.TypeA},
		{"srv", "_web._tcp.nginx.default.svc.cluster.local.", dns.TypeSRV},
		{"nxdomain", "google.com.default.svc.cluster.local.", dns.TypeA},
	} {
		b.Run(q.bench, func(b *testing.B) {
			m := new(dns.Msg)
			m.SetQuestion(q.name, q.qtype)
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				w := &recorder{}
				for pb.Next() {
					s.ServeDNS(w, m)
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "queries/s")
		})
	}
}

// BenchmarkUDP measures queries over UDP on loopback, client included.
func BenchmarkUDP(b *testing.B) {
	s, addr := startServer(b, Config{Upstreams: []string{"192.0.2.53"}, Logger: slog.New(slog.DiscardHandler)})
	s.Update(testSnapshot())
	b.RunParallel(func(pb *testing.PB) {
		c := &dns.Client{Net: "udp"}
		conn, err := c.Dial(addr)
		if err != nil {
			b.Error(err)
			return
		}
		defer conn.Close()
		m := new(dns.Msg)
		m.SetQuestion("web.default.svc.cluster.local.", dns.TypeA)
		for pb.Next() {
			m.Id = dns.Id()
			if _, _, err := c.ExchangeWithConn(m, conn); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "queries/s")
}
