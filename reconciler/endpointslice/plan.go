// Package endpointslice is the EndpointSlice controller (Kubernetes'
// Endpoints controller, as discovery.k8s.io/v1 slices): for every Service
// with a selector it publishes the serving addresses of the matching pods,
// grouped by their resolved port set, in slices named
// <service>-<port-set hash>[-<n>] that the service proxy and the cluster DNS
// read. Plan is the pure planner; Controller is the edge, which re-lists the
// service's slices from the store before it writes, and writes only what
// changed, so an idle cluster writes nothing.
package endpointslice

import (
	"encoding/json"
	"fmt"
	"hash/fnv"
	"net/netip"
	"sort"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/rand"

	"github.com/flotilla-dev/flotilla/schema"
)

// Labels and limits of the slices this controller writes.
const (
	// LabelServiceName names a slice's Service ("kubernetes.io/service-name").
	LabelServiceName = discoveryv1.LabelServiceName
	// LabelManagedBy names the writer of a slice
	// ("endpointslice.kubernetes.io/managed-by"); slices with another value
	// are never touched.
	LabelManagedBy = discoveryv1.LabelManagedBy
	// ManagedBy is this controller's LabelManagedBy value.
	ManagedBy = "endpointslice.flotilla.dev"
	// MaxEndpointsPerSlice is how many endpoints one slice holds at most (as
	// Kubernetes' --max-endpoints-per-slice default).
	MaxEndpointsPerSlice = 100
	// maxNameLength keeps slice names DNS labels.
	maxNameLength = 63
)

// Actions is what it takes to make a Service's slices match its pods.
// Callers write Create, then Update, then Delete (so that a port-set change
// never leaves the service without endpoints in between).
type Actions struct {
	// Create are new slices.
	Create []*discoveryv1.EndpointSlice
	// Update are existing slices with new contents, carrying the stored
	// resourceVersion (an optimistic-concurrency update).
	Update []*discoveryv1.EndpointSlice
	// Delete are managed slices that are no longer wanted.
	Delete []*discoveryv1.EndpointSlice
}

// Empty reports whether there is nothing to write.
func (a Actions) Empty() bool {
	return len(a.Create) == 0 && len(a.Update) == 0 && len(a.Delete) == 0
}

// Plan compares the slices svc wants, given the pods of its namespace
// (others and non-matching ones are ignored), with existing slices (any;
// only those managed by this controller for svc are considered). A Service
// without a selector, an ExternalName Service, or a stub standing for a
// deleted Service (name and namespace only) wants no slices: its managed
// slices are deleted. It does no I/O and does not modify its arguments.
func Plan(svc *corev1.Service, pods []*corev1.Pod, existing []*discoveryv1.EndpointSlice) Actions {
	var a Actions
	want := Desired(svc, pods)
	have := map[string]*discoveryv1.EndpointSlice{}
	for _, s := range existing {
		if managedFor(s, svc) {
			have[s.Name] = s
		}
	}
	for _, d := range want {
		old, ok := have[d.Name]
		if !ok {
			a.Create = append(a.Create, d)
			continue
		}
		if old.AddressType != d.AddressType {
			// addressType is immutable: delete it now (it stays in have),
			// create it again on the next pass, which the deletion's event
			// brings about.
			continue
		}
		delete(have, d.Name)
		if !sameContent(old, d) {
			u := old.DeepCopy()
			u.Labels = mergeLabels(old.Labels, d.Labels)
			u.OwnerReferences = d.OwnerReferences
			u.AddressType, u.Endpoints, u.Ports = d.AddressType, d.Endpoints, d.Ports
			a.Update = append(a.Update, u)
		}
	}
	for _, s := range have {
		a.Delete = append(a.Delete, s)
	}
	sort.Slice(a.Delete, func(i, j int) bool { return a.Delete[i].Name < a.Delete[j].Name })
	return a
}

// managedFor reports whether s is a slice this controller wrote for svc.
func managedFor(s *discoveryv1.EndpointSlice, svc *corev1.Service) bool {
	return s.Namespace == svc.Namespace && s.Labels[LabelManagedBy] == ManagedBy &&
		s.Labels[LabelServiceName] == svc.Name
}

// Wanted reports whether svc gets slices from this controller: it has a
// selector and is not an ExternalName Service.
func Wanted(svc *corev1.Service) bool {
	return len(svc.Spec.Selector) > 0 && svc.Spec.Type != corev1.ServiceTypeExternalName
}

// Selects reports whether svc's selector matches pod's labels (same
// namespace, svc Wanted).
func Selects(svc *corev1.Service, pod *corev1.Pod) bool {
	return Wanted(svc) && svc.Namespace == pod.Namespace &&
		labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(pod.Labels))
}

// Desired returns the slices svc wants, sorted by name: one group per
// distinct resolved port set, split into slices of at most
// MaxEndpointsPerSlice endpoints, each sorted by pod name. With no endpoint
// at all it is one empty slice (Kubernetes keeps one, so that readers can
// tell "no endpoints" from "not yet reconciled") whose ports are those that
// do not depend on a pod (numeric or unset targetPorts).
func Desired(svc *corev1.Service, pods []*corev1.Pod) []*discoveryv1.EndpointSlice {
	if !Wanted(svc) {
		return nil
	}
	type group struct {
		ports     []discoveryv1.EndpointPort
		endpoints []discoveryv1.Endpoint
	}
	groups := map[string]*group{}
	for _, p := range pods {
		if !Selects(svc, p) || !serving(p) {
			continue
		}
		ip := podIPv4(p)
		if ip == "" {
			continue
		}
		ports := PortsFor(svc, p)
		h := portsHash(ports)
		g := groups[h]
		if g == nil {
			g = &group{ports: ports}
			groups[h] = g
		}
		g.endpoints = append(g.endpoints, endpointFor(svc, p, ip))
	}
	if len(groups) == 0 {
		ports := PortsFor(svc, nil)
		groups[portsHash(ports)] = &group{ports: ports}
	}
	var out []*discoveryv1.EndpointSlice
	for h, g := range groups {
		sort.Slice(g.endpoints, func(i, j int) bool {
			return g.endpoints[i].TargetRef.Name < g.endpoints[j].TargetRef.Name
		})
		for i := 0; i == 0 || i*MaxEndpointsPerSlice < len(g.endpoints); i++ {
			eps := g.endpoints[i*MaxEndpointsPerSlice : min((i+1)*MaxEndpointsPerSlice, len(g.endpoints))]
			out = append(out, newSlice(svc, SliceName(svc.Name, h, i), g.ports, eps))
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// serving reports whether p may be an endpoint at all: not terminating,
// not finished.
func serving(p *corev1.Pod) bool {
	return p.DeletionTimestamp == nil && p.Status.Phase != corev1.PodSucceeded && p.Status.Phase != corev1.PodFailed
}

// podIPv4 is the pod's first IPv4 address, "" if none (slices are IPv4).
func podIPv4(p *corev1.Pod) string {
	ips := []string{p.Status.PodIP}
	for _, ip := range p.Status.PodIPs {
		ips = append(ips, ip.IP)
	}
	for _, s := range ips {
		if a, err := netip.ParseAddr(s); err == nil && a.Is4() {
			return a.String()
		}
	}
	return ""
}

func endpointFor(svc *corev1.Service, p *corev1.Pod, ip string) discoveryv1.Endpoint {
	podReady := schema.PodReady(p)
	ready := podReady || svc.Spec.PublishNotReadyAddresses
	no := false
	ep := discoveryv1.Endpoint{
		Addresses: []string{ip},
		// serving is the pod's readiness, as in Kubernetes: it differs from
		// ready only under publishNotReadyAddresses.
		Conditions: discoveryv1.EndpointConditions{Ready: &ready, Serving: &podReady, Terminating: &no},
		TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: p.Namespace, Name: p.Name, UID: p.UID},
	}
	if n := p.Spec.NodeName; n != "" {
		ep.NodeName = &n
	}
	if h := p.Spec.Hostname; h != "" && p.Spec.Subdomain == svc.Name {
		ep.Hostname = &h
	}
	return ep
}

// PortsFor resolves svc's ports against pod (nil: a pod with no container
// ports), in the service's order. A named targetPort is looked up in the
// pod's containers by name and protocol; a port that does not resolve is
// left out. An unset targetPort is the service port.
func PortsFor(svc *corev1.Service, pod *corev1.Pod) []discoveryv1.EndpointPort {
	out := []discoveryv1.EndpointPort{}
	for _, sp := range svc.Spec.Ports {
		proto := protocolOf(sp.Protocol)
		var num int32
		switch {
		case sp.TargetPort.Type == intstr.String:
			var ok bool
			if num, ok = findPort(pod, sp.TargetPort.StrVal, proto); !ok {
				continue
			}
		case sp.TargetPort.IntVal != 0:
			num = sp.TargetPort.IntVal
		default:
			num = sp.Port
		}
		name := sp.Name
		out = append(out, discoveryv1.EndpointPort{Name: &name, Protocol: &proto, Port: &num, AppProtocol: copyPtr(sp.AppProtocol)})
	}
	return out
}

func findPort(pod *corev1.Pod, name string, proto corev1.Protocol) (int32, bool) {
	if pod == nil {
		return 0, false
	}
	for _, c := range pod.Spec.Containers {
		for _, cp := range c.Ports {
			if cp.Name == name && protocolOf(cp.Protocol) == proto {
				return cp.ContainerPort, true
			}
		}
	}
	return 0, false
}

func protocolOf(p corev1.Protocol) corev1.Protocol {
	if p == "" {
		return corev1.ProtocolTCP
	}
	return p
}

func copyPtr[T any](p *T) *T {
	if p == nil {
		return nil
	}
	v := *p
	return &v
}

// portsHash names a port set: FNV-32a of its JSON, safe-encoded like a
// pod-template-hash.
func portsHash(ports []discoveryv1.EndpointPort) string {
	b, err := json.Marshal(ports)
	if err != nil {
		panic(fmt.Sprintf("endpointslice: encoding ports: %v", err)) // cannot happen for API types
	}
	h := fnv.New32a()
	h.Write(b)
	return rand.SafeEncodeString(strconv.FormatUint(uint64(h.Sum32()), 10))
}

// SliceName is the name of the i-th (from 0) slice of a port set with hash
// h: "<service>-<h>", then "<service>-<h>-2", "-3", ...; the service name
// is shortened so that the whole stays within 63 characters.
func SliceName(service, h string, i int) string {
	suffix := "-" + h
	if i > 0 {
		suffix += "-" + strconv.Itoa(i+1)
	}
	if len(service)+len(suffix) > maxNameLength {
		service = service[:maxNameLength-len(suffix)]
	}
	return service + suffix
}

func newSlice(svc *corev1.Service, name string, ports []discoveryv1.EndpointPort, eps []discoveryv1.Endpoint) *discoveryv1.EndpointSlice {
	yes := true
	s := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Name:      name,
			Namespace: svc.Namespace,
			Labels:    map[string]string{LabelServiceName: svc.Name, LabelManagedBy: ManagedBy},
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion: "v1", Kind: "Service", Name: svc.Name, UID: svc.UID,
				Controller: &yes, BlockOwnerDeletion: &yes,
			}},
		},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   append([]discoveryv1.Endpoint{}, eps...),
		Ports:       ports,
	}
	s.APIVersion, s.Kind = "discovery.k8s.io/v1", "EndpointSlice"
	return s
}

// sameContent compares what this controller sets (labels it owns,
// ownerReferences, addressType, endpoints, ports), semantically: empty and
// nil are equal, resourceVersion and other metadata are ignored.
func sameContent(have, want *discoveryv1.EndpointSlice) bool {
	for k, v := range want.Labels {
		if have.Labels[k] != v {
			return false
		}
	}
	return have.AddressType == want.AddressType &&
		apiequality.Semantic.DeepEqual(have.OwnerReferences, want.OwnerReferences) &&
		apiequality.Semantic.DeepEqual(have.Endpoints, want.Endpoints) &&
		apiequality.Semantic.DeepEqual(have.Ports, want.Ports)
}

func mergeLabels(have, want map[string]string) map[string]string {
	out := make(map[string]string, len(have)+len(want))
	for k, v := range have {
		out[k] = v
	}
	for k, v := range want {
		out[k] = v
	}
	return out
}
