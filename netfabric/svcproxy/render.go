package svcproxy

import (
	"crypto/sha256"
	"encoding/base32"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/flotilla-dev/flotilla/netfabric/svcview"
)

// The table, and why it is shaped this way.
//
// A new connection is matched in the nat hooks (prerouting for pods and
// outside clients, output for the node's own processes) by ONE lookup in a
// verdict map keyed by what it was sent to:
//
//	service-ips       daddr . proto . dport  → goto pick-cluster-N | pick-external-N | service-…
//	service-nodeports proto . dport          → goto pick-nodeport-N | external-…   (daddr a local address)
//
// "pick-…-N" is shared by every frontend whose service has N ready
// endpoints: it decides about masquerade, then `numgen random mod N` jumps
// to dnat-I, which looks the frontend up again in the map endpoints-I (the
// I-th endpoint of every frontend) and DNATs to the address . port found:
//
//	dnat ip to ip daddr . meta l4proto . th dport map @endpoints-I
//
// So the table has a handful of chains and maps however many services
// there are: the services live in map elements, which nft loads quickly,
// and a change to a service is a change to a few elements, which is what
// Sync sends (transaction.go). Measured on the 2-core machine for 1,000
// services × 5 endpoints (nft 1.0.6, kernel 6.18; one `nft -f` loading
// the whole table):
//
//	per-endpoint chains (kube-proxy's layout)      ~800–1,100 ms
//	one chain per service, numgen into an
//	  anonymous address . port map per service     ~290–350 ms (each anonymous set costs ~0.1 ms in the kernel)
//	shared pick chains + endpoints-I maps (this)   ~100–190 ms (mostly nft parsing 9,000 elements)
//	  … and only the changed elements and chains  ~15–25 ms
//
// NodePorts answer on every local address but 127.0.0.0/8 (that would
// need route_localnet, as in kube-proxy's nftables mode).
//
// (A single map keyed by frontend . numgen would need `typeof … numgen`,
// which nft 1.0.6 cannot read back from the kernel — every later
// transaction on the table then fails.)
//
// Session affinity (ClientIP) needs to know which endpoint a client got,
// so those service ports get kube-proxy's per-endpoint layout: a chain per
// endpoint that records the client in that endpoint's dynamic set
// (`update @affinity-… { ip saddr }`, with the service's timeout) and a
// service chain that first sends a client found in one of those sets back
// to the same endpoint. Their names carry a hash of the port, endpoint and
// timeout, so a change of any of them makes a new set rather than reusing
// stale memberships.
//
// Masquerade is decided before DNAT by setting a mark bit (0x4000, as
// kube-proxy), and done in postrouting:
//
//   - cluster frontends (ClusterIPs): when the source is outside the
//     cluster CIDR (the node itself, or a client routed to the VIP from
//     outside) — replies must come back through this node.
//   - external frontends (NodePorts, load-balancer and external IPs): when
//     the source is outside this node's pod CIDR. That covers clients
//     outside the cluster CIDR and also pods on OTHER nodes: without it the
//     endpoint would answer a remote pod directly, around this node, and the
//     client would get a reply from an address it never called. A pod of
//     this node keeps its address: the reply is routed back through here.
//   - a pod reaching itself through a service (source == chosen endpoint):
//     the packet would come back to the pod with its own address as the
//     source, which the kernel drops as a martian, so it is masqueraded to
//     the bridge's address. This is known only after DNAT, so postrouting
//     looks the pair up in the set "hairpin" (every ready endpoint of this
//     pod CIDR, as address . address). The bridge must also send the frame
//     back out of the port it came from: see kernel.go (hairpin mode).
//
// Frontends whose service has no ready endpoint are in no-endpoint-services
// / no-endpoint-nodeports instead, checked by filter chains (input,
// forward, output; before DNAT could matter) that reject new connections:
// a TCP reset (the client sees "connection refused" at once, as for a
// closed port) and ICMP port-unreachable for UDP and SCTP, which is what
// kube-proxy's plain `reject` sends. Not host-unreachable: the host exists,
// the service has no endpoints, and "no route to host" would send whoever
// debugs it the wrong way.

// params are the parts of Config that shape the table.
type params struct {
	Table       string
	ClusterCIDR netip.Prefix
	PodCIDR     netip.Prefix
}

// masqMark is the packet mark bit that asks postrouting to masquerade.
const masqMark = "0x00004000"

// defaultAffinityTimeout is Kubernetes' default for
// sessionAffinityConfig.clientIP.timeoutSeconds (3 hours).
const defaultAffinityTimeout = 10800

type kind int

const (
	kindChain kind = iota
	kindMap
	kindSet
	kindAffinity // a dynamic set whose members (clients) outlive an apply
)

func (k kind) String() string {
	switch k {
	case kindChain:
		return "chain"
	case kindMap:
		return "map"
	default:
		return "set"
	}
}

// object is a named chain, map or set of the table.
type object struct {
	kind kind
	name string
}

// obj is one chain, map or set as rendered.
type obj struct {
	object
	// section is a "# …" heading written before it (text only).
	section string
	// head is a base chain's hook line ("" for a regular chain), or a map's
	// or set's type (and flags) line.
	head string
	// comment is a map's or set's "# …" line (text only).
	comment string
	rules   []string  // a chain's
	elems   []element // a map's or set's
}

// element is one map or set element; value is "" in a set. comment is
// written after it as "# …" (nft ignores it: it costs nothing in the
// kernel).
type element struct {
	key, value, comment string
}

// udpFlow is a UDP frontend and one of its backends: when the pair
// disappears, conntrack entries that still send the frontend's traffic to
// the backend must go (UDP has no end of connection to wait for).
type udpFlow struct {
	// Frontend is the address called; invalid for a NodePort (any local
	// address).
	Frontend netip.Addr
	Port     uint16
	Backend  netip.Addr
}

// ruleset is one rendering of the table.
type ruleset struct {
	// text defines the whole table (`table ip NAME { … }`).
	text string
	// objs are the chains, maps and sets in the order of text.
	objs []*obj
	// byName finds an obj.
	byName map[object]*obj
	// objects are the objs' names, sorted.
	objects []object
	// udp are the UDP frontend → backend pairs, sorted.
	udp []udpFlow
	// conflicts name frontends claimed by more than one service port; the
	// first in namespace/name order keeps them.
	conflicts []string
	// skipped names service ports that got no rules although they have a
	// cluster IP (an IPv6 address; a protocol other than TCP, UDP, SCTP).
	skipped []string
	// Counts for logs.
	services, frontends, endpoints int
}

// builder accumulates a ruleset.
type builder struct {
	p         params
	claimed   map[string]string // frontend key → service port that has it
	rs        *ruleset
	serviceIP []element // service-ips
	nodePort  []element // service-nodeports
	noEPIP    []element // no-endpoint-services
	noEPNode  []element // no-endpoint-nodeports
	epByIP    [][]element
	epByNode  [][]element
	pickN     map[string]map[int]bool // "cluster" | "external" | "nodeport" → N used
	hairpin   map[netip.Addr]bool
	sticky    []*obj // chains and sets of ClientIP-affinity service ports
}

// render builds the whole table for snap. It does no I/O: the same params
// and snapshot give the same text, byte for byte.
func render(p params, snap *svcview.Snapshot) *ruleset {
	b := &builder{
		p:       p,
		claimed: map[string]string{},
		rs:      &ruleset{},
		pickN:   map[string]map[int]bool{"cluster": {}, "external": {}, "nodeport": {}},
		hairpin: map[netip.Addr]bool{},
	}
	if snap != nil {
		for _, svc := range snap.Services {
			b.addService(snap, svc)
		}
	}
	return b.finish()
}

// frontend is one way of reaching a service port.
type frontend struct {
	external bool       // NodePort, load-balancer or external IP (not the ClusterIP)
	addr     netip.Addr // invalid for a NodePort
	port     int32
	key      string // in service-ips or service-nodeports
}

func (b *builder) addService(snap *svcview.Snapshot, svc *corev1.Service) {
	if svc.Spec.Type == corev1.ServiceTypeExternalName || svcview.IsHeadless(svc) {
		return
	}
	clusterIPs := svcview.ClusterIPs(svc)
	if len(clusterIPs) == 0 {
		return
	}
	b.rs.services++
	for _, sp := range svc.Spec.Ports {
		id := portID(svc, sp)
		proto, ok := protoName(sp.Protocol)
		if !ok {
			b.rs.skipped = append(b.rs.skipped, id+": protocol "+string(sp.Protocol))
			continue
		}
		var fronts []frontend
		for _, a := range clusterIPs {
			if a.Is4() {
				fronts = append(fronts, frontend{addr: a, port: sp.Port})
			}
		}
		if len(fronts) == 0 {
			b.rs.skipped = append(b.rs.skipped, id+": no IPv4 cluster IP")
			continue
		}
		var extIPs []netip.Addr
		for _, s := range svc.Spec.ExternalIPs {
			if a, err := netip.ParseAddr(s); err == nil {
				extIPs = append(extIPs, a.Unmap())
			}
		}
		if svc.Spec.Type == corev1.ServiceTypeLoadBalancer {
			extIPs = append(extIPs, svcview.LoadBalancerIPs(svc)...)
		}
		for _, a := range extIPs {
			if a.Is4() {
				fronts = append(fronts, frontend{external: true, addr: a, port: sp.Port})
			}
		}
		if (svc.Spec.Type == corev1.ServiceTypeNodePort || svc.Spec.Type == corev1.ServiceTypeLoadBalancer) && sp.NodePort != 0 {
			fronts = append(fronts, frontend{external: true, port: sp.NodePort})
		}
		// Claim the frontends first: one taken by an earlier service port
		// is left out here, whatever its endpoints.
		fronts = slices.DeleteFunc(fronts, func(f frontend) bool {
			return !b.claim(&f, proto, id)
		})
		for i := range fronts {
			fronts[i].key = frontKey(fronts[i], proto)
		}
		if len(fronts) == 0 {
			continue
		}
		b.rs.frontends += len(fronts)

		var eps []svcview.Backend
		for _, be := range snap.ReadyBackends(svc, sp) {
			if be.Addr.Is4() && be.Port > 0 && be.Port < 65536 {
				eps = append(eps, be)
			}
		}
		b.rs.endpoints += len(eps)
		if len(eps) == 0 {
			for _, f := range fronts {
				e := element{f.key, "goto reject-chain", id}
				if f.addr.IsValid() {
					b.noEPIP = append(b.noEPIP, e)
				} else {
					b.noEPNode = append(b.noEPNode, e)
				}
			}
			continue
		}
		for _, e := range eps {
			if b.p.PodCIDR.Contains(e.Addr) {
				b.hairpin[e.Addr] = true
			}
		}
		if proto == "udp" {
			for _, f := range fronts {
				for _, e := range eps {
					b.rs.udp = append(b.rs.udp, udpFlow{Frontend: f.addr, Port: uint16(f.port), Backend: e.Addr})
				}
			}
		}
		if svc.Spec.SessionAffinity == corev1.ServiceAffinityClientIP {
			b.addSticky(svc, id, proto, fronts, eps)
			continue
		}
		values := make([]string, len(eps))
		for i, e := range eps {
			values[i] = e.Addr.String() + " . " + strconv.Itoa(int(e.Port))
		}
		for _, f := range fronts {
			b.addShared(f, id, values)
		}
	}
}

// claim records that service port id has frontend f, unless another has.
func (b *builder) claim(f *frontend, proto, id string) bool {
	k := frontKey(*f, proto)
	if owner, taken := b.claimed[k]; taken {
		b.rs.conflicts = append(b.rs.conflicts, fmt.Sprintf("%s %s: already used by %s", k, id, owner))
		return false
	}
	b.claimed[k] = id
	return true
}

// addShared routes frontend f to its endpoints (values: "address . port")
// through the shared pick chains.
func (b *builder) addShared(f frontend, id string, values []string) {
	n := strconv.Itoa(len(values))
	if !f.addr.IsValid() {
		b.pickN["nodeport"][len(values)] = true
		b.nodePort = append(b.nodePort, element{f.key, "goto pick-nodeport-" + n, id})
		for i, v := range values {
			b.epByNode = grow(b.epByNode, i)
			b.epByNode[i] = append(b.epByNode[i], element{key: f.key, value: v})
		}
		return
	}
	kind := "cluster"
	if f.external {
		kind = "external"
	}
	b.pickN[kind][len(values)] = true
	b.serviceIP = append(b.serviceIP, element{f.key, "goto pick-" + kind + "-" + n, id})
	for i, v := range values {
		b.epByIP = grow(b.epByIP, i)
		b.epByIP[i] = append(b.epByIP[i], element{key: f.key, value: v})
	}
}

// addSticky gives a ClientIP-affinity service port its own chains.
func (b *builder) addSticky(svc *corev1.Service, id, proto string, fronts []frontend, eps []svcview.Backend) {
	timeout := int32(defaultAffinityTimeout)
	if c := svc.Spec.SessionAffinityConfig; c != nil && c.ClientIP != nil && c.ClientIP.TimeoutSeconds != nil && *c.ClientIP.TimeoutSeconds > 0 {
		timeout = *c.ClientIP.TimeoutSeconds
	}
	tag := fmt.Sprintf("%s/%d", id, timeout)
	svcChain := &obj{object: object{kindChain, "service-" + hashName(tag) + "-" + id}}
	extChain := &obj{object: object{kindChain, "external-" + hashName(tag) + "-" + id}}
	svcChain.rules = []string{fmt.Sprintf("ip saddr != %s jump mark-for-masquerade", b.p.ClusterCIDR)}
	var picks []string
	var sets, epChains []*obj
	for i, e := range eps {
		suffix := fmt.Sprintf("%s-%s__%s/%d", hashName(fmt.Sprintf("%s/%s/%d", tag, e.Addr, e.Port)), id, e.Addr, e.Port)
		set, chain := "affinity-"+suffix, "endpoint-"+suffix
		sets = append(sets, &obj{object: object{kindAffinity, set},
			head: fmt.Sprintf("type ipv4_addr; flags dynamic,timeout; timeout %ds;", timeout)})
		svcChain.rules = append(svcChain.rules, fmt.Sprintf("ip saddr @%s goto %s", set, chain))
		picks = append(picks, fmt.Sprintf("%d : goto %s", i, chain))
		epChains = append(epChains, &obj{object: object{kindChain, chain}, rules: []string{
			fmt.Sprintf("update @%s { ip saddr }", set),
			fmt.Sprintf("meta l4proto %s dnat ip to %s:%d", proto, e.Addr, e.Port),
		}})
	}
	svcChain.rules = append(svcChain.rules, pick(picks))
	b.sticky = append(b.sticky, svcChain)
	external := false
	for _, f := range fronts {
		v := "goto " + svcChain.name
		if f.external {
			v, external = "goto "+extChain.name, true
		}
		if f.addr.IsValid() {
			b.serviceIP = append(b.serviceIP, element{f.key, v, id})
		} else {
			b.nodePort = append(b.nodePort, element{f.key, v, id})
		}
	}
	if external {
		extChain.rules = []string{
			fmt.Sprintf("ip saddr != %s jump mark-for-masquerade", b.p.PodCIDR),
			"goto " + svcChain.name,
		}
		b.sticky = append(b.sticky, extChain)
	}
	b.sticky = append(b.sticky, epChains...)
	b.sticky = append(b.sticky, sets...)
}

// pick is the rule that jumps to one of the verdicts ("i : goto x") at
// random.
func pick(verdicts []string) string {
	if len(verdicts) == 1 {
		_, v, _ := strings.Cut(verdicts[0], " : ")
		return v
	}
	return "numgen random mod " + strconv.Itoa(len(verdicts)) + " vmap { " + strings.Join(verdicts, ", ") + " }"
}

func grow(s [][]element, i int) [][]element {
	for len(s) <= i {
		s = append(s, nil)
	}
	return s
}

// frontKey is a frontend's key in service-ips (address . proto . port) or
// service-nodeports (proto . port).
func frontKey(f frontend, proto string) string {
	if !f.addr.IsValid() {
		return proto + " . " + strconv.Itoa(int(f.port))
	}
	return f.addr.String() + " . " + proto + " . " + strconv.Itoa(int(f.port))
}

// protoName is the nft name of a service port's protocol (TCP when unset).
func protoName(p corev1.Protocol) (string, bool) {
	switch p {
	case "", corev1.ProtocolTCP:
		return "tcp", true
	case corev1.ProtocolUDP:
		return "udp", true
	case corev1.ProtocolSCTP:
		return "sctp", true
	}
	return "", false
}

// portID names a service port in chain names and logs:
// namespace/name/proto/port-name (or the port number if it has no name).
// Validated objects only hold [a-z0-9-] there; anything else becomes '_',
// so that one odd name cannot make the whole script unparsable.
func portID(svc *corev1.Service, sp corev1.ServicePort) string {
	proto, _ := protoName(sp.Protocol)
	if proto == "" {
		proto = string(sp.Protocol)
	}
	name := sp.Name
	if name == "" {
		name = strconv.Itoa(int(sp.Port))
	}
	return identifier(svc.Namespace) + "/" + identifier(svc.Name) + "/" + identifier(proto) + "/" + identifier(name)
}

// identifier keeps what nft accepts in a name, unquoted, and at most 63
// bytes (a DNS label's length).
func identifier(s string) string {
	b := []byte(s)
	if len(b) > 63 {
		b = b[:63]
	}
	for i, c := range b {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.') {
			b[i] = '_'
		}
	}
	return string(b)
}

// hashName is 8 base32 characters of a SHA-256, as kube-proxy names its
// chains: unique enough, and it keeps names short.
func hashName(s string) string {
	h := sha256.Sum256([]byte(s))
	return base32.StdEncoding.EncodeToString(h[:])[:8]
}

// finish lays the objects out and writes the text.
func (b *builder) finish() *ruleset {
	rs := b.rs
	add := func(o *obj) { rs.objs = append(rs.objs, o) }
	chain := func(section, name, head string, rules ...string) {
		add(&obj{object: object{kindChain, name}, section: section, head: head, rules: rules})
	}
	set := func(k kind, section, name, head, comment string, elems []element) {
		add(&obj{object: object{k, name}, section: section, head: head, comment: comment, elems: elems})
	}
	cluster, pods := b.p.ClusterCIDR.String(), b.p.PodCIDR.String()

	chain("Hooks.", "nat-prerouting", "type nat hook prerouting priority dstnat; policy accept;", "jump services")
	chain("", "nat-output", "type nat hook output priority -100; policy accept;", "jump services")
	chain("", "nat-postrouting", "type nat hook postrouting priority srcnat; policy accept;",
		"ip saddr . ip daddr @hairpin jump mark-for-masquerade",
		"jump masquerading")
	chain("", "filter-input", "type filter hook input priority -110; policy accept;", "ct state new jump no-endpoints")
	chain("", "filter-forward", "type filter hook forward priority -110; policy accept;",
		"ct state new ip daddr . meta l4proto . th dport vmap @no-endpoint-services")
	chain("", "filter-output", "type filter hook output priority -110; policy accept;", "ct state new jump no-endpoints")

	chain("Dispatch: one lookup by what the connection was sent to.", "services", "",
		"ip daddr . meta l4proto . th dport vmap @service-ips",
		"fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @service-nodeports")
	chain("", "no-endpoints", "",
		"ip daddr . meta l4proto . th dport vmap @no-endpoint-services",
		"fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @no-endpoint-nodeports")
	chain("", "reject-chain", "",
		"meta l4proto tcp reject with tcp reset",
		"reject with icmp type port-unreachable")
	chain("", "mark-for-masquerade", "", "meta mark set meta mark or "+masqMark)
	chain("", "masquerading", "",
		"meta mark & "+masqMark+" == 0 return",
		"meta mark set meta mark xor "+masqMark,
		"masquerade fully-random")

	section := "Shared pick chains: masquerade decision, then a random endpoint index."
	maxIP, maxNode := 0, 0
	for _, k := range []string{"cluster", "external", "nodeport"} {
		for _, n := range sortedKeys(b.pickN[k]) {
			masq := "ip saddr != " + pods + " jump mark-for-masquerade"
			if k == "cluster" {
				masq = "ip saddr != " + cluster + " jump mark-for-masquerade"
			}
			target := "dnat-"
			if k == "nodeport" {
				target = "dnat-nodeport-"
				maxNode = max(maxNode, n)
			} else {
				maxIP = max(maxIP, n)
			}
			picks := make([]string, n)
			for i := range picks {
				picks[i] = strconv.Itoa(i) + " : goto " + target + strconv.Itoa(i)
			}
			chain(section, "pick-"+k+"-"+strconv.Itoa(n), "", masq, pick(picks))
			section = ""
		}
	}
	for i := 0; i < maxIP; i++ {
		chain(section, "dnat-"+strconv.Itoa(i), "", "dnat ip to ip daddr . meta l4proto . th dport map @endpoints-"+strconv.Itoa(i))
		section = ""
	}
	for i := 0; i < maxNode; i++ {
		chain(section, "dnat-nodeport-"+strconv.Itoa(i), "", "dnat ip to meta l4proto . th dport map @nodeport-endpoints-"+strconv.Itoa(i))
		section = ""
	}

	section = "Service ports with ClientIP session affinity: a chain per endpoint."
	for _, o := range b.sticky {
		o.section, section = section, ""
		add(o)
	}

	set(kindMap, "Maps.", "service-ips", "type ipv4_addr . inet_proto . inet_service : verdict",
		"cluster, load-balancer and external IPs of services with ready endpoints", b.serviceIP)
	set(kindMap, "", "service-nodeports", "type inet_proto . inet_service : verdict",
		"NodePorts of services with ready endpoints, on any local address", b.nodePort)
	set(kindMap, "", "no-endpoint-services", "type ipv4_addr . inet_proto . inet_service : verdict",
		"frontends of services without a ready endpoint: rejected", b.noEPIP)
	set(kindMap, "", "no-endpoint-nodeports", "type inet_proto . inet_service : verdict",
		"NodePorts of services without a ready endpoint: rejected", b.noEPNode)
	for i := 0; i < maxIP; i++ {
		set(kindMap, "", "endpoints-"+strconv.Itoa(i), "type ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service",
			fmt.Sprintf("endpoint #%d of each frontend address", i), b.epByIP[i])
	}
	for i := 0; i < maxNode; i++ {
		set(kindMap, "", "nodeport-endpoints-"+strconv.Itoa(i), "type inet_proto . inet_service : ipv4_addr . inet_service",
			fmt.Sprintf("endpoint #%d of each NodePort", i), b.epByNode[i])
	}
	var hp []element
	for _, a := range sortedAddrs(b.hairpin) {
		hp = append(hp, element{key: a.String() + " . " + a.String()})
	}
	set(kindSet, "", "hairpin", "type ipv4_addr . ipv4_addr",
		"ready endpoints of this node's pod CIDR, as source . destination: a pod calling itself", hp)

	rs.text = writeTable(b.p.Table, rs.objs)
	rs.byName = make(map[object]*obj, len(rs.objs))
	for _, o := range rs.objs {
		rs.byName[o.object] = o
		rs.objects = append(rs.objects, o.object)
	}
	sortObjects(rs.objects)
	slices.SortFunc(rs.udp, compareUDP)
	rs.udp = slices.Compact(rs.udp)
	return rs
}

// writeTable is the text of the table made of objs.
func writeTable(table string, objs []*obj) string {
	var w strings.Builder
	size := 256
	for _, o := range objs {
		size += 64 + len(o.head) + len(o.comment)
		for _, r := range o.rules {
			size += len(r) + 3
		}
		for _, e := range o.elems {
			size += len(e.key) + len(e.value) + len(e.comment) + 12
		}
	}
	w.Grow(size)
	w.WriteString("table ip " + table + " {\n")
	w.WriteString("\tcomment \"flotilla service proxy: Service cluster IPs, NodePorts, load-balancer and external IPs\"\n")
	for _, o := range objs {
		if o.section != "" {
			w.WriteString("\n\t# " + o.section + "\n")
		}
		w.WriteString("\t" + o.kind.String() + " " + o.name + " {\n")
		if o.head != "" {
			w.WriteString("\t\t" + o.head + "\n")
		}
		if o.comment != "" {
			w.WriteString("\t\t# " + o.comment + "\n")
		}
		for _, r := range o.rules {
			w.WriteString("\t\t" + r + "\n")
		}
		if len(o.elems) > 0 {
			w.WriteString("\t\telements = {\n")
			for i, e := range o.elems {
				w.WriteString("\t\t\t")
				w.WriteString(e.key)
				if e.value != "" {
					w.WriteString(" : ")
					w.WriteString(e.value)
				}
				if i < len(o.elems)-1 {
					w.WriteByte(',')
				}
				if e.comment != "" {
					w.WriteString(" # ")
					w.WriteString(e.comment)
				}
				w.WriteByte('\n')
			}
			w.WriteString("\t\t}\n")
		}
		w.WriteString("\t}\n")
	}
	w.WriteString("}\n")
	return w.String()
}

func sortObjects(objs []object) {
	slices.SortFunc(objs, func(a, b object) int {
		if a.kind != b.kind {
			return int(a.kind) - int(b.kind)
		}
		return strings.Compare(a.name, b.name)
	})
}

func compareUDP(a, b udpFlow) int {
	if c := a.Frontend.Compare(b.Frontend); c != 0 {
		return c
	}
	if a.Port != b.Port {
		return int(a.Port) - int(b.Port)
	}
	return a.Backend.Compare(b.Backend)
}

func sortedKeys(m map[int]bool) []int {
	var out []int
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func sortedAddrs(m map[netip.Addr]bool) []netip.Addr {
	var out []netip.Addr
	for a := range m {
		out = append(out, a)
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}
