package dns

// The cluster domain: names under <zone> answered from one svcview.Snapshot.

import (
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/flotilla-dev/flotilla/netfabric/svcview"
)

// SchemaVersion is the version of the Kubernetes DNS schema served, the
// TXT record of dns-version.<zone> (CoreDNS serves the same).
const SchemaVersion = "1.1.0"

// index is one view of the zone. It is immutable once published by Update;
// the reverse map is built on first use, once.
type index struct {
	snap   *svcview.Snapshot
	zone   string // "cluster.local."
	ttl    uint32
	serial uint32

	ptrOnce sync.Once
	ptr     map[netip.Addr][]string
}

// result is what the zone says about one name and type. An empty answer
// with RcodeSuccess is NODATA: the name exists, not with that type.
type result struct {
	rcode  int
	answer []dns.RR
	extra  []dns.RR
	cname  string // the target, when the answer is a CNAME to follow
}

var nxdomain = result{rcode: dns.RcodeNameError}

// lookup answers qname (lower case, fully qualified, inside the zone) for
// qtype; records at qname carry owner (the question's spelling, so that
// clients randomising case get it back).
//
// Kubernetes names (namespaces, services, port names, hostnames) are
// lower-case DNS labels, so the lower-cased labels are looked up as they
// are, which makes every comparison case-insensitive as the spec wants.
func (ix *index) lookup(qname, owner string, qtype uint16) result {
	if qname == ix.zone {
		if qtype == dns.TypeSOA || qtype == dns.TypeANY {
			soa := ix.soa()
			soa.Hdr.Name = owner
			return result{answer: []dns.RR{soa}}
		}
		return result{} // the apex exists
	}
	if !strings.HasSuffix(qname, "."+ix.zone) || strings.IndexByte(qname, '\\') >= 0 {
		return nxdomain // no name of ours needs an escape
	}
	l := strings.Split(qname[:len(qname)-len(ix.zone)-1], ".")
	n := len(l)
	switch {
	case n == 1 && l[0] == "dns-version":
		if qtype == dns.TypeTXT || qtype == dns.TypeANY {
			return result{answer: []dns.RR{&dns.TXT{Hdr: ix.hdr(owner, dns.TypeTXT), Txt: []string{SchemaVersion}}}}
		}
		return result{}
	case l[n-1] == "svc":
		return ix.lookupSvc(l[:n-1], owner, qtype)
	case l[n-1] == "pod":
		return ix.lookupPod(l[:n-1], owner, qtype)
	}
	return nxdomain
}

// lookupSvc answers the names under svc.<zone>; l are the labels before it.
func (ix *index) lookupSvc(l []string, owner string, qtype uint16) result {
	n := len(l)
	switch n {
	case 0: // svc.<zone>
		return result{}
	case 1: // <ns>.svc.<zone>
		if ix.hasNamespace(l[0]) {
			return result{}
		}
		return nxdomain
	}
	if n > 4 {
		return nxdomain
	}
	ns, name := l[n-1], l[n-2]
	svc := ix.snap.Service(ns, name)
	if svc == nil {
		return nxdomain
	}
	fqdn := name + "." + ns + ".svc." + ix.zone
	external := svc.Spec.Type == corev1.ServiceTypeExternalName
	headless := !external && svcview.IsHeadless(svc)
	var eps []endpoint
	if headless {
		eps = readyEndpoints(ix.snap, svc)
		if len(eps) == 0 {
			return nxdomain // spec 2.4.1: a headless service without ready endpoints
		}
	}

	switch n {
	case 2: // <svc>.<ns>.svc.<zone>
		if external {
			target := strings.ToLower(dns.Fqdn(svc.Spec.ExternalName))
			if _, ok := dns.IsDomainName(target); !ok || target == "." {
				return result{}
			}
			r := result{answer: []dns.RR{&dns.CNAME{Hdr: ix.hdr(owner, dns.TypeCNAME), Target: target}}}
			if qtype != dns.TypeCNAME && qtype != dns.TypeANY {
				r.cname = target
			}
			return r
		}
		if qtype == dns.TypeSRV {
			return ix.srv(svc, eps, svc.Spec.Ports, fqdn, owner)
		}
		var r result
		if headless {
			for _, ep := range eps {
				r.answer = ix.addAddr(r.answer, owner, ep.addr, qtype)
			}
		} else {
			for _, ip := range svcview.ClusterIPs(svc) {
				r.answer = ix.addAddr(r.answer, owner, ip, qtype)
			}
		}
		return r

	case 3: // _<proto>.<svc>… (an empty non-terminal) or <host>.<svc>…
		if external {
			return nxdomain
		}
		if proto, ok := strings.CutPrefix(l[0], "_"); ok {
			for _, sp := range svc.Spec.Ports {
				if sp.Name != "" && protoLabel(sp.Protocol) == proto {
					return result{}
				}
			}
			return nxdomain
		}
		if !headless {
			return nxdomain // endpoint names exist for headless services only (spec 2.4.1)
		}
		var r result
		found := false
		for _, ep := range eps {
			if ep.name == l[0] {
				found = true
				r.answer = ix.addAddr(r.answer, owner, ep.addr, qtype)
			}
		}
		if !found {
			return nxdomain
		}
		return r

	default: // 4: _<port>._<proto>.<svc>.<ns>.svc.<zone>
		port, ok1 := strings.CutPrefix(l[0], "_")
		proto, ok2 := strings.CutPrefix(l[1], "_")
		if external || !ok1 || !ok2 || port == "" {
			return nxdomain
		}
		for _, sp := range svc.Spec.Ports {
			if sp.Name == port && protoLabel(sp.Protocol) == proto {
				if qtype != dns.TypeSRV && qtype != dns.TypeANY {
					return result{}
				}
				return ix.srv(svc, eps, []corev1.ServicePort{sp}, fqdn, owner)
			}
		}
		return nxdomain
	}
}

// srv answers SRV for the given ports of svc: for a service with a
// ClusterIP one record per port pointing at the service's name; for a
// headless one a record per port and ready endpoint pointing at the
// endpoint's name. The targets' addresses go in the additional section.
func (ix *index) srv(svc *corev1.Service, eps []endpoint, ports []corev1.ServicePort, fqdn, owner string) result {
	type target struct {
		name string
		port uint16
	}
	var targets []target
	var r result
	if !svcview.IsHeadless(svc) {
		for _, sp := range ports {
			targets = append(targets, target{fqdn, uint16(sp.Port)})
		}
		if len(targets) > 0 {
			for _, ip := range svcview.ClusterIPs(svc) {
				r.extra = ix.addAddr(r.extra, fqdn, ip, dns.TypeANY)
			}
		}
	} else {
		byAddr := make(map[netip.Addr]string, len(eps))
		for _, ep := range eps {
			byAddr[ep.addr] = ep.name
		}
		seenTarget := map[target]bool{}
		seenExtra := map[netip.Addr]bool{}
		for _, sp := range ports {
			for _, b := range ix.snap.ReadyBackends(svc, sp) {
				name, ok := byAddr[b.Addr]
				if !ok {
					continue // ready for this port but not an endpoint (cannot happen), or not ready
				}
				t := target{name + "." + fqdn, uint16(b.Port)}
				if !seenTarget[t] {
					seenTarget[t] = true
					targets = append(targets, t)
				}
				if !seenExtra[b.Addr] {
					seenExtra[b.Addr] = true
					r.extra = ix.addAddr(r.extra, t.name, b.Addr, dns.TypeANY)
				}
			}
		}
	}
	weight := uint16(100)
	if len(targets) > 1 {
		weight = uint16(max(1, 100/len(targets)))
	}
	for _, t := range targets {
		r.answer = append(r.answer, &dns.SRV{Hdr: ix.hdr(owner, dns.TypeSRV), Priority: 0, Weight: weight, Port: t.port, Target: t.name})
	}
	if len(r.answer) == 0 {
		r.extra = nil
	}
	return r
}

// lookupPod answers <a-b-c-d>.<ns>.pod.<zone> with a.b.c.d, any namespace,
// without checking that such a pod exists (CoreDNS "pods insecure"; IPv6 as
// fd00--5). l are the labels before pod.<zone>.
func (ix *index) lookupPod(l []string, owner string, qtype uint16) result {
	switch len(l) {
	case 0, 1: // pod.<zone>, <ns>.pod.<zone>
		return result{}
	case 2:
		label := l[0]
		var s string
		if strings.Count(label, "-") == 3 && !strings.Contains(label, "--") {
			s = strings.ReplaceAll(label, "-", ".")
		} else {
			s = strings.ReplaceAll(label, "-", ":")
		}
		ip, err := netip.ParseAddr(s)
		if err != nil || ip.Zone() != "" {
			return nxdomain
		}
		return result{answer: ix.addAddr(nil, owner, ip.Unmap(), qtype)}
	}
	return nxdomain
}

// hasNamespace reports whether any service lives in ns (Services are
// sorted by namespace, then name).
func (ix *index) hasNamespace(ns string) bool {
	svcs := ix.snap.Services
	i := sort.Search(len(svcs), func(i int) bool { return svcs[i].Namespace >= ns })
	return i < len(svcs) && svcs[i].Namespace == ns
}

// ptrs maps the addresses of the view to their names: ClusterIPs to their
// service's name, a headless service's ready endpoints to the endpoint's
// name, exactly the names that answer A/AAAA with that address.
func (ix *index) ptrs() map[netip.Addr][]string {
	ix.ptrOnce.Do(func() {
		m := map[netip.Addr][]string{}
		for _, svc := range ix.snap.Services {
			fqdn := svc.Name + "." + svc.Namespace + ".svc." + ix.zone
			for _, ip := range svcview.ClusterIPs(svc) {
				m[ip] = append(m[ip], fqdn)
			}
			if svcview.IsHeadless(svc) && svc.Spec.Type != corev1.ServiceTypeExternalName {
				for _, ep := range readyEndpoints(ix.snap, svc) {
					m[ep.addr] = append(m[ep.addr], ep.name+"."+fqdn)
				}
			}
		}
		ix.ptr = m
	})
	return ix.ptr
}

// endpoint is one ready address of a headless service and its DNS label.
type endpoint struct {
	addr netip.Addr
	name string // the endpoint's hostname, or its address with dashes
}

// readyEndpoints returns the ready addresses of svc's EndpointSlices,
// whatever their ports (a headless service may have none), sorted, one per
// address. Ready follows svcview.Backend.Ready: an unset condition counts as
// ready; publishNotReadyAddresses is the EndpointSlice controller's to apply
// (it marks those endpoints ready, as in Kubernetes).
func readyEndpoints(snap *svcview.Snapshot, svc *corev1.Service) []endpoint {
	var out []endpoint
	seen := map[netip.Addr]int{}
	for _, sl := range snap.SlicesOf(svc.Namespace, svc.Name) {
		if sl.AddressType != discoveryv1.AddressTypeIPv4 && sl.AddressType != discoveryv1.AddressTypeIPv6 {
			continue
		}
		for _, ep := range sl.Endpoints {
			if !svcview.EndpointReady(ep) {
				continue
			}
			host := ""
			if ep.Hostname != nil {
				host = strings.ToLower(*ep.Hostname)
			}
			for _, a := range ep.Addresses {
				addr, err := netip.ParseAddr(a)
				if err != nil {
					continue
				}
				addr = addr.Unmap()
				name := host
				if name == "" {
					name = dashed(addr)
				}
				if i, dup := seen[addr]; dup {
					if host != "" {
						out[i].name = host // a hostname wins over the dashed form
					}
					continue
				}
				seen[addr] = len(out)
				out = append(out, endpoint{addr, name})
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].addr.Less(out[j].addr) })
	return out
}

// dashed writes an address as one DNS label: 10-244-1-5, fd00--5.
func dashed(a netip.Addr) string {
	if a.Is4() {
		return strings.ReplaceAll(a.String(), ".", "-")
	}
	return strings.ReplaceAll(a.WithZone("").String(), ":", "-")
}

// protoLabel is the SRV protocol label of a service port: tcp, udp, sctp.
func protoLabel(p corev1.Protocol) string {
	if p == "" {
		return "tcp"
	}
	return strings.ToLower(string(p))
}

func (ix *index) hdr(name string, t uint16) dns.RR_Header {
	return dns.RR_Header{Name: name, Rrtype: t, Class: dns.ClassINET, Ttl: ix.ttl}
}

// addAddr appends an A or AAAA record for a to rrs when qtype asks for
// that family (or is ANY).
func (ix *index) addAddr(rrs []dns.RR, name string, a netip.Addr, qtype uint16) []dns.RR {
	switch {
	case a.Is4() && (qtype == dns.TypeA || qtype == dns.TypeANY):
		return append(rrs, &dns.A{Hdr: ix.hdr(name, dns.TypeA), A: a.AsSlice()})
	case a.Is6() && (qtype == dns.TypeAAAA || qtype == dns.TypeANY):
		return append(rrs, &dns.AAAA{Hdr: ix.hdr(name, dns.TypeAAAA), AAAA: a.AsSlice()})
	}
	return rrs
}

// soa is the zone's SOA, sent in the authority section of negative
// answers; its minimum (and TTL) is the negative-caching TTL.
func (ix *index) soa() *dns.SOA {
	return &dns.SOA{
		Hdr:     ix.hdr(ix.zone, dns.TypeSOA),
		Ns:      "ns.dns." + ix.zone,
		Mbox:    "hostmaster." + ix.zone,
		Serial:  ix.serial,
		Refresh: 7200,
		Retry:   1800,
		Expire:  86400,
		Minttl:  ix.ttl,
	}
}

// reverseAddr reads the address of a lower-case reverse name
// (d.c.b.a.in-addr.arpa., or 32 nibbles of ip6.arpa.).
func reverseAddr(name string) (netip.Addr, bool) {
	if rest, ok := strings.CutSuffix(name, ".in-addr.arpa."); ok {
		l := strings.Split(rest, ".")
		if len(l) != 4 {
			return netip.Addr{}, false
		}
		var b [4]byte
		for i, s := range l {
			v, err := strconv.ParseUint(s, 10, 8)
			if err != nil || (len(s) > 1 && s[0] == '0') {
				return netip.Addr{}, false
			}
			b[3-i] = byte(v)
		}
		return netip.AddrFrom4(b), true
	}
	if rest, ok := strings.CutSuffix(name, ".ip6.arpa."); ok {
		l := strings.Split(rest, ".")
		if len(l) != 32 {
			return netip.Addr{}, false
		}
		var b [16]byte
		for i, s := range l {
			if len(s) != 1 {
				return netip.Addr{}, false
			}
			v, err := strconv.ParseUint(s, 16, 8)
			if err != nil {
				return netip.Addr{}, false
			}
			nib := 31 - i // the first label is the last nibble
			if nib%2 == 0 {
				b[nib/2] |= byte(v) << 4
			} else {
				b[nib/2] |= byte(v)
			}
		}
		return netip.AddrFrom16(b).Unmap(), true
	}
	return netip.Addr{}, false
}
