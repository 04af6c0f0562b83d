package dns

// Forwarding: names outside the cluster domain go to the upstream resolvers.

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/miekg/dns"
)

var (
	errNoUpstreams = errors.New("no upstream resolvers")
	errBusy        = errors.New("too many queries being forwarded")
)

// forwardReply forwards r and returns the upstream's answer, or SERVFAIL.
func (s *Server) forwardReply(r *dns.Msg, tcp bool) *dns.Msg {
	resp, err := s.forward(r, tcp)
	if err != nil {
		s.noteForwardFailure(r.Question[0].Name, err)
		m := new(dns.Msg)
		m.SetRcode(r, dns.RcodeServerFailure)
		m.RecursionAvailable = true
		return m
	}
	return resp
}

// forward sends r to the upstreams in order over the client's transport
// (UDP, then TCP for a truncated answer), moving on after an error or a
// SERVFAIL/REFUSED, all within ForwardTimeout. The answer carries r's ID.
// When every upstream failed, the last SERVFAIL/REFUSED answer is
// returned, or an error when there was none.
func (s *Server) forward(r *dns.Msg, tcp bool) (*dns.Msg, error) {
	if len(s.upstreams) == 0 {
		return nil, errNoUpstreams
	}
	select {
	case s.slots <- struct{}{}:
		defer func() { <-s.slots }()
	default:
		return nil, errBusy
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.ForwardTimeout)
	defer cancel()
	deadline, _ := ctx.Deadline()

	q := r.Copy()
	q.Id = dns.Id() // our own random ID upstream: the client's is predictable
	var last *dns.Msg
	var errs []error
	for i, up := range s.upstreams {
		// Share what is left between the upstreams not yet tried.
		actx, acancel := context.WithTimeout(ctx, time.Until(deadline)/time.Duration(len(s.upstreams)-i))
		resp, err := s.exchange(actx, q, up, tcp)
		acancel()
		if err != nil {
			errs = append(errs, fmt.Errorf("upstream %s: %w", up, err))
			continue
		}
		resp.Id = r.Id
		if resp.Rcode == dns.RcodeServerFailure || resp.Rcode == dns.RcodeRefused {
			last = resp
			continue
		}
		return resp, nil
	}
	if last != nil {
		return last, nil
	}
	return nil, errors.Join(errs...)
}

// exchange asks one upstream, over TCP again when the UDP answer was
// truncated.
func (s *Server) exchange(ctx context.Context, q *dns.Msg, upstream string, tcp bool) (*dns.Msg, error) {
	c := s.udp
	if tcp {
		c = s.tcp
	}
	resp, _, err := c.ExchangeContext(ctx, q, upstream)
	if err == nil && resp.Truncated && !tcp {
		resp, _, err = s.tcp.ExchangeContext(ctx, q, upstream)
	}
	return resp, err
}

// noteForwardFailure logs a failed forward: a warning at most every
// 10 seconds (with how many were not logged), the rest at debug level.
func (s *Server) noteForwardFailure(name string, err error) {
	if n, ok := s.warn.allow(time.Now(), 10*time.Second); ok {
		s.log.Warn("cluster DNS: forwarding failed, answered SERVFAIL", "name", name, "err", err, "suppressed", n)
		return
	}
	s.log.Debug("cluster DNS: forwarding failed, answered SERVFAIL", "name", name, "err", err)
}

// logLimiter lets one message through per interval and counts the rest.
type logLimiter struct {
	mu         sync.Mutex
	last       time.Time
	suppressed int
}

func (l *logLimiter) allow(now time.Time, every time.Duration) (suppressed int, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.last.IsZero() && now.Sub(l.last) < every {
		l.suppressed++
		return 0, false
	}
	n := l.suppressed
	l.last, l.suppressed = now, 0
	return n, true
}

// settleUpstreams returns Config.Upstreams, or the nameservers of
// Config.ResolvConf, as "ip:port", without our own listen addresses.
func (s *Server) settleUpstreams() ([]string, error) {
	if s.cfg.NoForward {
		if len(s.cfg.Upstreams) > 0 {
			return nil, errors.New("cluster DNS: Config.NoForward with Upstreams: choose one")
		}
		return nil, nil
	}
	var out []string
	if len(s.cfg.Upstreams) > 0 {
		for _, u := range s.cfg.Upstreams {
			ap, err := parseUpstream(u)
			if err != nil {
				return nil, fmt.Errorf("cluster DNS: Config.Upstreams %q: %w", u, err)
			}
			if s.isSelf(ap) {
				return nil, fmt.Errorf("cluster DNS: Config.Upstreams %q is this server's own listen address: forwarding to it would loop", u)
			}
			out = append(out, ap.String())
		}
		return out, nil
	}
	data, err := os.ReadFile(s.cfg.ResolvConf)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("cluster DNS: reading upstream resolvers (Config.ResolvConf): %w", err)
	}
	for _, ns := range ParseResolvConf(data).Nameservers {
		ap, err := parseUpstream(ns)
		if err != nil {
			s.log.Warn("cluster DNS: ignoring a nameserver of "+s.cfg.ResolvConf, "nameserver", ns, "err", err)
			continue
		}
		if s.isSelf(ap) {
			s.log.Warn("cluster DNS: ignoring a nameserver of "+s.cfg.ResolvConf+": it is this server, forwarding to it would loop", "nameserver", ns)
			continue
		}
		out = append(out, ap.String())
	}
	if len(out) == 0 {
		s.log.Warn("cluster DNS: no upstream resolvers: names outside the cluster domain will get SERVFAIL", "resolvConf", s.cfg.ResolvConf)
	}
	return out, nil
}

// isSelf reports whether a query sent to up would reach one of our own
// listeners: the same address and port, or, for a wildcard listener
// (":53"), any address of this host on that port — then we cannot tell
// whether a more specific socket (systemd-resolved's 127.0.0.53) would
// take it first, so we assume not.
func (s *Server) isSelf(up netip.AddrPort) bool {
	var local []netip.Addr
	localDone := false
	for _, l := range s.listen {
		if l.Port() == 0 || l.Port() != up.Port() {
			continue
		}
		if l.Addr() == up.Addr() {
			return true
		}
		if !l.Addr().IsUnspecified() {
			continue
		}
		a := up.Addr().WithZone("")
		if a.IsLoopback() || a.IsUnspecified() {
			return true
		}
		if !localDone {
			local, localDone = hostAddrs(), true
		}
		for _, h := range local {
			if h == a {
				return true
			}
		}
	}
	return false
}

// hostAddrs returns the addresses of this host's interfaces.
func hostAddrs() []netip.Addr {
	ifaddrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil
	}
	var out []netip.Addr
	for _, ia := range ifaddrs {
		if p, err := netip.ParsePrefix(ia.String()); err == nil {
			out = append(out, p.Addr().Unmap())
		}
	}
	return out
}

// parseUpstream reads "ip", "ip:port" or "[ip6]:port" (port default 53).
func parseUpstream(s string) (netip.AddrPort, error) {
	if a, err := netip.ParseAddr(s); err == nil {
		return netip.AddrPortFrom(a.Unmap(), 53), nil
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("want ip or ip:port: %w", err)
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("want an IP address: %w", err)
	}
	p, err := parsePort(port)
	if err != nil {
		return netip.AddrPort{}, err
	}
	if p == 0 {
		return netip.AddrPort{}, errors.New("port 0")
	}
	return netip.AddrPortFrom(a.Unmap(), p), nil
}

func parsePort(s string) (uint16, error) {
	p, err := strconv.ParseUint(s, 10, 16)
	if err != nil {
		return 0, fmt.Errorf("bad port %q", s)
	}
	return uint16(p), nil
}
