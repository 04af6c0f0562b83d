// Package dns answers cluster DNS names from the service view and forwards
// the rest: the resolver every node agent runs for its pods, doing what
// CoreDNS's kubernetes and forward plugins do in a Kubernetes cluster.
//
// Names inside the cluster domain (zone.go) are answered from the last
// svcview.Snapshot handed to Update, following the Kubernetes DNS
// specification (https://github.com/kubernetes/dns/blob/master/docs/specification.md):
//
//	<svc>.<ns>.svc.<zone>                 A/AAAA: the ClusterIPs; headless: every ready endpoint
//	                                      ExternalName: CNAME to spec.externalName
//	<host>.<svc>.<ns>.svc.<zone>          A/AAAA of a headless service's ready endpoint, by its
//	                                      hostname or, without one, its dashed IP (10-244-1-5)
//	_<port>._<proto>.<svc>.<ns>.svc.<zone> SRV for a named port (targets' A/AAAA in additional)
//	<a-b-c-d>.<ns>.pod.<zone>             A a.b.c.d (CoreDNS "pods insecure")
//	dns-version.<zone>                    TXT, the schema version
//	reverse (in-addr.arpa, ip6.arpa)      PTR for ClusterIPs and headless endpoints
//
// Everything else goes to the upstream resolvers (forward.go). Until the
// first Update the server has no view and answers names in the domain with
// SERVFAIL, so that clients retry instead of caching a false NXDOMAIN.
package dns

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"

	"github.com/flotilla-dev/flotilla/netfabric/svcview"
)

// Interface guards.
var _ dns.Handler = (*Server)(nil)

// Config configures a Server. Zero values mean the documented default.
type Config struct {
	// Domain is the cluster domain the server is authoritative for.
	// Default "cluster.local". Case and a trailing dot do not matter.
	Domain string
	// Listen holds the addresses to serve on, "ip:port" (":53" for every
	// address of the host), each over both UDP and TCP. At least one is
	// required. Port 0 picks a free port, the same for UDP and TCP (see
	// Addrs).
	Listen []string
	// Upstreams are the resolvers that names outside the domain are
	// forwarded to, "ip:port" or "ip" (port 53), tried in order.
	//
	// Default: the nameservers of ResolvConf, minus any that is one of our
	// own Listen addresses (forwarding to ourselves would loop; with a
	// wildcard Listen such as ":53", any address of this host on that
	// port counts as ours). A loopback
	// nameserver such as systemd-resolved's 127.0.0.53 stub is kept: the
	// agent runs in the host's network namespace, where that stub is
	// reachable, is not us, and knows the host's split DNS. (Pods could not
	// reach it, which is why kubelet avoids it for a pod's resolv.conf;
	// pods use this server instead.) With no upstream at all, names outside
	// the domain get SERVFAIL. An explicit upstream that is one of our
	// Listen addresses is an error.
	Upstreams []string
	// NoForward answers only the cluster domain: other names get SERVFAIL
	// at once and nothing is sent anywhere (a node without upstream DNS,
	// such as a lab node, where waiting on an unreachable resolver would
	// only slow every lookup down). Upstreams must then be empty.
	NoForward bool
	// ResolvConf is the file Upstreams default to. Default "/etc/resolv.conf".
	ResolvConf string
	// TTL of every answer, and the negative-caching TTL of NXDOMAIN and
	// NODATA answers (the SOA minimum). Default 5 (seconds), as CoreDNS:
	// short, because services and endpoints change.
	TTL uint32
	// ForwardTimeout bounds one forwarded query over all upstreams (shared
	// between them, so a dead first upstream leaves time for the next).
	// Default 2s: a pod's resolver retries on its own after ~5s.
	ForwardTimeout time.Duration
	// Logger receives the server's logs. Default: discard.
	Logger *slog.Logger
}

// maxForwards caps the queries being forwarded at once: beyond it a query
// gets SERVFAIL at once instead of another goroutine and socket.
const maxForwards = 1024

// Server is a node's cluster DNS. It is safe for concurrent use: queries are
// answered on many goroutines while Update swaps the view.
type Server struct {
	cfg       Config
	log       *slog.Logger
	zone      string           // lower-case, fully qualified: "cluster.local."
	listen    []netip.AddrPort // parsed Config.Listen (unspecified address for ":53")
	upstreams []string         // "ip:port"
	view      atomic.Pointer[index]
	serial    atomic.Uint32 // SOA serial, one step per Update

	udp, tcp *dns.Client
	slots    chan struct{} // forwarding slots, maxForwards
	warn     logLimiter

	running atomic.Bool
	ready   chan struct{}
	addrs   []netip.AddrPort // set before ready is closed
}

// New validates cfg, settles the upstreams and returns the server. It binds
// nothing: Run does.
func New(cfg Config) (*Server, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Domain == "" {
		cfg.Domain = "cluster.local"
	}
	zone := strings.ToLower(dns.Fqdn(strings.TrimSpace(cfg.Domain)))
	if _, ok := dns.IsDomainName(zone); !ok || zone == "." || strings.Contains(zone, `\`) {
		return nil, fmt.Errorf("cluster DNS: Config.Domain %q: not a domain name", cfg.Domain)
	}
	if cfg.TTL == 0 {
		cfg.TTL = 5
	}
	if cfg.ForwardTimeout <= 0 {
		cfg.ForwardTimeout = 2 * time.Second
	}
	if cfg.ResolvConf == "" {
		cfg.ResolvConf = "/etc/resolv.conf"
	}
	if len(cfg.Listen) == 0 {
		return nil, errors.New("cluster DNS: Config.Listen: at least one address is required")
	}
	s := &Server{
		cfg:   cfg,
		log:   cfg.Logger,
		zone:  zone,
		slots: make(chan struct{}, maxForwards),
		ready: make(chan struct{}),
		udp:   &dns.Client{Net: "udp", Timeout: cfg.ForwardTimeout, UDPSize: dns.MaxMsgSize},
		tcp:   &dns.Client{Net: "tcp", Timeout: cfg.ForwardTimeout},
	}
	s.serial.Store(uint32(time.Now().Unix()))
	for _, l := range cfg.Listen {
		ap, err := parseListen(l)
		if err != nil {
			return nil, fmt.Errorf("cluster DNS: Config.Listen %q: %w", l, err)
		}
		s.listen = append(s.listen, ap)
	}
	ups, err := s.settleUpstreams()
	if err != nil {
		return nil, err
	}
	s.upstreams = ups
	return s, nil
}

// parseListen reads "ip:port" or ":port".
func parseListen(s string) (netip.AddrPort, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return netip.AddrPort{}, err
	}
	p, err := parsePort(port)
	if err != nil {
		return netip.AddrPort{}, err
	}
	if host == "" {
		return netip.AddrPortFrom(netip.IPv6Unspecified(), p), nil
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("want an IP address: %w", err)
	}
	return netip.AddrPortFrom(a.Unmap(), p), nil
}

// Update makes snap the view that names in the domain are answered from.
// It only swaps a pointer (the indexes it needs are built on first use), so
// it is cheap to call on every change. snap must not be modified afterwards
// (svcview.Snapshot never is). Update(nil) forgets the view: names in the
// domain get SERVFAIL until the next Update.
func (s *Server) Update(snap *svcview.Snapshot) {
	if snap == nil {
		s.view.Store(nil)
		return
	}
	s.view.Store(&index{snap: snap, zone: s.zone, ttl: s.cfg.TTL, serial: s.serial.Add(1)})
}

// Upstreams returns the resolvers the server forwards to, in order.
func (s *Server) Upstreams() []string { return append([]string(nil), s.upstreams...) }

// Ready is closed once Run has bound every listen address and serves on
// them, or has failed to (then Addrs is empty and Run returns the error).
func (s *Server) Ready() <-chan struct{} { return s.ready }

// Addrs returns the bound addresses, one per Config.Listen entry, each
// served over UDP and TCP. Valid once Ready is closed.
func (s *Server) Addrs() []netip.AddrPort {
	select {
	case <-s.ready:
		return append([]netip.AddrPort(nil), s.addrs...)
	default:
		return nil
	}
}

// Run binds every listen address (UDP and TCP) and serves until ctx ends,
// then stops the listeners and waits for queries in flight (at most
// ForwardTimeout). A failure to bind is returned at once, naming the
// address ("cluster DNS: listen udp 10.244.1.1:53: bind: address already
// in use"). Run may be called once.
func (s *Server) Run(ctx context.Context) error {
	if !s.running.CompareAndSwap(false, true) {
		return errors.New("cluster DNS: Run called twice")
	}
	servers, addrs, err := s.bind()
	if err != nil {
		close(s.ready)
		return err
	}

	errc := make(chan error, len(servers))
	started := make(chan struct{}, len(servers))
	for _, srv := range servers {
		srv.NotifyStartedFunc = func() { started <- struct{}{} }
		go func() { errc <- srv.ActivateAndServe() }()
	}
	// Wait until every server runs, so that Shutdown below cannot race
	// ahead of a server's start (and leave it serving).
	var runErr error
	pending := len(servers)
	for n := 0; n < len(servers) && runErr == nil; n++ {
		select {
		case <-started:
		case runErr = <-errc:
			pending--
		}
	}
	if runErr == nil {
		s.addrs = addrs
	}
	close(s.ready)
	if runErr == nil {
		s.log.Info("cluster DNS serving", "listen", addrs, "domain", strings.TrimSuffix(s.zone, "."), "upstreams", s.upstreams)
		select {
		case <-ctx.Done():
		case runErr = <-errc:
			pending--
		}
	}

	shutdownCtx, cancel := context.WithTimeout(context.Background(), s.cfg.ForwardTimeout+time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for _, srv := range servers {
		wg.Go(func() {
			if err := srv.ShutdownContext(shutdownCtx); err != nil {
				// Not started (it failed) or already stopped: release its socket.
				if srv.PacketConn != nil {
					srv.PacketConn.Close()
				}
				if srv.Listener != nil {
					srv.Listener.Close()
				}
			}
		})
	}
	wg.Wait()
	for ; pending > 0; pending-- {
		if err := <-errc; err != nil && runErr == nil && ctx.Err() == nil {
			runErr = err
		}
	}
	if runErr != nil {
		return fmt.Errorf("cluster DNS: serving: %w", runErr)
	}
	s.log.Info("cluster DNS stopped")
	return nil
}

// bind opens a UDP socket and a TCP listener for every listen address; for
// port 0 both on the same free port.
func (s *Server) bind() ([]*dns.Server, []netip.AddrPort, error) {
	var servers []*dns.Server
	var addrs []netip.AddrPort
	fail := func(err error) ([]*dns.Server, []netip.AddrPort, error) {
		for _, srv := range servers {
			if srv.PacketConn != nil {
				srv.PacketConn.Close()
			}
			if srv.Listener != nil {
				srv.Listener.Close()
			}
		}
		return nil, nil, fmt.Errorf("cluster DNS: %w", err)
	}
	for i, ap := range s.listen {
		addr := s.cfg.Listen[i]
		var pc net.PacketConn
		var l net.Listener
		var err error
		for attempt := 0; ; attempt++ {
			pc, err = net.ListenPacket("udp", addr)
			if err != nil {
				return fail(err)
			}
			tcpAddr := addr
			if ap.Port() == 0 {
				port := pc.LocalAddr().(*net.UDPAddr).Port
				host, _, _ := net.SplitHostPort(addr)
				tcpAddr = net.JoinHostPort(host, fmt.Sprint(port))
			}
			l, err = net.Listen("tcp", tcpAddr)
			if err == nil {
				break
			}
			pc.Close()
			if ap.Port() != 0 || attempt == 20 {
				return fail(err)
			}
		}
		bound := pc.LocalAddr().(*net.UDPAddr).AddrPort()
		addrs = append(addrs, netip.AddrPortFrom(bound.Addr().Unmap(), bound.Port()))
		servers = append(servers,
			&dns.Server{PacketConn: pc, Handler: s, UDPSize: dns.DefaultMsgSize},
			&dns.Server{Listener: l, Handler: s})
	}
	return servers, addrs, nil
}

// ServeDNS answers one query (dns.Handler). The transport, which decides
// how a forwarded query is sent and how large an answer may be, is read
// from w.LocalAddr: TCP when it is a *net.TCPAddr, UDP otherwise.
func (s *Server) ServeDNS(w dns.ResponseWriter, r *dns.Msg) {
	_, tcp := w.LocalAddr().(*net.TCPAddr)
	if m := s.reply(r, tcp); m != nil {
		if err := w.WriteMsg(m); err != nil {
			s.log.Debug("cluster DNS: writing answer", "remote", w.RemoteAddr(), "err", err)
		}
	}
}

// reply computes the answer to r; nil means send nothing.
func (s *Server) reply(r *dns.Msg, tcp bool) *dns.Msg {
	if r == nil || r.Response {
		return nil // never answer answers: no reflection loops
	}
	m := new(dns.Msg)
	switch {
	case r.Opcode != dns.OpcodeQuery:
		m.SetRcode(r, dns.RcodeNotImplemented)
		return m
	case len(r.Question) != 1:
		m.SetRcodeFormatError(r)
		return m
	}
	q := r.Question[0]
	name := strings.ToLower(dns.Fqdn(q.Name))
	switch {
	case q.Qclass != dns.ClassINET && q.Qclass != dns.ClassANY,
		q.Qtype == dns.TypeAXFR, q.Qtype == dns.TypeIXFR:
		m.SetRcode(r, dns.RcodeRefused)
		return m
	case inZone(name, s.zone):
		m = s.answerLocal(r, name)
	default:
		if m = s.answerPTR(r, name); m == nil {
			m = s.forwardReply(r, tcp)
		}
	}
	fit(m, r, tcp)
	return m
}

// fit makes m fit the client's transport: for UDP its advertised EDNS
// buffer (512 without EDNS), setting TC when records had to go.
func fit(m, r *dns.Msg, tcp bool) {
	size := dns.MinMsgSize
	if opt := r.IsEdns0(); opt != nil {
		if m.IsEdns0() == nil {
			m.SetEdns0(dns.DefaultMsgSize, false) // RFC 6891: answer EDNS with EDNS
		}
		size = max(int(opt.UDPSize()), dns.MinMsgSize)
	}
	if tcp {
		size = dns.MaxMsgSize
	}
	m.Truncate(size)
}

// answerLocal answers a name inside the domain, chasing an ExternalName
// CNAME to its target (locally, or through the upstreams).
func (s *Server) answerLocal(r *dns.Msg, name string) *dns.Msg {
	m := new(dns.Msg)
	m.SetReply(r)
	m.RecursionAvailable = true
	ix := s.view.Load()
	if ix == nil {
		m.Rcode = dns.RcodeServerFailure // no view yet: say "try again", not "no such name"
		return m
	}
	m.Authoritative = true
	q := r.Question[0]
	a := ix.lookup(name, q.Name, q.Qtype)
	m.Rcode, m.Answer, m.Extra = a.rcode, a.answer, a.extra
	for depth := 0; a.cname != "" && depth < 8; depth++ {
		target := a.cname
		if !inZone(target, s.zone) {
			s.chaseUpstream(m, target, q.Qtype)
			return m
		}
		a = ix.lookup(target, target, q.Qtype)
		m.Rcode = a.rcode
		m.Answer = append(m.Answer, a.answer...)
		m.Extra = append(m.Extra, a.extra...)
	}
	if len(a.answer) == 0 { // NXDOMAIN or NODATA, maybe at the end of a CNAME chain
		m.Ns = []dns.RR{ix.soa()}
	}
	return m
}

// chaseUpstream appends the upstreams' answer for target to m (a CNAME to
// a name outside the domain); the rcode becomes theirs (RFC 6604).
func (s *Server) chaseUpstream(m *dns.Msg, target string, qtype uint16) {
	q := new(dns.Msg)
	q.SetQuestion(target, qtype)
	q.SetEdns0(dns.DefaultMsgSize, false)
	resp, err := s.forward(q, false)
	if err != nil {
		s.noteForwardFailure(target, err)
		m.Rcode = dns.RcodeServerFailure
		return
	}
	m.Rcode = resp.Rcode
	m.Answer = append(m.Answer, resp.Answer...)
	if len(resp.Answer) == 0 {
		m.Ns = resp.Ns // the upstream's SOA for its negative answer
	}
}

// answerPTR answers a reverse query for an address the view names; nil
// when it is not ours (then it is forwarded).
func (s *Server) answerPTR(r *dns.Msg, name string) *dns.Msg {
	q := r.Question[0]
	if q.Qtype != dns.TypePTR {
		return nil
	}
	ix := s.view.Load()
	if ix == nil {
		return nil
	}
	addr, ok := reverseAddr(name)
	if !ok {
		return nil
	}
	names := ix.ptrs()[addr]
	if len(names) == 0 {
		return nil
	}
	m := new(dns.Msg)
	m.SetReply(r)
	m.Authoritative, m.RecursionAvailable = true, true
	for _, n := range names {
		m.Answer = append(m.Answer, &dns.PTR{Hdr: ix.hdr(q.Name, dns.TypePTR), Ptr: n})
	}
	return m
}

// inZone reports whether the lower-case FQDN name is zone or below it.
func inZone(name, zone string) bool {
	if strings.IndexByte(name, '\\') >= 0 {
		return dns.IsSubDomain(zone, name) // escaped dots: compare label by label
	}
	return name == zone || (len(name) > len(zone) && strings.HasSuffix(name, zone) && name[len(name)-len(zone)-1] == '.')
}
