package svcproxy

import (
	"strconv"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/flotilla-dev/flotilla/netfabric/svcview"
)

// svc describes a Service and its one EndpointSlice for tests.
type svc struct {
	ns, name    string
	typ         corev1.ServiceType // default ClusterIP
	clusterIP   string             // "None": headless
	ports       []port
	lbIPs       []string
	externalIPs []string
	// affinity > 0: ClientIP with that timeout; < 0: ClientIP, default.
	affinity int32
	eps      []ep
}

type port struct {
	name     string
	proto    corev1.Protocol
	port     int32
	target   int32
	nodePort int32
}

type ep struct {
	ip       string
	notReady bool
}

func tcp(name string, p, target int32) port {
	return port{name: name, proto: corev1.ProtocolTCP, port: p, target: target}
}

func (s svc) objects() (*corev1.Service, *discoveryv1.EndpointSlice) {
	typ := s.typ
	if typ == "" {
		typ = corev1.ServiceTypeClusterIP
	}
	o := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: s.ns, Name: s.name},
		Spec: corev1.ServiceSpec{
			Type:        typ,
			ClusterIP:   s.clusterIP,
			ExternalIPs: s.externalIPs,
		},
	}
	if s.clusterIP != "" && s.clusterIP != corev1.ClusterIPNone {
		o.Spec.ClusterIPs = []string{s.clusterIP}
	}
	if typ == corev1.ServiceTypeExternalName {
		o.Spec.ExternalName = "example.org"
	}
	for _, ip := range s.lbIPs {
		o.Status.LoadBalancer.Ingress = append(o.Status.LoadBalancer.Ingress, corev1.LoadBalancerIngress{IP: ip})
	}
	if s.affinity != 0 {
		o.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
		if s.affinity > 0 {
			t := s.affinity
			o.Spec.SessionAffinityConfig = &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: &t}}
		}
	}
	sl := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Namespace: s.ns, Name: s.name + "-x",
			Labels: map[string]string{svcview.LabelServiceName: s.name}},
		AddressType: discoveryv1.AddressTypeIPv4,
	}
	for _, p := range s.ports {
		o.Spec.Ports = append(o.Spec.Ports, corev1.ServicePort{Name: p.name, Protocol: p.proto, Port: p.port,
			TargetPort: intstr.FromInt32(p.target), NodePort: p.nodePort})
		name, proto, target := p.name, p.proto, p.target
		sl.Ports = append(sl.Ports, discoveryv1.EndpointPort{Name: &name, Protocol: &proto, Port: &target})
	}
	for i, e := range s.eps {
		ready := !e.notReady
		sl.Endpoints = append(sl.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{e.ip},
			Conditions: discoveryv1.EndpointConditions{Ready: &ready},
			TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: s.ns, Name: s.name + "-" + strconv.Itoa(i)},
		})
	}
	return o, sl
}

func snapshot(svcs ...svc) *svcview.Snapshot {
	var services []*corev1.Service
	var slices []*discoveryv1.EndpointSlice
	for _, s := range svcs {
		o, sl := s.objects()
		services = append(services, o)
		slices = append(slices, sl)
	}
	return svcview.NewSnapshot(services, slices, nil, nil)
}
