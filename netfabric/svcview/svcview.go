// Package svcview is the node's read-only view of the cluster's Services,
// their EndpointSlices, Ingresses and Secrets: one immutable Snapshot that
// the service proxy (nftables), the cluster DNS and the ingress proxy are
// each handed whole, and the one place that turns a service port into its
// backends, so all three agree on what "a ready endpoint" is.
package svcview

import (
	"net/netip"
	"sort"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
)

// LabelServiceName is the EndpointSlice label naming the slice's Service.
const LabelServiceName = discoveryv1.LabelServiceName

// Snapshot is one consistent view. Its slices and the objects they point to
// are never modified after NewSnapshot: readers on any goroutine may keep
// and read them; a change makes a new Snapshot.
type Snapshot struct {
	Services  []*corev1.Service
	Slices    []*discoveryv1.EndpointSlice
	Ingresses []*networkingv1.Ingress
	Secrets   []*corev1.Secret // Watch keeps only kubernetes.io/tls ones (for ingress)

	services map[nsName]*corev1.Service
	slices   map[nsName][]*discoveryv1.EndpointSlice // by service
	secrets  map[nsName]*corev1.Secret
}

type nsName struct{ Namespace, Name string }

// NewSnapshot indexes the given objects (which it does not copy: the caller
// hands them over). Services are sorted by namespace and name.
func NewSnapshot(services []*corev1.Service, slices []*discoveryv1.EndpointSlice, ingresses []*networkingv1.Ingress, secrets []*corev1.Secret) *Snapshot {
	s := &Snapshot{
		Services: services, Slices: slices, Ingresses: ingresses, Secrets: secrets,
		services: make(map[nsName]*corev1.Service, len(services)),
		slices:   make(map[nsName][]*discoveryv1.EndpointSlice, len(services)),
		secrets:  make(map[nsName]*corev1.Secret, len(secrets)),
	}
	sort.Slice(s.Services, func(i, j int) bool {
		a, b := s.Services[i], s.Services[j]
		if a.Namespace != b.Namespace {
			return a.Namespace < b.Namespace
		}
		return a.Name < b.Name
	})
	for _, svc := range services {
		s.services[nsName{svc.Namespace, svc.Name}] = svc
	}
	for _, sl := range slices {
		name := sl.Labels[LabelServiceName]
		if name == "" {
			continue
		}
		k := nsName{sl.Namespace, name}
		s.slices[k] = append(s.slices[k], sl)
	}
	for _, sec := range secrets {
		s.secrets[nsName{sec.Namespace, sec.Name}] = sec
	}
	return s
}

// Service returns the named Service, or nil.
func (s *Snapshot) Service(namespace, name string) *corev1.Service {
	if s == nil {
		return nil
	}
	return s.services[nsName{namespace, name}]
}

// Secret returns the named Secret, or nil.
func (s *Snapshot) Secret(namespace, name string) *corev1.Secret {
	if s == nil {
		return nil
	}
	return s.secrets[nsName{namespace, name}]
}

// SlicesOf returns the EndpointSlices of a Service (by its
// kubernetes.io/service-name label).
func (s *Snapshot) SlicesOf(namespace, service string) []*discoveryv1.EndpointSlice {
	if s == nil {
		return nil
	}
	return s.slices[nsName{namespace, service}]
}

// EndpointReady is an endpoint's ready condition; an unset condition
// counts as ready, as in Kubernetes.
func EndpointReady(ep discoveryv1.Endpoint) bool {
	return ep.Conditions.Ready == nil || *ep.Conditions.Ready
}

// Backend is one endpoint address of one service port.
type Backend struct {
	Addr netip.Addr
	// Port is the endpoint's (target) port number.
	Port int32
	// Hostname is the endpoint's hostname (a pod with spec.hostname and a
	// matching spec.subdomain), "" if none.
	Hostname string
	// NodeName is where the endpoint runs, "" if unknown.
	NodeName string
	// Ready is the endpoint's ready condition (an unset condition counts as
	// ready, as in Kubernetes).
	Ready bool
	// TargetPod names the pod ("namespace/name"), "" if none.
	TargetPod string
}

// Backends returns the endpoints of port sp of svc, ready or not, sorted by
// address and port without duplicates. A slice port matches by name (and
// protocol, TCP when unset).
func (s *Snapshot) Backends(svc *corev1.Service, sp corev1.ServicePort) []Backend {
	if svc == nil {
		return nil
	}
	proto := sp.Protocol
	if proto == "" {
		proto = corev1.ProtocolTCP
	}
	seen := map[netip.AddrPort]bool{}
	var out []Backend
	for _, sl := range s.SlicesOf(svc.Namespace, svc.Name) {
		if sl.AddressType != discoveryv1.AddressTypeIPv4 && sl.AddressType != discoveryv1.AddressTypeIPv6 {
			continue
		}
		for _, p := range sl.Ports {
			pname := ""
			if p.Name != nil {
				pname = *p.Name
			}
			pproto := corev1.ProtocolTCP
			if p.Protocol != nil {
				pproto = *p.Protocol
			}
			if pname != sp.Name || pproto != proto || p.Port == nil {
				continue
			}
			for _, ep := range sl.Endpoints {
				b := Backend{Port: *p.Port, Ready: EndpointReady(ep)}
				if ep.Hostname != nil {
					b.Hostname = *ep.Hostname
				}
				if ep.NodeName != nil {
					b.NodeName = *ep.NodeName
				}
				if ep.TargetRef != nil && ep.TargetRef.Kind == "Pod" {
					b.TargetPod = ep.TargetRef.Namespace + "/" + ep.TargetRef.Name
				}
				for _, a := range ep.Addresses {
					addr, err := netip.ParseAddr(a)
					if err != nil {
						continue
					}
					b.Addr = addr.Unmap()
					ap := netip.AddrPortFrom(b.Addr, uint16(b.Port))
					if seen[ap] {
						continue
					}
					seen[ap] = true
					out = append(out, b)
				}
			}
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if c := out[i].Addr.Compare(out[j].Addr); c != 0 {
			return c < 0
		}
		return out[i].Port < out[j].Port
	})
	return out
}

// ReadyBackends is Backends without the endpoints that are not ready.
func (s *Snapshot) ReadyBackends(svc *corev1.Service, sp corev1.ServicePort) []Backend {
	all := s.Backends(svc, sp)
	out := all[:0:0]
	for _, b := range all {
		if b.Ready {
			out = append(out, b)
		}
	}
	return out
}

// ClusterIPs returns the service's virtual IPs (none for headless and
// ExternalName services).
func ClusterIPs(svc *corev1.Service) []netip.Addr {
	if svc.Spec.Type == corev1.ServiceTypeExternalName {
		return nil
	}
	ips := svc.Spec.ClusterIPs
	if len(ips) == 0 && svc.Spec.ClusterIP != "" {
		ips = []string{svc.Spec.ClusterIP}
	}
	var out []netip.Addr
	for _, ip := range ips {
		if a, err := netip.ParseAddr(ip); err == nil {
			out = append(out, a.Unmap())
		}
	}
	return out
}

// IsHeadless reports a service with clusterIP: None.
func IsHeadless(svc *corev1.Service) bool {
	return svc.Spec.ClusterIP == corev1.ClusterIPNone
}

// LoadBalancerIPs returns the addresses in status.loadBalancer.ingress.
func LoadBalancerIPs(svc *corev1.Service) []netip.Addr {
	var out []netip.Addr
	for _, in := range svc.Status.LoadBalancer.Ingress {
		if a, err := netip.ParseAddr(in.IP); err == nil {
			out = append(out, a.Unmap())
		}
	}
	return out
}
