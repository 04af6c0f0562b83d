// Package netfabric is the pod network: for each pod a named network
// namespace, a veth into the node's bridge and an address from the node's
// pod CIDR (IPAM persisted in a state directory), plus the node-level
// plumbing that makes it carry traffic (forwarding, the bridge's way through
// the host firewall, masquerade out of the cluster CIDR).
//
// A node owns one pod CIDR carved from the cluster CIDR; the bridge holds
// the CIDR's first address as the pods' gateway, so routes to other nodes'
// pod CIDRs (the VXLAN overlay: overlay.go, peers.go) live on the host and
// pods need none.
//
// Life of a pod's network:
//
//	          Setup (record written first, then kernel objects)
//	(none) ─────────────────────────────────────────────▶ ready
//	   ▲        ╲ failure: undo what this call made           │  Setup again:
//	   │         ╲ (record kept only if it existed before)    │  check & repair,
//	   │                                                      │  same ns and IP
//	   └────────────────────── Teardown ◀─────────────────────┘
//	        (veth, netns, then the record and its address)
//
// After a reboot /run/netns, the bridge and the rules are gone but the
// records are not: Init rebuilds the bridge and rules, and Setup for each
// pod rebuilds its namespace with the address it had.
package netfabric

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"

	"github.com/vishvananda/netlink"

	"github.com/flotilla-dev/flotilla/node/podnet"
)

// Interface guards.
var _ podnet.Network = (*Fabric)(nil)

// ErrNotInitialized means the bridge is missing: Init has not run since
// boot (or someone deleted the bridge).
var ErrNotInitialized = errors.New("pod network not initialized (bridge missing): call Init")

// Config configures a Fabric. Zero values mean the documented default.
type Config struct {
	// PodCIDR is this node's IPv4 pod range (e.g. 10.244.0.0/24). Required.
	// Its first address is the gateway on the bridge; the network, gateway
	// and broadcast addresses are never given to pods, so a /24 holds 253.
	PodCIDR *net.IPNet
	// ClusterCIDR is the range all nodes' pod CIDRs come from; it must
	// contain PodCIDR. Traffic from pods to outside it is masqueraded.
	// Default 10.244.0.0/16.
	ClusterCIDR *net.IPNet
	// Bridge is the node bridge in the caller's namespace. Default
	// "flotilla0". At most 15 bytes.
	Bridge string
	// StateDir holds one JSON record per pod (its netns, veth and address).
	// Required: without it an agent restart would forget every address.
	StateDir string
	// NetNSPrefix starts each pod namespace's name under /run/netns
	// (prefix + 12 hex digits of a hash of the UID). Default "flo-".
	NetNSPrefix string
	// NFTable names the nftables table (family inet) holding the
	// masquerade. Default "flotilla". Two fabrics in one network namespace
	// need different tables.
	NFTable string
	// MTU of the bridge and the veths. Default 1500. A node in a cluster
	// must pass the overlay's, OverlayMTU(its OverlayConfig) (1450 for
	// VXLAN over a 1500 link): InitOverlay refuses a larger one.
	MTU int
	// Logger receives the fabric's logs. Default: discard.
	Logger *slog.Logger
}

// Fabric is a node's pod network. It is safe for concurrent use: calls for
// different pods run in parallel, calls for one pod are serialised.
type Fabric struct {
	cfg     Config
	log     *slog.Logger
	pool    netip.Prefix // PodCIDR
	cluster netip.Prefix // ClusterCIDR
	gateway netip.Prefix // first address of PodCIDR, with its length
	state   *store
	locks   keyLocks
	ov      overlayState // the VXLAN overlay (overlay.go, peers.go)
}

// New validates cfg, loads the state directory and returns the fabric. It
// touches no kernel state: call Init before Setup.
func New(cfg Config) (*Fabric, error) {
	if cfg.PodCIDR == nil {
		return nil, errors.New("netfabric: Config.PodCIDR is required")
	}
	pool, err := prefixOf(cfg.PodCIDR)
	if err != nil || !pool.Addr().Is4() {
		return nil, fmt.Errorf("netfabric: Config.PodCIDR %s: must be an IPv4 CIDR", cfg.PodCIDR)
	}
	if pool.Bits() > 30 {
		return nil, fmt.Errorf("netfabric: Config.PodCIDR %s: too small, need /30 or larger", pool)
	}
	if cfg.ClusterCIDR == nil {
		_, cfg.ClusterCIDR, _ = net.ParseCIDR("10.244.0.0/16")
	}
	cluster, err := prefixOf(cfg.ClusterCIDR)
	if err != nil || !cluster.Addr().Is4() {
		return nil, fmt.Errorf("netfabric: Config.ClusterCIDR %s: must be an IPv4 CIDR", cfg.ClusterCIDR)
	}
	if cluster.Bits() > pool.Bits() || !cluster.Contains(pool.Addr()) {
		return nil, fmt.Errorf("netfabric: Config.PodCIDR %s is not inside Config.ClusterCIDR %s", pool, cluster)
	}
	if cfg.Bridge == "" {
		cfg.Bridge = "flotilla0"
	}
	if len(cfg.Bridge) > 15 {
		return nil, fmt.Errorf("netfabric: Config.Bridge %q: longer than 15 bytes", cfg.Bridge)
	}
	if cfg.StateDir == "" {
		return nil, errors.New("netfabric: Config.StateDir is required")
	}
	if cfg.NetNSPrefix == "" {
		cfg.NetNSPrefix = "flo-"
	}
	if filepath.Base(cfg.NetNSPrefix+"x") != cfg.NetNSPrefix+"x" {
		return nil, fmt.Errorf("netfabric: Config.NetNSPrefix %q: must not contain '/'", cfg.NetNSPrefix)
	}
	if cfg.NFTable == "" {
		cfg.NFTable = "flotilla"
	}
	if cfg.MTU == 0 {
		cfg.MTU = 1500
	}
	if cfg.MTU < 576 || cfg.MTU > 65535 {
		return nil, fmt.Errorf("netfabric: Config.MTU %d: out of range", cfg.MTU)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	log := cfg.Logger.With("subsystem", "netfabric", "bridge", cfg.Bridge)
	st, err := openStore(cfg.StateDir, pool, log)
	if err != nil {
		return nil, fmt.Errorf("netfabric: %w", err)
	}
	return &Fabric{
		cfg:     cfg,
		log:     log,
		pool:    pool,
		cluster: cluster,
		gateway: netip.PrefixFrom(pool.Addr().Next(), pool.Bits()),
		state:   st,
		locks:   keyLocks{m: map[string]*keyLock{}},
	}, nil
}

func prefixOf(n *net.IPNet) (netip.Prefix, error) {
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, fmt.Errorf("bad address %v", n.IP)
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones).Masked(), nil
}

// Gateway is the pods' default gateway, the bridge's address.
func (f *Fabric) Gateway() net.IP { return f.gateway.Addr().AsSlice() }

// Init makes the node ready for pods: the bridge exists, is up and holds
// the gateway address; IPv4 forwarding is on; the host firewall lets the
// bridge's traffic through; pods are masqueraded to outside the cluster
// CIDR. It is idempotent and is meant to run at every agent start (after a
// reboot it recreates everything the kernel forgot). It refuses a pod CIDR
// that a route through another link covers (see RoutesWithin).
func (f *Fabric) Init(ctx context.Context) error {
	foreign, err := RoutesWithin(f.pool, f.cfg.Bridge)
	if err != nil {
		return fmt.Errorf("netfabric init: %w", err)
	}
	if len(foreign) > 0 {
		return fmt.Errorf("netfabric init: pod CIDR %s overlaps the host's route %s, so this node's pods would be unreachable: "+
			"remove that route (ip route del %s) or give this node another pod CIDR", f.pool, strings.Join(foreign, ", "), foreign[0])
	}
	if _, err := ensureBridge(f.cfg.Bridge, f.cfg.MTU, f.gateway); err != nil {
		return fmt.Errorf("netfabric init: %w", err)
	}
	if err := enableForwarding(); err != nil {
		return fmt.Errorf("netfabric init: %w", err)
	}
	if err := f.ensureNFTables(ctx); err != nil {
		return fmt.Errorf("netfabric init: %w", err)
	}
	if err := f.ensureIPTables(ctx); err != nil {
		return fmt.Errorf("netfabric init: %w", err)
	}
	drops, err := f.foreignDrops(ctx)
	if err != nil {
		f.log.Debug("cannot check nftables for drop policies", "err", err)
	}
	for _, c := range drops {
		f.log.Warn("an nftables forward chain drops by default; pod traffic may be dropped unless it accepts the bridge", "chain", c)
	}
	f.log.Info("pod network ready", "cidr", f.pool, "gateway", f.gateway.Addr(), "pods", len(f.state.uids()))
	return nil
}

// Setup gives the pod its namespace and address (see podnet.Network). It
// repairs a partly present network (after a crash or a reboot) keeping the
// recorded address; on failure it removes whatever this call created.
func (f *Fabric) Setup(ctx context.Context, pod podnet.PodRef) (podnet.PodNetwork, error) {
	if pod.UID == "" {
		return podnet.PodNetwork{}, errors.New("netfabric setup: empty pod UID")
	}
	if err := ctx.Err(); err != nil {
		return podnet.PodNetwork{}, fmt.Errorf("netfabric setup of pod %s: %w", pod.UID, err)
	}
	unlock := f.locks.lock(pod.UID)
	defer unlock()
	log := f.log.With("pod", pod.UID)

	bridge, err := netlink.LinkByName(f.cfg.Bridge)
	if err != nil {
		return podnet.PodNetwork{}, fmt.Errorf("netfabric setup of pod %s: %w (%v)", pod.UID, ErrNotInitialized, err)
	}

	key := shortKey(f.cfg.NetNSPrefix, pod.UID)
	old, existed := f.state.get(pod.UID)
	rec := record{UID: pod.UID, Namespace: pod.Namespace, Name: pod.Name, Key: key,
		NetNS: f.cfg.NetNSPrefix + key, HostVeth: "veth" + key[:11]}
	if existed {
		rec.IP = old.IP
		if old.NetNS != rec.NetNS || old.HostVeth != rec.HostVeth {
			// Recorded under another NetNSPrefix: retire the old names.
			if err := errors.Join(deleteLink(old.HostVeth), DeleteNetNS(old.NetNS)); err != nil {
				return podnet.PodNetwork{}, fmt.Errorf("netfabric setup of pod %s: removing its old network: %w", pod.UID, err)
			}
		}
	}
	if !existed || old != rec {
		// Persist before touching the kernel, so nothing made below can be
		// forgotten by a crash; allocate keeps a still-valid address.
		if rec, err = f.state.allocate(rec); err != nil {
			return podnet.PodNetwork{}, fmt.Errorf("netfabric setup of pod %s: %w", pod.UID, err)
		}
	}
	if existed && old.IP != rec.IP {
		log.Warn("pod address outside the pod CIDR; readdressed", "old", old.IP, "ip", rec.IP)
	}

	ns, createdNS, err := EnsureNetNS(rec.NetNS)
	if err != nil {
		return podnet.PodNetwork{}, f.undoSetup(rec, existed, false, fmt.Errorf("netfabric setup of pod %s: %w", pod.UID, err))
	}
	defer ns.Close()
	_, hostErr := netlink.LinkByName(rec.HostVeth)
	createdVeth := hostErr != nil

	addr := rec.addr()
	err = ensureVeth(ns, podLink{
		hostVeth: rec.HostVeth,
		bridge:   bridge,
		mtu:      f.cfg.MTU,
		addr:     netip.PrefixFrom(addr, f.pool.Bits()),
		gateway:  f.gateway.Addr(),
	})
	if err != nil {
		if createdVeth {
			if derr := deleteLink(rec.HostVeth); derr != nil {
				err = errors.Join(err, derr)
			}
		}
		return podnet.PodNetwork{}, f.undoSetup(rec, existed, createdNS, fmt.Errorf("netfabric setup of pod %s: %w", pod.UID, err))
	}
	if createdNS || createdVeth {
		log.Info("pod network set up", "netns", rec.NetNS, "ip", rec.IP, "veth", rec.HostVeth)
	}
	return podnet.PodNetwork{NetNSPath: filepath.Join(NetNSDir, rec.NetNS), IP: addr.AsSlice()}, nil
}

// undoSetup removes what a failed Setup made: the netns if it created it,
// and the record (with its address) if there was none before.
func (f *Fabric) undoSetup(rec record, existed, createdNS bool, err error) error {
	if createdNS {
		if derr := DeleteNetNS(rec.NetNS); derr != nil {
			err = errors.Join(err, fmt.Errorf("cleaning up: %w", derr))
		}
	}
	if !existed {
		if derr := f.state.release(rec.UID); derr != nil {
			err = errors.Join(err, fmt.Errorf("cleaning up: %w", derr))
		}
	}
	f.log.Warn("pod network setup failed", "pod", rec.UID, "err", err)
	return err
}

// Teardown removes the pod's veth and namespace and frees its address (see
// podnet.Network). Unknown UIDs are not an error. The record goes last, so a
// failed Teardown leaves the pod listed by Pods for the next attempt.
func (f *Fabric) Teardown(ctx context.Context, podUID string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("netfabric teardown of pod %s: %w", podUID, err)
	}
	unlock := f.locks.lock(podUID)
	defer unlock()
	rec, ok := f.state.get(podUID)
	if !ok {
		return nil
	}
	if err := deleteLink(rec.HostVeth); err != nil {
		return fmt.Errorf("netfabric teardown of pod %s: %w", podUID, err)
	}
	if err := DeleteNetNS(rec.NetNS); err != nil {
		return fmt.Errorf("netfabric teardown of pod %s: %w", podUID, err)
	}
	if err := f.state.release(podUID); err != nil {
		return fmt.Errorf("netfabric teardown of pod %s: %w", podUID, err)
	}
	f.log.Info("pod network torn down", "pod", podUID, "ip", rec.IP)
	return nil
}

// Pods lists the UIDs that have a record (see podnet.Network), sorted. The
// slice is the caller's.
func (f *Fabric) Pods(ctx context.Context) ([]string, error) {
	return f.state.uids(), nil
}

// Destroy tears down every pod's network, then the firewall rules, the
// bridge and the VXLAN device (if this Fabric's InitOverlay made one): the
// node leaves the cluster, or a test cleans up. The fabric can be Init-ed
// again afterwards.
func (f *Fabric) Destroy(ctx context.Context) error {
	var errs []error
	for _, uid := range f.state.uids() {
		errs = append(errs, f.Teardown(ctx, uid))
	}
	errs = append(errs, f.destroyOverlay(), f.deleteIPTables(ctx), f.deleteNFTables(ctx), deleteLink(f.cfg.Bridge))
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("netfabric destroy: %w", err)
	}
	return nil
}

// keyLocks serialises work per key (pod UID) without serialising across keys.
type keyLocks struct {
	mu sync.Mutex
	m  map[string]*keyLock
}

type keyLock struct {
	mu   sync.Mutex
	refs int
}

func (k *keyLocks) lock(key string) (unlock func()) {
	k.mu.Lock()
	l := k.m[key]
	if l == nil {
		l = &keyLock{}
		k.m[key] = l
	}
	l.refs++
	k.mu.Unlock()
	l.mu.Lock()
	return func() {
		l.mu.Unlock()
		k.mu.Lock()
		if l.refs--; l.refs == 0 {
			delete(k.m, key)
		}
		k.mu.Unlock()
	}
}
