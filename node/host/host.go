// Package host wires one node of a cluster (tailscale's tsd, for the node
// role): the pod network's bridge and VXLAN overlay (netfabric), the node's
// Podman, the node agent, the service plane (service proxy, cluster DNS,
// ingress, load balancer addresses), the overlay's peers from the
// registered Nodes and gossip, the agent's HTTPS endpoint (logs, streams,
// metrics, stats), the Node's registration, and Teardown, which undoes
// what a node made on the host. `flotilla agent` and `flotilla up` (a node
// beside the control plane in one process) both run a Node; cmd keeps
// their flags and what they print.
package host

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/flotilla-dev/flotilla/cluster/gossip"
	"github.com/flotilla-dev/flotilla/cluster/ipalloc"
	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/netfabric"
	"github.com/flotilla-dev/flotilla/node"
	"github.com/flotilla-dev/flotilla/node/podman"
)

// Config is one node. Zero values mean the defaults named.
type Config struct {
	// NodeName is this node's name. Required.
	NodeName string
	// DataDir holds the node's state: the settings (SettingsFile), its
	// Podman service (podman/), the pod network's (net/) and the pods'
	// volumes (pods/). Required.
	DataDir string
	// Settings are the names of what the node makes on the host; PodCIDR
	// is required. New records them in DataDir for Teardown.
	Settings Settings
	// Store is where the agent reads its pods and writes their status:
	// the cluster's API (an agent) or the control plane's store (up).
	// Required.
	Store store.Interface
	// Register makes New register the Node with Settings.PodCIDR (a node
	// with its own pod CIDR, as up's). false: the Node is registered
	// already (Register and WaitPodCIDR, before the node's gossip starts).
	Register bool
	// NodeIP is this node's address on the node network: the Node's
	// InternalIP, the overlay's underlay, where load balancer addresses
	// are announced. nil: none of them (a one-node cluster's may be nil).
	NodeIP net.IP
	// Overlay joins the VXLAN overlay on NodeIP and programs its peers
	// from the registered Nodes (a node of a multi-node cluster). Needs
	// NodeIP.
	Overlay bool
	// Members is the cluster's gossip, which says which nodes are alive
	// to hold load balancer addresses; nil: a one-node cluster.
	Members *gossip.Membership
	// Offline: no server answered at start; the agent runs the node's
	// last known pods at once (node.Config.StartFromLastKnown).
	Offline bool
	// LBPool is the load balancer pool, the only addresses this node may
	// hold; nil: ReadLBPool reads it (every poolRefresh); both nil: the
	// node holds none.
	LBPool     *ipalloc.Pool
	ReadLBPool func(context.Context) (string, error)
	// Services configures the cluster DNS and the ingress proxy.
	Services ServiceConfig
	// Metrics is the process's Prometheus registry the agent adds its
	// families to; nil: the agent's own.
	Metrics *prometheus.Registry
	// Endpoint is the agent's HTTPS endpoint; nil: none.
	Endpoint *Endpoint
	// Logger receives every part's logs, each with its "component".
	// nil: discarded.
	Logger *slog.Logger
}

func (c *Config) validate() error {
	switch {
	case c.NodeName == "":
		return errors.New("host: no node name")
	case c.DataDir == "":
		return errors.New("host: no data dir")
	case c.Store == nil:
		return errors.New("host: no store")
	case c.Overlay && c.NodeIP == nil:
		return errors.New("host: the overlay needs the node's address")
	}
	if _, _, err := net.ParseCIDR(c.Settings.PodCIDR); err != nil {
		return fmt.Errorf("host: pod CIDR %q: %w", c.Settings.PodCIDR, err)
	}
	return nil
}

// Node is one node's parts, made by New and run by Run.
type Node struct {
	cfg        Config
	log        *slog.Logger
	podCIDR    *net.IPNet
	runtime    *podman.Runtime
	stopPodman func()
	fabric     *netfabric.Fabric
	agent      *node.Agent
	streams    http.Handler
}

// New sets the node up on the host: it records the settings, starts (or
// connects to) Podman, makes the pod network's bridge and, with
// Config.Overlay, its overlay, registers the Node with Config.Register,
// and makes the agent. Nothing runs until Run; Close stops Podman. On an
// error it closes the endpoint's listener.
func New(ctx context.Context, cfg Config) (_ *Node, err error) {
	if cfg.Endpoint != nil {
		defer func() {
			if err != nil {
				cfg.Endpoint.Listener.Close()
			}
		}()
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Services.ClusterDomain == "" {
		cfg.Services.ClusterDomain = node.DefaultClusterDomain
	}
	n := &Node{cfg: cfg, log: cfg.Logger}
	_, n.podCIDR, _ = net.ParseCIDR(cfg.Settings.PodCIDR)
	if err := SaveSettings(cfg.DataDir, cfg.Settings); err != nil {
		return nil, fmt.Errorf("record the host settings: %w", err)
	}
	if n.runtime, n.stopPodman, err = startPodman(ctx, cfg.DataDir, cfg.Settings, n.log); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			n.Close()
		}
	}()
	if err := n.initNetwork(ctx); err != nil {
		return nil, err
	}
	if cfg.Register {
		if err := Register(ctx, cfg.Store, cfg.NodeName, cfg.Settings.PodCIDR); err != nil {
			return nil, err
		}
	}
	n.agent, err = node.New(node.Config{NodeName: cfg.NodeName, Store: cfg.Store, Runtime: n.runtime, Network: n.fabric,
		NodeIP: cfg.NodeIP, ClusterDNS: n.fabric.Gateway(), ClusterDomain: cfg.Services.ClusterDomain,
		PodDir: filepath.Join(cfg.DataDir, "pods"), Logger: n.log.With("component", "agent"),
		DiskPressure: diskPressure(cfg.DataDir, cfg.Settings), Metrics: cfg.Metrics, StartFromLastKnown: cfg.Offline})
	if err != nil {
		return nil, err
	}
	n.streams = n.agent.StreamHandler("")
	return n, nil
}

// initNetwork makes the pod network: the node's bridge, then the overlay
// to the others.
func (n *Node) initNetwork(ctx context.Context) error {
	s := n.cfg.Settings
	fc := netfabric.Config{
		PodCIDR: n.podCIDR, Bridge: s.Bridge, NetNSPrefix: s.NetNSPrefix, NFTable: s.NFTable,
		StateDir: filepath.Join(n.cfg.DataDir, "net"), Logger: n.log.With("component", "netfabric"),
	}
	overlay := netfabric.OverlayConfig{UnderlayIP: n.cfg.NodeIP}
	if n.cfg.Overlay {
		mtu, err := netfabric.OverlayMTU(overlay)
		if err != nil {
			return fmt.Errorf("overlay MTU: %w", err)
		}
		fc.MTU = mtu
	}
	fabric, err := netfabric.New(fc)
	if err != nil {
		return fmt.Errorf("pod network: %w", err)
	}
	if err := fabric.Init(ctx); err != nil {
		return fmt.Errorf("pod network: %w", err)
	}
	if n.cfg.Overlay {
		if err := fabric.InitOverlay(ctx, overlay); err != nil {
			return fmt.Errorf("pod overlay: %w", err)
		}
	}
	n.fabric = fabric
	return nil
}

// Runtime is the node's Podman.
func (n *Node) Runtime() *podman.Runtime { return n.runtime }

// Run runs the node until ctx ends or a part fails: the agent, its
// endpoint, the overlay's peers and the service plane. Pods keep running
// when it returns.
func (n *Node) Run(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return n.agent.Run(ctx) })
	if e := n.cfg.Endpoint; e != nil {
		srv := &http.Server{Handler: handler(n.agent, e.metricsAuthorizer()), TLSConfig: e.TLS, ReadHeaderTimeout: 10 * time.Second}
		g.Go(func() error { return serve(ctx, srv, e.Listener) })
	}
	// The overlay and the load balancer election take their facts about
	// nodes from the API's Node objects, gossip only saying who is alive.
	var nodes *nodeView
	if n.cfg.Overlay || n.cfg.Members != nil {
		nodes = newNodeView(n.cfg.Store, n.log.With("component", "nodes"))
		g.Go(func() error { nodes.run(ctx); return nil })
	}
	if n.cfg.Overlay {
		g.Go(func() error { followPeers(ctx, nodes, n.fabric, n.log.With("component", "overlay")); return nil })
	}
	services := &servicePlane{opts: n.cfg.Services, store: n.cfg.Store, nodeName: n.cfg.NodeName, nodeIP: n.cfg.NodeIP,
		podCIDR: n.podCIDR, bridge: n.cfg.Settings.Bridge, gateway: n.fabric.Gateway(), nftTable: n.cfg.Settings.NFTable,
		members: n.cfg.Members, nodes: nodes, lbPool: n.cfg.LBPool, readPool: n.cfg.ReadLBPool,
		log: n.log.With("component", "services")}
	g.Go(func() error { return services.run(ctx) })
	return g.Wait()
}

// Close stops the node's own Podman service (not its pods) and closes the
// endpoint's listener.
func (n *Node) Close() {
	if e := n.cfg.Endpoint; e != nil {
		e.Listener.Close()
	}
	if n.stopPodman != nil {
		n.stopPodman()
		n.stopPodman = nil
	}
}
