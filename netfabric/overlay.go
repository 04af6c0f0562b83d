package netfabric

// The overlay: one flat pod network across nodes, flannel's "vxlan" backend.
//
// Each node has one VXLAN device (default "flotilla.vx", VNI 1, UDP port
// 8472) whose local address is the node's underlay address. Learning is
// off: every forwarding decision comes from entries SetPeers programs from
// the peer table (gossip), so the overlay needs neither multicast nor the
// API server. For each peer P with pod CIDR C:
//
//	route  C via VTEP(P) dev flotilla.vx onlink      (L3: which tunnel)
//	neigh  VTEP(P) lladdr MAC(P) dev flotilla.vx PERMANENT   (no ARP)
//	fdb    MAC(P) dst underlay(P) dev flotilla.vx self PERMANENT (where)
//
// VTEP(P), the device's address, is the network address of P's pod CIDR as
// a /32 (10.244.3.0 for 10.244.3.0/24), as flannel does: IPAM never hands
// it out (nor the gateway .1 on the bridge), it needs no extra range, and
// any node can compute it from the pod CIDR alone. MAC(P) is derived from
// the pod CIDR (see VTEPMACFor), so it is stable across agent restarts and
// reboots without persisting anything, and a peer's MAC can be recomputed
// when gossip does not carry it.
//
// Pod → pod across nodes is routed, never NATed: the masquerade in
// firewall.go applies only to destinations outside the cluster CIDR, and
// every peer pod CIDR lies inside it. The packet leaves the pod with its own
// source address and arrives with it.
//
// MTU: VXLAN over IPv4 adds 50 bytes (outer IPv4 20 + UDP 8 + VXLAN 8 +
// inner Ethernet 14), so the device's MTU defaults to the underlay's minus
// 50, and the pods' veths and the bridge must not exceed it: the agent
// passes Config.MTU = OverlayMTU(ovCfg) to New (1450 on a 1500 link), and
// InitOverlay refuses a larger Config.MTU.
//
// Namespaces: every call acts on the network namespace of the calling OS
// thread, so the fabric works unchanged in an agent started with
// `nsenter --net=/run/netns/<node>` (the lab), where every thread of the
// process is in the node's namespace.

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Overlay defaults.
const (
	// DefaultOverlayDevice names the VXLAN device.
	DefaultOverlayDevice = "flotilla.vx"
	// DefaultVNI is the VXLAN network identifier (flannel's default too).
	DefaultVNI = 1
	// DefaultVXLANPort is the UDP port of the tunnels: 8472, the port
	// flannel and the Linux kernel's historic default use, not IANA's 4789,
	// so it can sit beside a host's other VXLAN users (which take 4789).
	// Every node of a cluster must use the same port, and the node network
	// must let UDP to it through.
	DefaultVXLANPort = 8472
	// VXLANOverhead is what VXLAN over IPv4 adds to an inner packet.
	VXLANOverhead = 50
)

// Peer is another node of the overlay, as gossip tells it.
type Peer struct {
	// Node is the peer's name, for logs and errors.
	Node string
	// UnderlayIP is the peer's address on the node network (its VXLAN
	// local address). IPv4.
	UnderlayIP net.IP
	// PodCIDR is the peer's pod range; it must lie inside the cluster CIDR
	// and overlap no other node's.
	PodCIDR *net.IPNet
	// VTEPMAC is the MAC of the peer's VXLAN device (its VTEPMAC()). When
	// nil, VTEPMACFor(PodCIDR) is assumed: what every Flotilla node uses.
	VTEPMAC net.HardwareAddr
}

// OverlayConfig configures the node's VXLAN device. Zero values mean the
// documented default.
type OverlayConfig struct {
	// UnderlayIP is this node's IPv4 address on the node network, the
	// tunnels' local address; it must be an address of this namespace.
	// Required.
	UnderlayIP net.IP
	// UnderlayDevice, when set, binds the VXLAN device to that link (and
	// its MTU is the one the default MTU derives from). Optional: without
	// it the link holding UnderlayIP gives the MTU and routing picks the
	// way out.
	UnderlayDevice string
	// Device names the VXLAN device. Default DefaultOverlayDevice.
	Device string
	// VNI is the VXLAN network identifier. Default DefaultVNI.
	VNI int
	// Port is the UDP port of the tunnels. Default DefaultVXLANPort (8472).
	Port int
	// MTU of the VXLAN device. Default: the underlay link's MTU minus
	// VXLANOverhead (1450 on a 1500 link).
	MTU int
}

// overlayState is the Fabric's overlay half; its zero value means
// InitOverlay has not run.
type overlayState struct {
	mu    sync.Mutex
	cfg   OverlayConfig // with defaults applied; Device == "" before InitOverlay
	peers []Peer        // the last desired set, replayed if the device is recreated
}

// VTEPMACFor is the VXLAN device MAC of the node owning podCIDR: a locally
// administered unicast address hashed from the CIDR, so stable across
// restarts and distinct per node.
func VTEPMACFor(podCIDR *net.IPNet) net.HardwareAddr {
	p, err := prefixOf(podCIDR)
	if err != nil {
		return nil
	}
	h := sha256.Sum256([]byte("flotilla-vtep\x00" + p.String()))
	mac := net.HardwareAddr(h[:6])
	mac[0] = (mac[0] | 0x02) &^ 0x01
	return mac
}

// VTEPAddrFor is the VXLAN device address of the node owning podCIDR: the
// CIDR's network address.
func VTEPAddrFor(podCIDR *net.IPNet) net.IP {
	p, err := prefixOf(podCIDR)
	if err != nil {
		return nil
	}
	return p.Masked().Addr().AsSlice()
}

// VTEPMAC is this node's VXLAN device MAC, the value to publish in gossip.
// It depends only on the pod CIDR, so it is known before InitOverlay.
func (f *Fabric) VTEPMAC() net.HardwareAddr { return VTEPMACFor(f.cfg.PodCIDR) }

// VTEPAddr is this node's VXLAN device address (its pod CIDR's network
// address); peers compute it from the pod CIDR, it is not gossiped.
func (f *Fabric) VTEPAddr() net.IP { return VTEPAddrFor(f.cfg.PodCIDR) }

// withDefaults validates cfg and fills in its defaults, MTU included.
func (cfg OverlayConfig) withDefaults() (OverlayConfig, error) {
	ip := cfg.UnderlayIP.To4()
	if ip == nil {
		return cfg, fmt.Errorf("OverlayConfig.UnderlayIP %v: an IPv4 address is required", cfg.UnderlayIP)
	}
	cfg.UnderlayIP = ip
	if cfg.Device == "" {
		cfg.Device = DefaultOverlayDevice
	}
	if len(cfg.Device) > 15 {
		return cfg, fmt.Errorf("OverlayConfig.Device %q: longer than 15 bytes", cfg.Device)
	}
	if cfg.VNI == 0 {
		cfg.VNI = DefaultVNI
	}
	if cfg.VNI < 0 || cfg.VNI >= 1<<24 {
		return cfg, fmt.Errorf("OverlayConfig.VNI %d: out of range", cfg.VNI)
	}
	if cfg.Port == 0 {
		cfg.Port = DefaultVXLANPort
	}
	if cfg.Port < 0 || cfg.Port > 65535 {
		return cfg, fmt.Errorf("OverlayConfig.Port %d: out of range", cfg.Port)
	}
	if cfg.MTU == 0 {
		under, err := underlayLink(cfg)
		if err != nil {
			return cfg, err
		}
		cfg.MTU = under.Attrs().MTU - VXLANOverhead
	}
	if cfg.MTU < 576 || cfg.MTU > 65535 {
		return cfg, fmt.Errorf("OverlayConfig.MTU %d: out of range", cfg.MTU)
	}
	return cfg, nil
}

// underlayLink is UnderlayDevice, or else the link holding UnderlayIP.
func underlayLink(cfg OverlayConfig) (netlink.Link, error) {
	if cfg.UnderlayDevice != "" {
		l, err := netlink.LinkByName(cfg.UnderlayDevice)
		if err != nil {
			return nil, fmt.Errorf("finding underlay device %s: %w", cfg.UnderlayDevice, err)
		}
		return l, nil
	}
	return LinkOf(cfg.UnderlayIP)
}

// LinkOf is the link of this network namespace that carries ip (the
// overlay's underlay, the link load balancer addresses are announced on).
func LinkOf(ip net.IP) (netlink.Link, error) {
	addrs, err := Dump(func() ([]netlink.Addr, error) { return netlink.AddrList(nil, netlink.FAMILY_V4) })
	if err != nil {
		return nil, fmt.Errorf("listing addresses: %w", err)
	}
	for _, a := range addrs {
		if a.IP.Equal(ip) {
			l, err := netlink.LinkByIndex(a.LinkIndex)
			if err != nil {
				return nil, fmt.Errorf("finding the link of address %s: %w", ip, err)
			}
			return l, nil
		}
	}
	return nil, fmt.Errorf("address %s is not an address of this network namespace", ip)
}

// OverlayMTU is the MTU InitOverlay(cfg) gives the VXLAN device: cfg.MTU,
// or the underlay link's MTU minus VXLANOverhead. The agent passes it as
// Config.MTU to New, so that pods' packets fit the tunnel.
func OverlayMTU(cfg OverlayConfig) (int, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return 0, fmt.Errorf("netfabric: %w", err)
	}
	return cfg.MTU, nil
}

// InitOverlay creates or repairs this node's VXLAN device: learning off,
// MAC VTEPMAC(), address VTEPAddr()/32, up. A device whose VNI, port,
// local address or binding differs is recreated, and the peers of the last
// SetPeers programmed again. It fails if Config.MTU (the pods' MTU) exceeds
// the overlay's. Idempotent; run it at every agent start, after Init.
func (f *Fabric) InitOverlay(ctx context.Context, cfg OverlayConfig) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("netfabric overlay: %w", err)
	}
	cfg, err := cfg.withDefaults()
	if err != nil {
		return fmt.Errorf("netfabric overlay: %w", err)
	}
	if f.cfg.MTU > cfg.MTU {
		return fmt.Errorf("netfabric overlay: pod MTU (Config.MTU) %d exceeds the overlay MTU %d: pass Config.MTU = OverlayMTU(...) = %d to New",
			f.cfg.MTU, cfg.MTU, cfg.MTU)
	}
	f.ov.mu.Lock()
	defer f.ov.mu.Unlock()
	if f.ov.cfg.Device != "" && f.ov.cfg.Device != cfg.Device {
		if err := deleteLink(f.ov.cfg.Device); err != nil {
			return fmt.Errorf("netfabric overlay: removing the previous device: %w", err)
		}
	}
	recreated, err := f.ensureVXLAN(cfg)
	if err != nil {
		return fmt.Errorf("netfabric overlay: %w", err)
	}
	f.ov.cfg = cfg
	f.log.Info("overlay ready", "device", cfg.Device, "vni", cfg.VNI, "port", cfg.Port,
		"local", cfg.UnderlayIP, "mtu", cfg.MTU, "vtep", f.VTEPAddr(), "mac", f.VTEPMAC(), "recreated", recreated)
	if recreated && f.ov.peers != nil {
		if _, err := f.syncPeers(f.ov.peers); err != nil {
			return fmt.Errorf("netfabric overlay: reprogramming peers: %w", err)
		}
	}
	return nil
}

// ensureVXLAN makes the device match cfg; recreated says whether it was
// (re)created, losing its routes and entries.
func (f *Fabric) ensureVXLAN(cfg OverlayConfig) (recreated bool, err error) {
	var bindIndex int
	if cfg.UnderlayDevice != "" {
		l, err := underlayLink(cfg)
		if err != nil {
			return false, err
		}
		bindIndex = l.Attrs().Index
	}
	mac := f.VTEPMAC()
	link, err := netlink.LinkByName(cfg.Device)
	var notFound netlink.LinkNotFoundError
	switch {
	case errors.As(err, &notFound):
		link = nil
	case err != nil:
		return false, fmt.Errorf("finding %s: %w", cfg.Device, err)
	}
	if link != nil {
		vx, ok := link.(*netlink.Vxlan)
		if !ok {
			return false, fmt.Errorf("link %s exists and is a %s, not a vxlan", cfg.Device, link.Type())
		}
		if vx.VxlanId != cfg.VNI || vx.Port != cfg.Port || !vx.SrcAddr.Equal(cfg.UnderlayIP) ||
			vx.VtepDevIndex != bindIndex || vx.Learning {
			f.log.Info("overlay device differs from the configuration; recreating", "device", cfg.Device,
				"vni", vx.VxlanId, "port", vx.Port, "local", vx.SrcAddr, "bound", vx.VtepDevIndex)
			if err := netlink.LinkDel(link); err != nil {
				return false, fmt.Errorf("deleting outdated %s: %w", cfg.Device, err)
			}
			link = nil
		}
	}
	if link == nil {
		attrs := netlink.NewLinkAttrs()
		attrs.Name = cfg.Device
		attrs.MTU = cfg.MTU
		attrs.HardwareAddr = mac
		vx := &netlink.Vxlan{LinkAttrs: attrs, VxlanId: cfg.VNI, VtepDevIndex: bindIndex,
			SrcAddr: cfg.UnderlayIP, Port: cfg.Port, Learning: false}
		if err := netlink.LinkAdd(vx); err != nil {
			return false, fmt.Errorf("creating vxlan %s (vni %d, port %d): %w", cfg.Device, cfg.VNI, cfg.Port, err)
		}
		if link, err = netlink.LinkByName(cfg.Device); err != nil {
			return false, fmt.Errorf("finding %s after creating it: %w", cfg.Device, err)
		}
		recreated = true
	}
	if link.Attrs().MTU != cfg.MTU {
		if err := netlink.LinkSetMTU(link, cfg.MTU); err != nil {
			return recreated, fmt.Errorf("setting MTU %d on %s: %w", cfg.MTU, cfg.Device, err)
		}
	}
	if link.Attrs().HardwareAddr.String() != mac.String() {
		if err := netlink.LinkSetHardwareAddr(link, mac); err != nil {
			return recreated, fmt.Errorf("setting MAC %s on %s: %w", mac, cfg.Device, err)
		}
	}
	want := netip.PrefixFrom(f.pool.Masked().Addr(), 32)
	addrs, err := Dump(func() ([]netlink.Addr, error) { return netlink.AddrList(link, netlink.FAMILY_V4) })
	if err != nil {
		return recreated, fmt.Errorf("listing addresses of %s: %w", cfg.Device, err)
	}
	for _, a := range addrs {
		if a.IPNet.String() != want.String() {
			if err := netlink.AddrDel(link, &a); err != nil {
				return recreated, fmt.Errorf("removing stale address %s from %s: %w", a.IPNet, cfg.Device, err)
			}
		}
	}
	if err := netlink.AddrReplace(link, &netlink.Addr{IPNet: ipNet(want)}); err != nil {
		return recreated, fmt.Errorf("adding %s to %s: %w", want, cfg.Device, err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return recreated, fmt.Errorf("bringing %s up: %w", cfg.Device, err)
	}
	return recreated, nil
}

// destroyOverlay deletes the VXLAN device if InitOverlay made one (with
// it go every route, neighbour and forwarding entry of the peers).
func (f *Fabric) destroyOverlay() error {
	f.ov.mu.Lock()
	defer f.ov.mu.Unlock()
	if f.ov.cfg.Device == "" {
		return nil
	}
	if err := deleteLink(f.ov.cfg.Device); err != nil {
		return err
	}
	f.ov.cfg, f.ov.peers = OverlayConfig{}, nil
	return nil
}

// isNotFound reports whether err says a netlink object is already gone.
func isNotFound(err error) bool {
	return errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ESRCH) || errors.Is(err, unix.ENODEV)
}
