package dns

import (
	"log/slog"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// FuzzServeDNS feeds arbitrary messages to the handler, over both
// transports: it must never panic, never answer an answer, and a UDP
// answer must fit the client's buffer.
func FuzzServeDNS(f *testing.F) {
	for _, q := range []struct {
		name  string
		qtype uint16
	}{
		{"web.default.svc.cluster.local.", dns.TypeA},
		{"nginx.default.svc.cluster.local.", dns.TypeSRV},
		{"_web._tcp.nginx.default.svc.cluster.local.", dns.TypeSRV},
		{"web-0.nginx.default.svc.cluster.local.", dns.TypeAAAA},
		{"ext.default.svc.cluster.local.", dns.TypeA},
		{"alias.default.svc.cluster.local.", dns.TypeANY},
		{"10-244-1-5.default.pod.cluster.local.", dns.TypeA},
		{"10.0.96.10.in-addr.arpa.", dns.TypePTR},
		{"big.example.", dns.TypeA},
		{"cluster.local.", dns.TypeSOA},
	} {
		m := new(dns.Msg)
		m.SetQuestion(q.name, q.qtype)
		b, _ := m.Pack()
		f.Add(b)
		m.SetEdns0(1232, true)
		b, _ = m.Pack()
		f.Add(b)
	}

	up := startUpstream(f)
	s, err := New(Config{Listen: []string{"127.0.0.1:0"}, Upstreams: []string{up.addr}, ForwardTimeout: 200 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		f.Fatal(err)
	}
	s.Update(testSnapshot())

	f.Fuzz(func(t *testing.T, data []byte) {
		req := new(dns.Msg)
		if req.Unpack(data) != nil {
			return
		}
		for _, tcp := range []bool{false, true} {
			w := &recorder{tcp: tcp}
			s.ServeDNS(w, req.Copy())
			if w.msg == nil {
				if !req.Response {
					t.Fatalf("no answer to a query: %v", req)
				}
				continue
			}
			if req.Response {
				t.Fatalf("answered a response: %v", req)
			}
			if w.msg.Id != req.Id || !w.msg.Response {
				t.Fatalf("answer id %d response %v, query id %d", w.msg.Id, w.msg.Response, req.Id)
			}
			b, err := w.msg.Pack()
			if err != nil {
				t.Fatalf("answer does not pack: %v\n%v", err, w.msg)
			}
			size := dns.MinMsgSize
			if opt := req.IsEdns0(); opt != nil {
				size = max(size, int(opt.UDPSize()))
			}
			if !tcp && len(b) > size && w.msg.IsTsig() == nil {
				t.Fatalf("UDP answer of %d bytes for a %d byte buffer", len(b), size)
			}
		}
	})
}
