package admission

import (
	"fmt"
	"net/netip"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/flotilla-dev/flotilla/cluster/ipalloc"
)

// serviceAddresses keeps a Service from taking another's traffic (the
// CVE-2020-8554 class): spec.externalIPs are refused unless an operator
// allowed their range (Kubernetes' DenyServiceExternalIPs, with an
// allow-list), and a new address in status.loadBalancer comes only from the
// load-balancer controller and only from the load balancer pool, so no
// writer of a Service's status can make the agents announce someone else's
// address. A requested clusterIP outside the service CIDR is refused
// by the services plugin.
type serviceAddresses struct {
	externalIPs []netip.Prefix // allowed ranges; none: every externalIP is refused
	lbPool      ipalloc.Pool
}

func (serviceAddresses) name() string { return "ServiceAddresses" }

func (s serviceAddresses) admit(_ Reader, ws []*Write) error {
	for _, w := range ws {
		svc, ok := w.Object.(*corev1.Service)
		if !ok || w.Refused() {
			continue
		}
		old, _ := w.Old.(*corev1.Service)
		if w.Status {
			w.Errs = append(w.Errs, s.checkStatus(svc, old, w.Origin)...)
			continue
		}
		w.Errs = append(w.Errs, s.checkExternalIPs(svc, old)...)
	}
	return nil
}

func (s serviceAddresses) checkExternalIPs(svc, old *corev1.Service) field.ErrorList {
	var errs field.ErrorList
	was := map[string]bool{}
	if old != nil {
		for _, ip := range old.Spec.ExternalIPs {
			was[ip] = true
		}
	}
	p := field.NewPath("spec", "externalIPs")
	for i, ip := range svc.Spec.ExternalIPs {
		if was[ip] {
			continue // stored before: kept, not re-judged
		}
		a, err := netip.ParseAddr(ip)
		if err != nil {
			errs = append(errs, field.Invalid(p.Index(i), ip, "must be an IP address"))
			continue
		}
		if !s.externalAllowed(a) {
			errs = append(errs, field.Forbidden(p.Index(i), fmt.Sprintf(
				"externalIPs are not allowed (%s): a Service could take the traffic of any address; "+
					"use type LoadBalancer, or have the operator allow the range with --service-external-ip-cidrs", ip)))
		}
	}
	return errs
}

func (s serviceAddresses) externalAllowed(a netip.Addr) bool {
	for _, p := range s.externalIPs {
		if p.Contains(a.Unmap()) {
			return true
		}
	}
	return false
}

func (s serviceAddresses) checkStatus(svc, old *corev1.Service, origin Origin) field.ErrorList {
	var errs field.ErrorList
	was := map[string]bool{}
	if old != nil {
		for _, in := range old.Status.LoadBalancer.Ingress {
			was[in.IP+"/"+in.Hostname] = true
		}
	}
	p := field.NewPath("status", "loadBalancer", "ingress")
	for i, in := range svc.Status.LoadBalancer.Ingress {
		if was[in.IP+"/"+in.Hostname] {
			continue
		}
		if origin != Cluster {
			// Only the load-balancer controller hands addresses out.
			errs = append(errs, field.Forbidden(p.Index(i), fmt.Sprintf(
				"%s: a Service's load balancer address is written by the cluster's load-balancer controller only (from --lb-pool)", in.IP)))
			continue
		}
		if in.Hostname != "" {
			errs = append(errs, field.Forbidden(p.Index(i).Child("hostname"), "the load balancer publishes addresses, not host names"))
			continue
		}
		a, err := netip.ParseAddr(in.IP)
		switch {
		case err != nil:
			errs = append(errs, field.Invalid(p.Index(i).Child("ip"), in.IP, "must be an IP address"))
		case !s.lbPool.Contains(a.Unmap()):
			pool := s.lbPool.String()
			if s.lbPool.Empty() {
				pool = "empty"
			}
			errs = append(errs, field.Forbidden(p.Index(i).Child("ip"), fmt.Sprintf(
				"%s is not in the load balancer pool (%s, --lb-pool): only the pool's addresses are announced", in.IP, pool)))
		}
	}
	return errs
}

// ParseExternalIPCIDRs reads --service-external-ip-cidrs: comma-separated
// CIDRs ("" allows none).
func ParseExternalIPCIDRs(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		p, err := netip.ParsePrefix(f)
		if err != nil {
			return nil, fmt.Errorf("--service-external-ip-cidrs: %q is not a CIDR like 192.0.2.0/28", f)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}
