// Package loadbalancer gives every Service of type LoadBalancer an address
// from the configured pool (--lb-pool), published in
// status.loadBalancer.ingress[0].ip, where the node agents' service proxy
// and kubectl read it. A Service keeps its address while the address is in
// the pool; spec.loadBalancerIP asks for a particular one; the address is
// released when the Service is deleted or stops being a LoadBalancer.
// Assign is the pure rule; Controller is the edge over the watch cache and
// the store.
package loadbalancer

import (
	"fmt"
	"net/netip"
	"reflect"

	corev1 "k8s.io/api/core/v1"

	"github.com/flotilla-dev/flotilla/cluster/ipalloc"
)

// Decision is the load balancer address a Service should have.
type Decision struct {
	// IP is the address to publish; the zero Addr for none (the status is
	// cleared).
	IP netip.Addr
	// Pending says why a LoadBalancer Service gets no address ("" when it
	// gets one, or is not a LoadBalancer).
	Pending string
	// Stalled is true when only a change of the Service's spec gives it an
	// address (spec.loadBalancerIP is not an address, or not in the pool);
	// otherwise a pending Service waits for the pool or another Service.
	Stalled bool
}

// Assign decides the address of svc, given every other Service (others
// may include svc itself, and Services of any type; only LoadBalancers
// count). In order:
//
//   - not a LoadBalancer: no address (an address it had is released);
//   - spec.loadBalancerIP set: that address when it is in the pool and no
//     other Service has it, else none (Pending says why) — never another;
//   - the address it has, while it is in the pool and no other Service
//     has it (two Services that claim one address: the older keeps it);
//   - the lowest address of the pool that no Service has or asks for.
//
// The result depends only on the inputs.
func Assign(pool ipalloc.Pool, svc *corev1.Service, others []*corev1.Service) Decision {
	if svc.Spec.Type != corev1.ServiceTypeLoadBalancer {
		return Decision{}
	}
	if pool.Empty() {
		return Decision{Pending: "no load balancer address pool is configured (server flag --lb-pool)"}
	}
	holder := map[netip.Addr]*corev1.Service{} // the first-ranked other Service holding each address
	asked := map[netip.Addr]bool{}             // addresses other Services ask for
	for _, o := range others {
		if o.Spec.Type != corev1.ServiceTypeLoadBalancer || (o.Namespace == svc.Namespace && o.Name == svc.Name) {
			continue
		}
		if ip, ok := current(o); ok && pool.Contains(ip) {
			if h, ok := holder[ip]; !ok || before(o, h) {
				holder[ip] = o
			}
		}
		if ip, err := netip.ParseAddr(o.Spec.LoadBalancerIP); err == nil && pool.Contains(ip) {
			asked[ip.Unmap()] = true
		}
	}
	cur, hasCur := current(svc)
	// taken is the other Service that has ip, or nil.
	taken := func(ip netip.Addr) *corev1.Service {
		h := holder[ip]
		if h != nil && hasCur && cur == ip && before(svc, h) {
			return nil // both claim it: svc is older and keeps it
		}
		return h
	}

	if want := svc.Spec.LoadBalancerIP; want != "" {
		ip, err := netip.ParseAddr(want)
		if err != nil || ip.Zone() != "" {
			return Decision{Pending: fmt.Sprintf("spec.loadBalancerIP %q is not an IP address", want), Stalled: true}
		}
		ip = ip.Unmap()
		if !pool.Contains(ip) {
			return Decision{Pending: fmt.Sprintf("spec.loadBalancerIP %s is not in the load balancer pool %s (--lb-pool)", ip, pool), Stalled: true}
		}
		if h := taken(ip); h != nil {
			return Decision{Pending: fmt.Sprintf("spec.loadBalancerIP %s is already the address of service %s/%s", ip, h.Namespace, h.Name)}
		}
		return Decision{IP: ip}
	}
	if hasCur && pool.Contains(cur) && taken(cur) == nil {
		return Decision{IP: cur}
	}
	ip, ok := pool.First(func(a netip.Addr) bool { return holder[a] != nil || asked[a] })
	if !ok {
		return Decision{Pending: fmt.Sprintf("no free address left in the load balancer pool %s (--lb-pool)", pool)}
	}
	return Decision{IP: ip}
}

// current is the address a Service publishes, if any.
func current(s *corev1.Service) (netip.Addr, bool) {
	in := s.Status.LoadBalancer.Ingress
	if len(in) == 0 {
		return netip.Addr{}, false
	}
	ip, err := netip.ParseAddr(in[0].IP)
	if err != nil {
		return netip.Addr{}, false
	}
	return ip.Unmap(), true
}

// before ranks Services for an address both claim: the older first, then
// by namespace and name.
func before(a, b *corev1.Service) bool {
	ta, tb := a.CreationTimestamp.Time, b.CreationTimestamp.Time
	if !ta.Equal(tb) {
		return ta.Before(tb)
	}
	if a.Namespace != b.Namespace {
		return a.Namespace < b.Namespace
	}
	return a.Name < b.Name
}

// Ingress is the status.loadBalancer.ingress that d publishes.
func (d Decision) Ingress() []corev1.LoadBalancerIngress {
	if !d.IP.IsValid() {
		return nil
	}
	return []corev1.LoadBalancerIngress{{IP: d.IP.String()}}
}

// sameIngress compares two ingress lists, nil equal to empty.
func sameIngress(a, b []corev1.LoadBalancerIngress) bool {
	if len(a) == 0 && len(b) == 0 {
		return true
	}
	return reflect.DeepEqual(a, b)
}
