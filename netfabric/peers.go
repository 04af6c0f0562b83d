package netfabric

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sort"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// ErrOverlayNotInitialized means SetPeers ran before InitOverlay.
var ErrOverlayNotInitialized = errors.New("overlay not initialized: call InitOverlay")

// peerEntry is what one peer needs programmed on the VXLAN device.
type peerEntry struct {
	node     string
	cidr     netip.Prefix // route destination
	vtep     netip.Addr   // route gateway and neighbour address
	mac      string       // neighbour lladdr and fdb MAC (net.HardwareAddr.String)
	underlay netip.Addr   // fdb destination
}

// SetPeers makes the VXLAN device carry exactly peers: for each peer a
// route to its pod CIDR via its VTEP address (onlink), a permanent
// neighbour entry for that address and a forwarding entry sending its MAC
// to its underlay address. peers is the full desired set (from gossip):
// entries of nodes no longer in it are removed; this node itself (same pod
// CIDR) is skipped. It diffs against what the kernel holds, so calling it
// again with the same set changes nothing, and after an agent restart it
// adopts what is there. Invalid peers are left out (their old entries
// removed) and named in the returned error; the others are programmed.
func (f *Fabric) SetPeers(ctx context.Context, peers []Peer) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("netfabric set peers: %w", err)
	}
	f.ov.mu.Lock()
	defer f.ov.mu.Unlock()
	if f.ov.cfg.Device == "" {
		return fmt.Errorf("netfabric set peers: %w", ErrOverlayNotInitialized)
	}
	f.ov.peers = append([]Peer(nil), peers...)
	if _, err := f.syncPeers(peers); err != nil {
		return fmt.Errorf("netfabric set peers: %w", err)
	}
	return nil
}

// desiredPeers validates peers into entries keyed by pod CIDR. The error
// names every peer left out.
func (f *Fabric) desiredPeers(peers []Peer) (map[netip.Prefix]peerEntry, error) {
	want := map[netip.Prefix]peerEntry{}
	var errs []error
	self := f.ov.cfg.UnderlayIP
	for _, p := range peers {
		bad := func(format string, args ...any) {
			errs = append(errs, fmt.Errorf("peer %q: %s", p.Node, fmt.Sprintf(format, args...)))
		}
		if p.PodCIDR == nil {
			bad("no pod CIDR")
			continue
		}
		cidr, err := prefixOf(p.PodCIDR)
		if err != nil || !cidr.Addr().Is4() {
			bad("pod CIDR %v: not IPv4", p.PodCIDR)
			continue
		}
		if cidr == f.pool {
			continue // this node
		}
		if cidr.Overlaps(f.pool) {
			bad("pod CIDR %s overlaps this node's %s", cidr, f.pool)
			continue
		}
		if !f.cluster.Contains(cidr.Addr()) || cidr.Bits() < f.cluster.Bits() {
			bad("pod CIDR %s is outside the cluster CIDR %s", cidr, f.cluster)
			continue
		}
		under, ok := netip.AddrFromSlice(p.UnderlayIP.To4())
		if !ok {
			bad("underlay address %v: not IPv4", p.UnderlayIP)
			continue
		}
		if p.UnderlayIP.Equal(self) {
			bad("underlay address %s is this node's, with another pod CIDR (%s)", under, cidr)
			continue
		}
		mac := p.VTEPMAC
		if mac == nil {
			mac = VTEPMACFor(p.PodCIDR)
		}
		if len(mac) != 6 || mac[0]&1 != 0 {
			bad("VTEP MAC %v: not a unicast Ethernet address", mac)
			continue
		}
		clash := false
		for c, e := range want {
			if c.Overlaps(cidr) {
				bad("pod CIDR %s overlaps peer %q's %s", cidr, e.node, c)
				clash = true
			}
		}
		if clash {
			continue
		}
		want[cidr] = peerEntry{node: p.Node, cidr: cidr, vtep: cidr.Addr(), mac: mac.String(), underlay: under}
	}
	return want, errors.Join(errs...)
}

// syncPeers programs peers and returns how many kernel objects it added,
// replaced or removed (0 when all was in place). The caller holds f.ov.mu.
func (f *Fabric) syncPeers(peers []Peer) (changes int, err error) {
	want, verr := f.desiredPeers(peers)
	link, err := netlink.LinkByName(f.ov.cfg.Device)
	if err != nil {
		return 0, errors.Join(verr, fmt.Errorf("finding %s: %w (%w)", f.ov.cfg.Device, ErrOverlayNotInitialized, err))
	}
	idx := link.Attrs().Index
	dev := f.ov.cfg.Device

	// What the kernel holds now.
	routes, err := Dump(func() ([]netlink.Route, error) {
		return netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{LinkIndex: idx}, netlink.RT_FILTER_OIF)
	})
	if err != nil {
		return 0, errors.Join(verr, fmt.Errorf("listing routes of %s: %w", dev, err))
	}
	neighs, err := Dump(func() ([]netlink.Neigh, error) { return netlink.NeighList(idx, netlink.FAMILY_V4) })
	if err != nil {
		return 0, errors.Join(verr, fmt.Errorf("listing neighbours of %s: %w", dev, err))
	}
	fdbs, err := Dump(func() ([]netlink.Neigh, error) { return netlink.NeighList(idx, unix.AF_BRIDGE) })
	if err != nil {
		return 0, errors.Join(verr, fmt.Errorf("listing forwarding entries of %s: %w", dev, err))
	}
	haveRoute := map[netip.Prefix]bool{}
	haveNeigh := map[netip.Addr]bool{}
	haveFDB := map[string]bool{} // mac + " " + underlay
	wantNeigh := map[netip.Addr]string{}
	wantFDB := map[string]bool{}
	for _, e := range want {
		wantNeigh[e.vtep] = e.mac
		wantFDB[e.mac+" "+e.underlay.String()] = true
	}
	var errs []error
	var stale []func() error // removals, run after the additions

	for _, r := range routes {
		if r.Protocol == unix.RTPROT_KERNEL || r.Dst == nil {
			continue
		}
		dst, _ := prefixOf(r.Dst)
		gw, _ := netip.AddrFromSlice(r.Gw.To4())
		if e, ok := want[dst]; ok {
			if gw == e.vtep && r.Flags&int(netlink.FLAG_ONLINK) != 0 {
				haveRoute[dst] = true
			}
			continue // a wrong one is replaced below, in place
		}
		r := r
		stale = append(stale, func() error {
			if err := netlink.RouteDel(&r); err != nil && !isNotFound(err) {
				return fmt.Errorf("removing route %s via %s dev %s: %w", r.Dst, r.Gw, dev, err)
			}
			return nil
		})
	}
	for _, n := range neighs {
		ip, _ := netip.AddrFromSlice(n.IP.To4())
		if mac, ok := wantNeigh[ip]; ok {
			if n.HardwareAddr.String() == mac && n.State&netlink.NUD_PERMANENT != 0 {
				haveNeigh[ip] = true
			}
			continue // a wrong one is replaced below, in place
		}
		n := n
		stale = append(stale, func() error {
			if err := netlink.NeighDel(&n); err != nil && !isNotFound(err) {
				return fmt.Errorf("removing neighbour %s dev %s: %w", n.IP, dev, err)
			}
			return nil
		})
	}
	for _, n := range fdbs {
		if n.LinkIndex != idx || n.Flags&netlink.NTF_SELF == 0 {
			continue
		}
		key := n.HardwareAddr.String() + " " + n.IP.String()
		if wantFDB[key] {
			if n.State&netlink.NUD_PERMANENT != 0 {
				haveFDB[key] = true
			}
			continue // a wrong one is replaced below, in place
		}
		n := n
		stale = append(stale, func() error {
			if err := netlink.NeighDel(&n); err != nil && !isNotFound(err) {
				return fmt.Errorf("removing forwarding entry %s dst %s dev %s: %w", n.HardwareAddr, n.IP, dev, err)
			}
			return nil
		})
	}

	// Additions in a stable order: fdb and neighbour before the route, so
	// a route never points at a tunnel end that is not there yet.
	keys := make([]netip.Prefix, 0, len(want))
	for c := range want {
		keys = append(keys, c)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].Addr().Less(keys[j].Addr()) })
	for _, c := range keys {
		e := want[c]
		mac, _ := net.ParseMAC(e.mac)
		if key := e.mac + " " + e.underlay.String(); !haveFDB[key] {
			changes++
			if err := netlink.NeighSet(&netlink.Neigh{LinkIndex: idx, Family: unix.AF_BRIDGE,
				Flags: netlink.NTF_SELF, State: netlink.NUD_PERMANENT,
				HardwareAddr: mac, IP: e.underlay.AsSlice()}); err != nil {
				errs = append(errs, fmt.Errorf("peer %q: forwarding entry %s dst %s: %w", e.node, mac, e.underlay, err))
				continue
			}
		}
		if !haveNeigh[e.vtep] {
			changes++
			if err := netlink.NeighSet(&netlink.Neigh{LinkIndex: idx, Family: netlink.FAMILY_V4,
				State: netlink.NUD_PERMANENT, IP: e.vtep.AsSlice(), HardwareAddr: mac}); err != nil {
				errs = append(errs, fmt.Errorf("peer %q: neighbour %s lladdr %s: %w", e.node, e.vtep, mac, err))
				continue
			}
		}
		if !haveRoute[c] {
			changes++
			if err := netlink.RouteReplace(&netlink.Route{LinkIndex: idx, Dst: ipNet(c),
				Gw: e.vtep.AsSlice(), Flags: int(netlink.FLAG_ONLINK)}); err != nil {
				errs = append(errs, fmt.Errorf("peer %q: route %s via %s: %w", e.node, c, e.vtep, err))
				continue
			}
			f.log.Info("overlay peer programmed", "peer", e.node, "cidr", c, "underlay", e.underlay, "mac", e.mac)
		}
	}
	for _, del := range stale {
		changes++
		if err := del(); err != nil {
			errs = append(errs, err)
		}
	}
	if len(stale) > 0 {
		f.log.Info("overlay stale entries removed", "count", len(stale))
	}
	f.log.Debug("overlay peers synced", "peers", len(want), "changes", changes)
	return changes, errors.Join(append([]error{verr}, errs...)...)
}
