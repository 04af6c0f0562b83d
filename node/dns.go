package node

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"

	"github.com/flotilla-dev/flotilla/node/runtimeapi"
)

// DefaultClusterDomain is the DNS domain of services when Config.ClusterDomain is unset.
const DefaultClusterDomain = "cluster.local"

// podDNS is the resolver a pod gets, as the kubelet builds it:
//   - ClusterFirst (the default) and ClusterFirstWithHostNet: the node's
//     cluster DNS, searching <ns>.svc.<domain>, svc.<domain>, <domain>,
//     with ndots:5 — so `wget http://web/` finds the Service web of the
//     pod's namespace. Without a cluster DNS it falls back to Default, as
//     the kubelet does.
//   - Default: the node's own resolv.conf (nil: the runtime's default).
//   - None: only spec.dnsConfig.
//
// spec.dnsConfig's nameservers, searches and options are appended to the
// policy's. For Default they replace the node's entries of the same kind
// (Podman takes resolver fields whole), a documented difference.
func podDNS(pod *corev1.Pod, clusterDNS, domain string) *runtimeapi.DNSConfig {
	if domain == "" {
		domain = DefaultClusterDomain
	}
	var d runtimeapi.DNSConfig
	switch pod.Spec.DNSPolicy {
	case "", corev1.DNSClusterFirst, corev1.DNSClusterFirstWithHostNet:
		if clusterDNS != "" {
			d.Nameservers = []string{clusterDNS}
			d.Searches = []string{pod.Namespace + ".svc." + domain, "svc." + domain, domain}
			d.Options = []string{"ndots:5"}
		}
	case corev1.DNSNone:
		d = runtimeapi.DNSConfig{Nameservers: []string{}, Searches: []string{}, Options: []string{}}
	}
	if c := pod.Spec.DNSConfig; c != nil {
		d.Nameservers = append(d.Nameservers, c.Nameservers...)
		d.Searches = append(d.Searches, c.Searches...)
		for _, o := range c.Options {
			if o.Value != nil {
				d.Options = mergeOption(d.Options, fmt.Sprintf("%s:%s", o.Name, *o.Value), o.Name)
			} else {
				d.Options = mergeOption(d.Options, o.Name, o.Name)
			}
		}
	}
	if d.Nameservers == nil && d.Searches == nil && d.Options == nil {
		return nil
	}
	return &d
}

// mergeOption sets option opt (named name), replacing an earlier one of the
// same name: a pod's ndots:2 overrides the cluster's ndots:5.
func mergeOption(opts []string, opt, name string) []string {
	for i, o := range opts {
		if o == name || len(o) > len(name) && o[:len(name)+1] == name+":" {
			opts[i] = opt
			return opts
		}
	}
	return append(opts, opt)
}

// podHostname is the hostname of a pod's containers: spec.hostname, else
// the pod's name, cut to the 63 characters a hostname may have.
func podHostname(pod *corev1.Pod) string {
	h := pod.Spec.Hostname
	if h == "" {
		h = pod.Name
	}
	if len(h) > 63 {
		h = h[:63]
	}
	return h
}
