package main

import (
	"github.com/spf13/pflag"

	"github.com/flotilla-dev/flotilla/node"
	"github.com/flotilla-dev/flotilla/node/host"
)

// serviceOptions are the node-side flags of the service plane, shared by
// up and agent.
type serviceOptions struct {
	clusterDomain string
	ingressHTTP   string
	ingressHTTPS  string
	dnsUpstream   string
}

func (o *serviceOptions) addFlags(f *pflag.FlagSet) {
	f.StringVar(&o.clusterDomain, "cluster-domain", node.DefaultClusterDomain, "DNS domain of services (<svc>.<ns>.svc.<domain>)")
	f.StringVar(&o.dnsUpstream, "dns-upstream", "", `resolvers the cluster DNS forwards other names to, comma-separated IP[:PORT] ("none": answer only the cluster domain; default: this node's /etc/resolv.conf)`)
	f.StringVar(&o.ingressHTTP, "ingress-http-addr", ":80", `where the ingress proxy serves HTTP ("off" disables it)`)
	f.StringVar(&o.ingressHTTPS, "ingress-https-addr", ":443", `where the ingress proxy serves HTTPS ("off" disables it)`)
}

func (o *serviceOptions) config() host.ServiceConfig {
	return host.ServiceConfig{ClusterDomain: o.clusterDomain, DNSUpstream: o.dnsUpstream,
		IngressHTTP: o.ingressHTTP, IngressHTTPS: o.ingressHTTPS}
}
