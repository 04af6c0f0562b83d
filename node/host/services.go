package host

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/flotilla-dev/flotilla/cluster/gossip"
	"github.com/flotilla-dev/flotilla/cluster/ipalloc"
	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/netfabric"
	"github.com/flotilla-dev/flotilla/netfabric/dns"
	"github.com/flotilla-dev/flotilla/netfabric/ingress"
	"github.com/flotilla-dev/flotilla/netfabric/lbip"
	"github.com/flotilla-dev/flotilla/netfabric/svcproxy"
	"github.com/flotilla-dev/flotilla/netfabric/svcview"
)

// ServiceConfig is the node's service plane: the cluster DNS and the
// ingress proxy.
type ServiceConfig struct {
	// ClusterDomain is the DNS domain of services (<svc>.<ns>.svc.<domain>);
	// "" is node.DefaultClusterDomain.
	ClusterDomain string
	// DNSUpstream are the resolvers the cluster DNS forwards other names
	// to, comma-separated IP[:PORT]; "none" answers only the cluster
	// domain; "" is this node's /etc/resolv.conf.
	DNSUpstream string
	// IngressHTTP and IngressHTTPS are where the ingress proxy serves
	// (ingress.Off disables one; both off: no ingress proxy).
	IngressHTTP, IngressHTTPS string
}

// servicePlane is one node's service networking: the nftables service
// proxy (VIPs, NodePorts, load balancer addresses), the cluster DNS on the
// pod bridge's address, the ingress proxy, and the load balancer addresses
// this node holds, all fed by one watch of Services, EndpointSlices,
// Ingresses and Secrets. While the API is unreachable the last view stays
// in force.
type servicePlane struct {
	opts     ServiceConfig
	store    store.Interface
	nodeName string
	nodeIP   net.IP
	podCIDR  *net.IPNet
	bridge   string
	gateway  net.IP // the pod bridge's address: pods' nameserver
	nftTable string
	members  *gossip.Membership // nil: a one-node cluster
	nodes    *nodeView          // the registered Nodes (with members)
	// lbPool is the load balancer pool, the only addresses this node may
	// hold; nil: read it with readPool, and hold nothing until it is known.
	lbPool   *ipalloc.Pool
	readPool func(context.Context) (string, error)
	log      *slog.Logger
}

// run serves until ctx ends. Only the cluster DNS failing to listen is
// fatal (pods could not resolve anything); an ingress port in use is
// logged and the rest keeps working.
func (sp *servicePlane) run(ctx context.Context) error {
	log := sp.log
	pod, err := netip.ParsePrefix(sp.podCIDR.String())
	if err != nil {
		return err
	}
	proxy, err := svcproxy.New(svcproxy.Config{Table: svcTable(sp.nftTable), PodCIDR: pod, Bridge: sp.bridge,
		Logger: log.With("component", "svcproxy")})
	if err != nil {
		return fmt.Errorf("service proxy: %w", err)
	}
	dnsCfg := dns.Config{Domain: sp.opts.ClusterDomain, Listen: []string{net.JoinHostPort(sp.gateway.String(), "53")},
		Logger: log.With("component", "dns")}
	switch up := strings.TrimSpace(sp.opts.DNSUpstream); up {
	case "":
	case "none":
		dnsCfg.NoForward = true
	default:
		dnsCfg.Upstreams = strings.Split(up, ",")
	}
	dnsSrv, err := dns.New(dnsCfg)
	if err != nil {
		return fmt.Errorf("cluster DNS: %w", err)
	}
	var ing *ingress.Proxy
	if sp.opts.IngressHTTP != ingress.Off || sp.opts.IngressHTTPS != ingress.Off {
		if ing, err = ingress.New(ingress.Config{HTTPAddr: sp.opts.IngressHTTP, HTTPSAddr: sp.opts.IngressHTTPS,
			Logger: log.With("component", "ingress")}); err != nil {
			return err
		}
	}
	var pool atomic.Pointer[ipalloc.Pool]
	if sp.lbPool != nil {
		pool.Store(sp.lbPool)
	}
	inPool := func(a netip.Addr) bool {
		p := pool.Load()
		return p != nil && p.Contains(a)
	}
	var ann *lbip.Announcer
	if sp.nodeIP == nil {
		log.Warn("load balancer addresses will not be announced from this node: it has no address")
	} else if link, err := netfabric.LinkOf(sp.nodeIP); err != nil {
		log.Warn("load balancer addresses will not be announced from this node", "err", err)
	} else if ann, err = lbip.New(lbip.Config{NodeName: sp.nodeName, Link: link.Attrs().Name, InPool: inPool, Logger: log}); err != nil {
		return err
	}

	var latest atomic.Pointer[svcview.Snapshot]
	kick := make(chan struct{}, 1)
	poke := func() {
		select {
		case kick <- struct{}{}:
		default:
		}
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return dnsSrv.Run(gctx) })
	if ing != nil {
		g.Go(func() error {
			if err := ing.Run(gctx); err != nil {
				log.Warn("ingress proxy disabled", "err", err)
			}
			return nil
		})
	}
	g.Go(func() error {
		svcview.Watch(gctx, svcview.WatchConfig{Store: sp.store, Logger: log.With("component", "svcview")}, func(s *svcview.Snapshot) {
			latest.Store(s)
			if err := proxy.Sync(gctx, s); err != nil {
				log.Warn("programming service addresses", "err", err)
			}
			dnsSrv.Update(s)
			if ing != nil {
				ing.Update(s)
			}
			poke()
		})
		return nil
	})
	if ann != nil {
		g.Go(func() error {
			sp.announce(gctx, ann, &latest, kick)
			return nil
		})
		if sp.lbPool == nil && sp.readPool != nil {
			g.Go(func() error {
				sp.followPool(gctx, &pool, poke)
				return nil
			})
		}
	}
	return g.Wait()
}

// poolRefresh is how often an agent reads the load balancer pool again
// (the server publishes it when it starts).
const poolRefresh = 30 * time.Second

// followPool keeps pool at the server's load balancer pool, as readPool
// reads it, and pokes the announcer when it changes. While the server cannot be read the last pool stays.
func (sp *servicePlane) followPool(ctx context.Context, pool *atomic.Pointer[ipalloc.Pool], poke func()) {
	t := time.NewTicker(poolRefresh)
	defer t.Stop()
	logged := ""
	for {
		text, err := sp.readPool(ctx)
		if err == nil {
			var p ipalloc.Pool
			if p, err = ipalloc.ParsePool(text); err == nil {
				if cur := pool.Load(); cur == nil || cur.String() != p.String() {
					pool.Store(&p)
					sp.log.Info("load balancer pool", "pool", p.String())
					poke()
				}
			}
		}
		if err != nil && err.Error() != logged && ctx.Err() == nil {
			logged = err.Error()
			sp.log.Warn("reading the load balancer pool (load balancer addresses are held only inside it)", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// announce holds this node's share of the load balancer addresses: again
// on every new view and every gossip membership change; released when the
// agent stops (the other nodes take them over once gossip says it left).
func (sp *servicePlane) announce(ctx context.Context, ann *lbip.Announcer, latest *atomic.Pointer[svcview.Snapshot], kick <-chan struct{}) {
	var events <-chan gossip.Event
	if sp.members != nil {
		ch, stop := sp.members.Subscribe()
		defer stop()
		events = ch
	}
	defer func() {
		if err := ann.Release(context.WithoutCancel(ctx)); err != nil {
			sp.log.Warn("releasing load balancer addresses", "err", err)
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case <-kick:
		case _, ok := <-events:
			if !ok {
				events = nil
			}
		}
		if s := latest.Load(); s != nil {
			if err := ann.Sync(ctx, s, sp.alive()); err != nil {
				sp.log.Warn("load balancer addresses", "err", err)
			}
		}
	}
}

// alive are the nodes that may hold load balancer addresses: the
// registered Nodes whose agents gossip says are alive (they all run the
// proxy), this one included.
func (sp *servicePlane) alive() []string {
	if sp.members == nil {
		return []string{sp.nodeName}
	}
	return aliveNodes(sp.nodeName, sp.members.Members(), sp.nodes)
}
