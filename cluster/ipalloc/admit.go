package ipalloc

import (
	"fmt"
	"net/netip"
	"sort"

	corev1 "k8s.io/api/core/v1"

	"github.com/flotilla-dev/flotilla/schema"
)

// Request is one Service being created or updated.
type Request struct {
	// Service is the object to write. Admit completes its spec in place:
	// spec.clusterIP and spec.clusterIPs, and spec.ports[].nodePort.
	Service *corev1.Service
	// Stored is the stored object for an update, nil for a create. Admit
	// only reads it.
	Stored *corev1.Service
	// File and Line locate the manifest, for the Problems.
	File string
	Line int
}

// Admit completes and checks the Services of reqs, which are written
// together (one commit), against existing: the stored Services that stay
// as they are (not those in reqs, nor those deleted in the same write).
//
// For each Service whose type has a cluster IP (ClusterIP, the default,
// NodePort, LoadBalancer) it keeps the stored address on an update, else
// honours a requested spec.clusterIP that is inside the service CIDR and
// no other Service's, else gives the lowest free address of the CIDR.
// A cluster IP is immutable, as in Kubernetes: changing it, or turning a
// headless Service (clusterIP: None) into one with an address or back, is
// refused. ExternalName Services have no cluster IP.
//
// Ports of NodePort and LoadBalancer Services get node ports the same way:
// the stored one of the same port (matched by name, else by port and
// protocol), else the requested one when it is in range and no other
// Service's, else the lowest free port of the range. A LoadBalancer with
// spec.allocateLoadBalancerNodePorts false gets only those it asks for.
// Other types have their node ports cleared.
//
// Requested values are claimed before any is allocated, so an allocation
// never takes what another Service of the same write asks for; Services
// are handled in namespace/name order, so the outcome does not depend on
// the order of reqs. Problems (errors only) say what was refused, located
// at the Request's File and Line and naming the other Service; on any
// Problem the caller must write nothing.
func (a *Allocator) Admit(existing []*corev1.Service, reqs []Request) schema.Problems {
	var probs schema.Problems
	for _, ps := range a.AdmitEach(existing, reqs) {
		probs = append(probs, ps...)
	}
	sort.SliceStable(probs, func(i, j int) bool {
		if probs[i].File != probs[j].File {
			return probs[i].File < probs[j].File
		}
		return probs[i].Line < probs[j].Line
	})
	return probs
}

// AdmitEach is Admit with the problems of each Request apart, in the
// order of reqs (the write pipeline maps them back to its writes). A
// Request is completed only when it has no problem; on any problem in
// any Request the caller must write none of them.
func (a *Allocator) AdmitEach(existing []*corev1.Service, reqs []Request) []schema.Problems {
	l := ledger{ips: map[netip.Addr]string{}, ports: map[int32]string{}}
	existing = sortedServices(existing)
	for _, s := range existing {
		who := nameOf(s)
		if ip, ok := clusterIP(s); ok {
			l.hold(ip, who)
		}
		if needsNodePorts(s.Spec.Type) {
			for _, p := range s.Spec.Ports {
				if p.NodePort != 0 {
					l.holdPort(p.NodePort, who)
				}
			}
		}
	}

	plans := make([]*svcPlan, len(reqs))
	for i := range reqs {
		plans[i] = a.classify(&reqs[i])
		plans[i].index = i
	}
	sort.SliceStable(plans, func(i, j int) bool { return plans[i].who < plans[j].who })

	// The values Services already have, then the ones they ask for, then
	// allocations from what is left.
	for _, p := range plans {
		if p.ip.kind == keep {
			l.hold(p.ip.addr, p.who)
		}
		for _, np := range p.ports {
			if np.kind == keep {
				l.holdPort(np.port, p.who)
			}
		}
	}
	for _, p := range plans {
		if p.ip.kind == request {
			if other, ok := l.ips[p.ip.addr]; ok && other != p.who {
				p.fail("spec.clusterIP", "%s is already the address of service %s", p.ip.addr, other)
			} else {
				l.hold(p.ip.addr, p.who)
			}
		}
		for _, np := range p.ports {
			if np.kind != request {
				continue
			}
			if other, ok := l.ports[np.port]; ok && other != p.who {
				p.fail(portField(np.index), "nodePort %d is already used by service %s", np.port, other)
			} else {
				l.holdPort(np.port, p.who)
			}
		}
	}
	nextIP := a.firstAddr()
	nextPort := a.ports.First
	for _, p := range plans {
		if len(p.probs) > 0 {
			continue // refused anyway: allocate nothing for it
		}
		if p.ip.kind == auto {
			ip, ok := a.nextFreeAddr(&nextIP, l.ips)
			if !ok {
				p.fail("spec.clusterIP", "no free address left in the service CIDR %s (--service-cidr)", a.cidr)
			} else {
				p.ip.addr = ip
				l.hold(ip, p.who)
			}
		}
		for i := range p.ports {
			np := &p.ports[i]
			if np.kind != auto {
				continue
			}
			port, ok := a.nextFreePort(&nextPort, l.ports)
			if !ok {
				p.fail(portField(np.index), "no free node port left in the range %s (--service-node-port-range)", a.ports)
				break
			}
			np.port = port
			l.holdPort(port, p.who)
		}
	}

	out := make([]schema.Problems, len(reqs))
	for _, p := range plans {
		if len(p.probs) > 0 {
			out[p.index] = p.probs
			continue
		}
		p.write()
	}
	return out
}

// ledger is who holds each address and node port.
type ledger struct {
	ips   map[netip.Addr]string
	ports map[int32]string
}

// hold records an address as who's unless another holds it already (the
// stored state wins: an old clash is not made worse, nor refused here).
func (l *ledger) hold(ip netip.Addr, who string) {
	if _, ok := l.ips[ip]; !ok {
		l.ips[ip] = who
	}
}

func (l *ledger) holdPort(p int32, who string) {
	if _, ok := l.ports[p]; !ok {
		l.ports[p] = who
	}
}

type needKind int

const (
	none    needKind = iota // no value: cleared, or headless
	keep                    // the stored value, kept
	request                 // a value the manifest asks for
	auto                    // to be allocated
)

type ipNeed struct {
	kind     needKind
	addr     netip.Addr
	headless bool
}

type portNeed struct {
	index int // in spec.ports
	kind  needKind
	port  int32
}

// svcPlan is what one Request needs, then what it got.
type svcPlan struct {
	index int // in the Requests
	req   *Request
	who   string
	ip    ipNeed
	ports []portNeed
	probs schema.Problems
}

func (p *svcPlan) fail(field, format string, args ...any) {
	p.probs = append(p.probs, schema.Problem{File: p.req.File, Line: p.req.Line, Field: field, Reason: fmt.Sprintf(format, args...)})
}

// classify checks one Service on its own and says what it needs.
func (a *Allocator) classify(r *Request) *svcPlan {
	p := &svcPlan{req: r, who: nameOf(r.Service)}
	a.classifyIP(p)
	a.classifyPorts(p)
	return p
}

func (a *Allocator) classifyIP(p *svcPlan) {
	spec := &p.req.Service.Spec
	want := spec.ClusterIP
	switch {
	case len(spec.ClusterIPs) > 1:
		p.fail("spec.clusterIPs", "one cluster IP per service is supported (no dual-stack), got %d", len(spec.ClusterIPs))
		return
	case len(spec.ClusterIPs) == 1 && want == "":
		want = spec.ClusterIPs[0]
	case len(spec.ClusterIPs) == 1 && spec.ClusterIPs[0] != want:
		p.fail("spec.clusterIPs[0]", "%q must equal spec.clusterIP %q", spec.ClusterIPs[0], want)
		return
	}
	if spec.Type == corev1.ServiceTypeExternalName {
		if want != "" {
			p.fail("spec.clusterIP", "an ExternalName service has no cluster IP: remove spec.clusterIP (%q)", want)
		}
		return // none: write clears it
	}
	var stored string // the stored address or "None"; "" when it had none
	if s := p.req.Stored; s != nil && s.Spec.Type != corev1.ServiceTypeExternalName {
		stored = s.Spec.ClusterIP
	}
	immutable := func(from, to string) {
		p.fail("spec.clusterIP", "may not change from %s to %s: a service's cluster IP is immutable, as in Kubernetes; "+
			"remove the change to keep it, or give the service a new name (or delete it in one commit and add it back in the next)", from, to)
	}
	switch want {
	case corev1.ClusterIPNone:
		if needsNodePorts(spec.Type) {
			p.fail("spec.clusterIP", "a headless service (clusterIP: None) cannot be of type %s", spec.Type)
			return
		}
		if stored != "" && stored != corev1.ClusterIPNone {
			immutable(stored, "None (headless)")
			return
		}
		p.ip = ipNeed{kind: none, headless: true}
	case "":
		switch stored {
		case "":
			p.ip = ipNeed{kind: auto}
		case corev1.ClusterIPNone:
			immutable("None (headless)", "an allocated address (spec.clusterIP was removed)")
		default:
			ip, err := netip.ParseAddr(stored)
			if err != nil {
				p.ip = ipNeed{kind: auto} // garbage stored: allocate anew
				return
			}
			p.ip = ipNeed{kind: keep, addr: ip}
		}
	default:
		ip, err := netip.ParseAddr(want)
		if err != nil || ip.Zone() != "" {
			p.fail("spec.clusterIP", "%q is not an IP address: want one in the service CIDR %s, None for a headless service, or nothing to get one allocated", want, a.cidr)
			return
		}
		ip = ip.Unmap()
		if stored != "" && stored != ip.String() {
			immutable(orHeadless(stored), ip.String())
			return
		}
		if stored == ip.String() {
			p.ip = ipNeed{kind: keep, addr: ip}
			return
		}
		if why := a.unusable(ip); why != "" {
			p.fail("spec.clusterIP", "%s %s", ip, why)
			return
		}
		p.ip = ipNeed{kind: request, addr: ip}
	}
}

func orHeadless(ip string) string {
	if ip == corev1.ClusterIPNone {
		return "None (headless)"
	}
	return ip
}

// unusable says why ip may not be requested as a cluster IP, or "".
func (a *Allocator) unusable(ip netip.Addr) string {
	switch {
	case !a.cidr.Contains(ip):
		return fmt.Sprintf("is not in the service CIDR %s (--service-cidr)", a.cidr)
	case ip == a.cidr.Addr():
		return fmt.Sprintf("is the network address of the service CIDR %s", a.cidr)
	case ip.Is4() && ip == lastAddr(a.cidr):
		return fmt.Sprintf("is the broadcast address of the service CIDR %s", a.cidr)
	}
	return ""
}

type portProto struct {
	port  int32
	proto corev1.Protocol
}

func protocol(p corev1.ServicePort) corev1.Protocol {
	if p.Protocol == "" {
		return corev1.ProtocolTCP
	}
	return p.Protocol
}

func (a *Allocator) classifyPorts(p *svcPlan) {
	spec := &p.req.Service.Spec
	if !needsNodePorts(spec.Type) {
		p.ports = nil // write clears them
		return
	}
	allocate := spec.Type == corev1.ServiceTypeNodePort || spec.AllocateLoadBalancerNodePorts == nil || *spec.AllocateLoadBalancerNodePorts
	var stored []corev1.ServicePort
	storedNP := map[int32]bool{}
	if s := p.req.Stored; s != nil && needsNodePorts(s.Spec.Type) {
		stored = s.Spec.Ports
		for _, sp := range stored {
			storedNP[sp.NodePort] = true
		}
	}
	// Asked-for node ports first, so that a stored one never lands on a
	// port that another port of this service now asks for.
	taken := map[portProto]bool{}
	for _, sp := range spec.Ports {
		if sp.NodePort != 0 {
			taken[portProto{sp.NodePort, protocol(sp)}] = true
		}
	}
	usedStored := make([]bool, len(stored))
	match := func(sp corev1.ServicePort) int32 {
		find := func(same func(corev1.ServicePort) bool) int32 {
			for j, old := range stored {
				if usedStored[j] || old.NodePort == 0 || !same(old) || taken[portProto{old.NodePort, protocol(sp)}] {
					continue
				}
				usedStored[j] = true
				return old.NodePort
			}
			return 0
		}
		if sp.Name != "" {
			if np := find(func(old corev1.ServicePort) bool { return old.Name == sp.Name }); np != 0 {
				return np
			}
		}
		return find(func(old corev1.ServicePort) bool { return old.Port == sp.Port && protocol(old) == protocol(sp) })
	}
	for i, sp := range spec.Ports {
		switch {
		case sp.NodePort != 0 && storedNP[sp.NodePort]:
			p.ports = append(p.ports, portNeed{index: i, kind: keep, port: sp.NodePort})
		case sp.NodePort != 0 && !a.ports.Contains(sp.NodePort):
			p.fail(portField(i), "nodePort %d is outside the node port range %s (--service-node-port-range)", sp.NodePort, a.ports)
		case sp.NodePort != 0:
			p.ports = append(p.ports, portNeed{index: i, kind: request, port: sp.NodePort})
		case !allocate:
			p.ports = append(p.ports, portNeed{index: i, kind: none})
		default:
			if np := match(sp); np != 0 {
				taken[portProto{np, protocol(sp)}] = true
				p.ports = append(p.ports, portNeed{index: i, kind: keep, port: np})
			} else {
				p.ports = append(p.ports, portNeed{index: i, kind: auto})
			}
		}
	}
}

// write puts what p got into the Service.
func (p *svcPlan) write() {
	spec := &p.req.Service.Spec
	switch {
	case spec.Type == corev1.ServiceTypeExternalName:
		spec.ClusterIP, spec.ClusterIPs = "", nil
	case p.ip.headless:
		spec.ClusterIP, spec.ClusterIPs = corev1.ClusterIPNone, []string{corev1.ClusterIPNone}
	case p.ip.addr.IsValid():
		spec.ClusterIP, spec.ClusterIPs = p.ip.addr.String(), []string{p.ip.addr.String()}
	}
	for i := range spec.Ports {
		spec.Ports[i].NodePort = 0
	}
	for _, np := range p.ports {
		spec.Ports[np.index].NodePort = np.port
	}
}

func portField(i int) string { return fmt.Sprintf("spec.ports[%d].nodePort", i) }

func needsNodePorts(t corev1.ServiceType) bool {
	return t == corev1.ServiceTypeNodePort || t == corev1.ServiceTypeLoadBalancer
}

// clusterIP is the address a stored Service holds, if any.
func clusterIP(s *corev1.Service) (netip.Addr, bool) {
	if s.Spec.Type == corev1.ServiceTypeExternalName {
		return netip.Addr{}, false
	}
	ip, err := netip.ParseAddr(s.Spec.ClusterIP)
	if err != nil {
		return netip.Addr{}, false
	}
	return ip.Unmap(), true
}

func nameOf(s *corev1.Service) string {
	ns := s.Namespace
	if ns == "" {
		ns = "default"
	}
	return ns + "/" + s.Name
}

func sortedServices(in []*corev1.Service) []*corev1.Service {
	out := append([]*corev1.Service(nil), in...)
	sort.SliceStable(out, func(i, j int) bool { return nameOf(out[i]) < nameOf(out[j]) })
	return out
}

// firstAddr is the lowest address handed out: the one after the network
// address.
func (a *Allocator) firstAddr() netip.Addr { return a.cidr.Addr().Next() }

// nextFreeAddr moves *cur to the lowest address at or above it that no one
// holds and returns it. Allocations only ever take addresses, so the
// cursor never has to go back within one Admit.
func (a *Allocator) nextFreeAddr(cur *netip.Addr, held map[netip.Addr]string) (netip.Addr, bool) {
	last := lastAddr(a.cidr)
	for ip := *cur; ip.IsValid() && a.cidr.Contains(ip); ip = ip.Next() {
		if ip.Is4() && ip == last {
			break // the broadcast address
		}
		if _, ok := held[ip]; !ok {
			*cur = ip.Next()
			return ip, true
		}
	}
	return netip.Addr{}, false
}

func (a *Allocator) nextFreePort(cur *int32, held map[int32]string) (int32, bool) {
	for p := *cur; p <= a.ports.Last; p++ {
		if _, ok := held[p]; !ok {
			*cur = p + 1
			return p, true
		}
	}
	return 0, false
}

// lastAddr is the highest address of p.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := range b {
		bit := i * 8
		switch {
		case bit >= p.Bits():
			b[i] = 0xff
		case bit+8 > p.Bits():
			b[i] |= byte(0xff >> (p.Bits() - bit))
		}
	}
	ip, _ := netip.AddrFromSlice(b)
	return ip
}
