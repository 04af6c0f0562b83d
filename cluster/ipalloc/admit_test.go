package ipalloc

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// svc builds a Service "ns/name" of type t (ClusterIP when ""), with
// clusterIP ip and ports "80", "80/UDP", "http=80", "80:30080" (name=,
// /protocol and :nodePort optional).
func svc(name string, t corev1.ServiceType, ip string, ports ...string) *corev1.Service {
	ns, n, ok := strings.Cut(name, "/")
	if !ok {
		ns, n = "default", name
	}
	s := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: n}, Spec: corev1.ServiceSpec{Type: t, ClusterIP: ip}}
	if t == "" {
		s.Spec.Type = corev1.ServiceTypeClusterIP
	}
	for _, p := range ports {
		var sp corev1.ServicePort
		if name, rest, ok := strings.Cut(p, "="); ok {
			sp.Name, p = name, rest
		}
		if rest, np, ok := strings.Cut(p, ":"); ok {
			fmt.Sscan(np, &sp.NodePort)
			p = rest
		}
		if rest, proto, ok := strings.Cut(p, "/"); ok {
			sp.Protocol, p = corev1.Protocol(proto), rest
		}
		fmt.Sscan(p, &sp.Port)
		s.Spec.Ports = append(s.Spec.Ports, sp)
	}
	return s
}

// got is a Service's allocation in a short form: "10.96.0.1 [30000 30001]".
func got(s *corev1.Service) string {
	var nps []int32
	for _, p := range s.Spec.Ports {
		nps = append(nps, p.NodePort)
	}
	out := s.Spec.ClusterIP
	if len(s.Spec.ClusterIPs) != 1 || s.Spec.ClusterIPs[0] != s.Spec.ClusterIP {
		if s.Spec.ClusterIP != "" || len(s.Spec.ClusterIPs) != 0 {
			out += fmt.Sprintf(" (clusterIPs %v)", s.Spec.ClusterIPs)
		}
	}
	if len(nps) > 0 {
		out += fmt.Sprint(" ", nps)
	}
	return out
}

func newAllocator(t *testing.T, cidr, ports string) *Allocator {
	t.Helper()
	cfg := Config{}
	if cidr != "" {
		cfg.ServiceCIDR = netip.MustParsePrefix(cidr)
	}
	if ports != "" {
		r, err := ParsePortRange(ports)
		if err != nil {
			t.Fatal(err)
		}
		cfg.NodePortRange = r
	}
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestAdmit(t *testing.T) {
	no := false
	lbNoPorts := svc("lb", corev1.ServiceTypeLoadBalancer, "", "80", "81:30500")
	lbNoPorts.Spec.AllocateLoadBalancerNodePorts = &no
	dual := svc("dual", "", "", "80")
	dual.Spec.ClusterIPs = []string{"10.96.0.9", "fd00::9"}
	onlyIPs := svc("ips", "", "", "80")
	onlyIPs.Spec.ClusterIPs = []string{"10.96.0.9"}
	mismatch := svc("mm", "", "10.96.0.8", "80")
	mismatch.Spec.ClusterIPs = []string{"10.96.0.9"}

	type upd struct{ new, stored *corev1.Service }
	for _, tc := range []struct {
		name     string
		cidr     string // default 10.96.0.0/16
		ports    string // default 30000-32767
		existing []*corev1.Service
		reqs     []upd
		want     []string // got() of each request's Service, in order, when admitted
		problems []string // Problem.String() of each, when refused
	}{
		{name: "creates get the lowest free addresses, in name order",
			reqs: []upd{{svc("b", "", "", "80"), nil}, {svc("a", "", "", "80"), nil}},
			want: []string{"10.96.0.2 [0]", "10.96.0.1 [0]"}},
		{name: "existing addresses are skipped, holes filled",
			existing: []*corev1.Service{svc("x", "", "10.96.0.1"), svc("y", "", "10.96.0.3"), svc("z", corev1.ServiceTypeExternalName, "")},
			reqs:     []upd{{svc("a", "", ""), nil}, {svc("b", "", ""), nil}},
			want:     []string{"10.96.0.2", "10.96.0.4"}},
		{name: "an update keeps the stored address",
			reqs: []upd{{svc("a", "", "", "80"), svc("a", "", "10.96.0.40", "80")}},
			want: []string{"10.96.0.40 [0]"}},
		{name: "a stored address outside a changed service CIDR is kept",
			reqs: []upd{{svc("a", "", ""), svc("a", "", "10.0.0.7")}},
			want: []string{"10.0.0.7"}},
		{name: "a requested address is honoured and never taken by an allocation",
			reqs: []upd{{svc("a", "", ""), nil}, {svc("b", "", "10.96.0.1"), nil}},
			want: []string{"10.96.0.2", "10.96.0.1"}},
		{name: "requesting the stored address is no change",
			reqs: []upd{{svc("a", "", "10.96.0.40"), svc("a", "", "10.96.0.40")}},
			want: []string{"10.96.0.40"}},
		{name: "clusterIPs alone is a request",
			reqs: []upd{{onlyIPs, nil}},
			want: []string{"10.96.0.9 [0]"}},
		{name: "a requested address of another service is refused, naming it",
			existing: []*corev1.Service{svc("a", "", "10.96.0.7")},
			reqs:     []upd{{svc("web/b", "", "10.96.0.7"), nil}},
			problems: []string{"b.yaml:1:0: spec.clusterIP: 10.96.0.7 is already the address of service default/a"}},
		{name: "two services of one commit asking for one address: the second by name is refused",
			reqs:     []upd{{svc("b", "", "10.96.0.7"), nil}, {svc("a", "", "10.96.0.7"), nil}},
			problems: []string{"b.yaml:1:0: spec.clusterIP: 10.96.0.7 is already the address of service default/a"}},
		{name: "an address kept by an update is not free for a request",
			reqs:     []upd{{svc("b", "", "10.96.0.5"), nil}, {svc("a", "", ""), svc("a", "", "10.96.0.5")}},
			problems: []string{"b.yaml:1:0: spec.clusterIP: 10.96.0.5 is already the address of service default/a"}},
		{name: "outside the CIDR", reqs: []upd{{svc("a", "", "10.1.2.3"), nil}},
			problems: []string{"a.yaml:1:0: spec.clusterIP: 10.1.2.3 is not in the service CIDR 10.96.0.0/16 (--service-cidr)"}},
		{name: "network address", reqs: []upd{{svc("a", "", "10.96.0.0"), nil}},
			problems: []string{"a.yaml:1:0: spec.clusterIP: 10.96.0.0 is the network address of the service CIDR 10.96.0.0/16"}},
		{name: "broadcast address", cidr: "10.96.0.0/24", reqs: []upd{{svc("a", "", "10.96.0.255"), nil}},
			problems: []string{"a.yaml:1:0: spec.clusterIP: 10.96.0.255 is the broadcast address of the service CIDR 10.96.0.0/24"}},
		{name: "not an address", reqs: []upd{{svc("a", "", "ten"), nil}},
			problems: []string{`a.yaml:1:0: spec.clusterIP: "ten" is not an IP address`}},
		{name: "dual-stack", reqs: []upd{{dual, nil}},
			problems: []string{"dual.yaml:1:0: spec.clusterIPs: one cluster IP per service is supported (no dual-stack), got 2"}},
		{name: "clusterIPs disagrees", reqs: []upd{{mismatch, nil}},
			problems: []string{`mm.yaml:1:0: spec.clusterIPs[0]: "10.96.0.9" must equal spec.clusterIP "10.96.0.8"`}},
		{name: "a cluster IP is immutable",
			reqs:     []upd{{svc("a", "", "10.96.0.9"), svc("a", "", "10.96.0.5")}},
			problems: []string{"a.yaml:1:0: spec.clusterIP: may not change from 10.96.0.5 to 10.96.0.9: a service's cluster IP is immutable"}},
		{name: "headless", reqs: []upd{{svc("h", "", "None", "80"), nil}, {svc("h2", "", "None"), svc("h2", "", "None")}},
			want: []string{"None [0]", "None"}},
		{name: "headless to an address is refused",
			reqs:     []upd{{svc("h", "", ""), svc("h", "", "None")}},
			problems: []string{"h.yaml:1:0: spec.clusterIP: may not change from None (headless) to an allocated address (spec.clusterIP was removed)"}},
		{name: "an address to headless is refused",
			reqs:     []upd{{svc("h", "", "None"), svc("h", "", "10.96.0.5")}},
			problems: []string{"h.yaml:1:0: spec.clusterIP: may not change from 10.96.0.5 to None (headless)"}},
		{name: "a headless NodePort is refused",
			reqs:     []upd{{svc("h", corev1.ServiceTypeNodePort, "None", "80"), nil}},
			problems: []string{"h.yaml:1:0: spec.clusterIP: a headless service (clusterIP: None) cannot be of type NodePort"}},
		{name: "ExternalName has no address, and one that becomes ExternalName frees its own",
			reqs: []upd{{svc("a", corev1.ServiceTypeExternalName, "", "80"), svc("a", "", "10.96.0.1", "80")}, {svc("b", "", ""), nil}},
			want: []string{" [0]", "10.96.0.1"}},
		{name: "ExternalName becoming ClusterIP gets an address",
			reqs: []upd{{svc("a", "", ""), svc("a", corev1.ServiceTypeExternalName, "")}},
			want: []string{"10.96.0.1"}},
		{name: "ExternalName with a cluster IP is refused",
			reqs:     []upd{{svc("a", corev1.ServiceTypeExternalName, "10.96.0.3"), nil}},
			problems: []string{`a.yaml:1:0: spec.clusterIP: an ExternalName service has no cluster IP: remove spec.clusterIP ("10.96.0.3")`}},
		{name: "NodePort gets node ports from the range, lowest free first",
			existing: []*corev1.Service{svc("x", corev1.ServiceTypeNodePort, "10.96.0.1", "80:30000"), svc("y", "", "10.96.0.2", "80:30001")},
			reqs:     []upd{{svc("a", corev1.ServiceTypeNodePort, "", "80", "443"), nil}},
			want:     []string{"10.96.0.3 [30001 30002]"}},
		{name: "a type change keeps the address; LoadBalancer gets node ports",
			reqs: []upd{{svc("a", corev1.ServiceTypeLoadBalancer, "", "80"), svc("a", "", "10.96.0.9", "80")}},
			want: []string{"10.96.0.9 [30000]"}},
		{name: "node ports are kept by port name, else by port and protocol",
			reqs: []upd{{svc("a", corev1.ServiceTypeNodePort, "", "https=8443", "web=8080", "53/UDP", "53"),
				svc("a", corev1.ServiceTypeNodePort, "10.96.0.1", "web=80:30100", "https=443:30200", "53/UDP:30300", "53:30301")}},
			want: []string{"10.96.0.1 [30200 30100 30300 30301]"}},
		{name: "a stored node port another port now asks for is not kept twice",
			reqs: []upd{{svc("a", corev1.ServiceTypeNodePort, "", "web=80", "api=81:30100"),
				svc("a", corev1.ServiceTypeNodePort, "10.96.0.1", "web=80:30100")}},
			want: []string{"10.96.0.1 [30000 30100]"}},
		{name: "a requested node port is honoured and never taken by an allocation",
			reqs: []upd{{svc("a", corev1.ServiceTypeNodePort, "", "80"), nil}, {svc("b", corev1.ServiceTypeNodePort, "", "80:30000"), nil}},
			want: []string{"10.96.0.1 [30001]", "10.96.0.2 [30000]"}},
		{name: "one node port for TCP and UDP of one service",
			reqs: []upd{{svc("dns", corev1.ServiceTypeNodePort, "", "53/UDP:30053", "53/TCP:30053"), nil}},
			want: []string{"10.96.0.1 [30053 30053]"}},
		{name: "node port of another service",
			existing: []*corev1.Service{svc("web", corev1.ServiceTypeNodePort, "10.96.0.1", "80:30080")},
			reqs:     []upd{{svc("b", corev1.ServiceTypeNodePort, "", "81", "80:30080"), nil}},
			problems: []string{"b.yaml:1:0: spec.ports[1].nodePort: nodePort 30080 is already used by service default/web"}},
		{name: "node port out of range",
			reqs:     []upd{{svc("b", corev1.ServiceTypeNodePort, "", "80:8080"), nil}},
			problems: []string{"b.yaml:1:0: spec.ports[0].nodePort: nodePort 8080 is outside the node port range 30000-32767 (--service-node-port-range)"}},
		{name: "a stored node port outside a changed range is kept",
			reqs: []upd{{svc("a", corev1.ServiceTypeNodePort, "", "80:20000"), svc("a", corev1.ServiceTypeNodePort, "10.96.0.1", "80:20000")}},
			want: []string{"10.96.0.1 [20000]"}},
		{name: "ClusterIP clears node ports; NodePort→ClusterIP frees them",
			reqs: []upd{{svc("a", "", "", "80"), svc("a", corev1.ServiceTypeNodePort, "10.96.0.1", "80:30000")}, {svc("b", corev1.ServiceTypeNodePort, "", "80"), nil}},
			want: []string{"10.96.0.1 [0]", "10.96.0.2 [30000]"}},
		{name: "LoadBalancer without node port allocation gets only the asked ones",
			reqs: []upd{{lbNoPorts, nil}},
			want: []string{"10.96.0.1 [0 30500]"}},
		{name: "service CIDR exhausted", cidr: "10.96.0.0/30",
			reqs:     []upd{{svc("a", "", ""), nil}, {svc("b", "", ""), nil}, {svc("c", "", ""), nil}},
			problems: []string{"c.yaml:1:0: spec.clusterIP: no free address left in the service CIDR 10.96.0.0/30 (--service-cidr)"}},
		{name: "node port range exhausted", ports: "30000-30001",
			reqs:     []upd{{svc("a", corev1.ServiceTypeNodePort, "", "80", "81", "82"), nil}},
			problems: []string{"a.yaml:1:0: spec.ports[2].nodePort: no free node port left in the range 30000-30001 (--service-node-port-range)"}},
		{name: "IPv6", cidr: "fd00:96::/108",
			reqs: []upd{{svc("a", "", ""), nil}, {svc("b", "", "fd00:96::20"), nil}},
			want: []string{"fd00:96::1", "fd00:96::20"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := newAllocator(t, tc.cidr, tc.ports)
			var reqs []Request
			for _, u := range tc.reqs {
				reqs = append(reqs, Request{Service: u.new, Stored: u.stored, File: u.new.Name + ".yaml", Line: 1})
			}
			probs := a.Admit(tc.existing, reqs)
			if len(probs) != len(tc.problems) {
				t.Fatalf("problems:\n%v\nwant:\n%s", probs, strings.Join(tc.problems, "\n"))
			}
			for i, want := range tc.problems {
				if p := probs[i].String(); !strings.HasPrefix(p, want) {
					t.Errorf("problem %d:\ngot  %s\nwant %s...", i, p, want)
				}
			}
			if len(tc.problems) > 0 {
				return
			}
			for i, want := range tc.want {
				if g := got(reqs[i].Service); g != want {
					t.Errorf("%s: got %q, want %q", reqs[i].Service.Name, g, want)
				}
			}
		})
	}
}

// TestAdmitIsDeterministic: the order of the requests does not matter.
func TestAdmitIsDeterministic(t *testing.T) {
	a := newAllocator(t, "", "")
	build := func() []Request {
		var reqs []Request
		for i := range 40 {
			t := corev1.ServiceType("")
			ip := ""
			ports := []string{"80"}
			switch i % 4 {
			case 1:
				t = corev1.ServiceTypeNodePort
			case 2:
				ip = fmt.Sprintf("10.96.0.%d", 60-i)
			case 3:
				t, ports = corev1.ServiceTypeNodePort, []string{fmt.Sprintf("80:%d", 30040-i)}
			}
			reqs = append(reqs, Request{Service: svc(fmt.Sprintf("s%02d", i), t, ip, ports...)})
		}
		return reqs
	}
	want := map[string]string{}
	reqs := build()
	if probs := a.Admit(nil, reqs); len(probs) > 0 {
		t.Fatal(probs)
	}
	for _, r := range reqs {
		want[r.Service.Name] = got(r.Service)
	}
	for range 10 {
		reqs := build()
		rand.Shuffle(len(reqs), func(i, j int) { reqs[i], reqs[j] = reqs[j], reqs[i] })
		if probs := a.Admit(nil, reqs); len(probs) > 0 {
			t.Fatal(probs)
		}
		gotMap := map[string]string{}
		for _, r := range reqs {
			gotMap[r.Service.Name] = got(r.Service)
		}
		if !reflect.DeepEqual(gotMap, want) {
			t.Fatalf("shuffled requests gave\n%v\nwant\n%v", gotMap, want)
		}
	}
}

func TestLastAddr(t *testing.T) {
	for in, want := range map[string]string{
		"10.96.0.0/16": "10.96.255.255", "10.96.0.0/20": "10.96.15.255", "10.0.0.0/8": "10.255.255.255",
		"192.168.1.4/30": "192.168.1.7", "10.1.2.3/32": "10.1.2.3", "fd00::/120": "fd00::ff",
	} {
		if got := lastAddr(netip.MustParsePrefix(in)).String(); got != want {
			t.Errorf("lastAddr(%s) = %s, want %s", in, got, want)
		}
	}
}
