package netfabric

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// podIfName is the pod's end of its veth, inside the pod namespace.
const podIfName = "eth0"

// shortKey is the 12-hex-digit name of a pod on this fabric: it names the
// netns, the host veth ("veth"+11 digits fits IFNAMSIZ) and the record file.
// The prefix is hashed in so that two fabrics on one host never collide.
func shortKey(prefix, uid string) string {
	h := sha256.Sum256([]byte(prefix + "\x00" + uid))
	return hex.EncodeToString(h[:])[:12]
}

// bridgeMAC is a stable, locally administered MAC for the bridge. Without
// it a Linux bridge takes the lowest MAC of its ports, which changes as pods
// come and go and leaves stale gateway entries in the pods' ARP caches.
func bridgeMAC(name string, pool netip.Prefix) net.HardwareAddr {
	h := sha256.Sum256([]byte("flotilla-bridge\x00" + name + "\x00" + pool.String()))
	mac := net.HardwareAddr(h[:6])
	mac[0] = (mac[0] | 0x02) &^ 0x01
	return mac
}

// ensureBridge makes the bridge exist, up, with the gateway address.
func ensureBridge(name string, mtu int, gw netip.Prefix) (netlink.Link, error) {
	link, err := netlink.LinkByName(name)
	var notFound netlink.LinkNotFoundError
	switch {
	case errors.As(err, &notFound):
		attrs := netlink.NewLinkAttrs()
		attrs.Name = name
		attrs.MTU = mtu
		attrs.HardwareAddr = bridgeMAC(name, gw.Masked())
		if err := netlink.LinkAdd(&netlink.Bridge{LinkAttrs: attrs}); err != nil && !errors.Is(err, unix.EEXIST) {
			return nil, fmt.Errorf("creating bridge %s: %w", name, err)
		}
		if link, err = netlink.LinkByName(name); err != nil {
			return nil, fmt.Errorf("finding bridge %s after creating it: %w", name, err)
		}
	case err != nil:
		return nil, fmt.Errorf("finding bridge %s: %w", name, err)
	}
	if _, ok := link.(*netlink.Bridge); !ok {
		return nil, fmt.Errorf("link %s exists and is a %s, not a bridge", name, link.Type())
	}
	if link.Attrs().MTU != mtu {
		if err := netlink.LinkSetMTU(link, mtu); err != nil {
			return nil, fmt.Errorf("setting MTU %d on bridge %s: %w", mtu, name, err)
		}
	}
	addr := &netlink.Addr{IPNet: ipNet(gw)}
	if err := netlink.AddrReplace(link, addr); err != nil {
		return nil, fmt.Errorf("adding gateway %s to bridge %s: %w", gw, name, err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return nil, fmt.Errorf("bringing bridge %s up: %w", name, err)
	}
	return link, nil
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// deleteLink deletes the named link in the root namespace; missing is fine.
func deleteLink(name string) error {
	link, err := netlink.LinkByName(name)
	var notFound netlink.LinkNotFoundError
	if errors.As(err, &notFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("finding link %s: %w", name, err)
	}
	if err := netlink.LinkDel(link); err != nil && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("deleting link %s: %w", name, err)
	}
	return nil
}

// podLink describes the wiring of one pod.
type podLink struct {
	hostVeth string
	bridge   netlink.Link
	mtu      int
	addr     netip.Prefix // pod IP with the pod CIDR's length
	gateway  netip.Addr
}

// ensureVeth wires the pod namespace ns to the bridge: a veth whose host end
// is attached and up, whose pod end is eth0 with the pod's address, lo and
// eth0 up, and a default route via the gateway. Each step checks first, so
// it repairs a half-made pod and is a no-op on a complete one.
func ensureVeth(ns netns.NsHandle, pl podLink) error {
	nh, err := netlink.NewHandleAt(ns)
	if err != nil {
		return fmt.Errorf("opening netlink in the pod netns: %w", err)
	}
	defer nh.Close()

	host, hostErr := netlink.LinkByName(pl.hostVeth)
	if hostErr == nil {
		if _, ok := host.(*netlink.Veth); !ok {
			return fmt.Errorf("link %s exists and is a %s, not our veth", pl.hostVeth, host.Type())
		}
	}
	eth0, podErr := nh.LinkByName(podIfName)
	if hostErr != nil || podErr != nil {
		// One end without the other (or neither): start the pair afresh.
		if hostErr == nil {
			if err := netlink.LinkDel(host); err != nil {
				return fmt.Errorf("deleting half-made veth %s: %w", pl.hostVeth, err)
			}
		}
		if podErr == nil {
			if err := nh.LinkDel(eth0); err != nil {
				return fmt.Errorf("deleting half-made %s in the pod netns: %w", podIfName, err)
			}
		}
		attrs := netlink.NewLinkAttrs()
		attrs.Name = pl.hostVeth
		attrs.MTU = pl.mtu
		veth := netlink.NewVeth(attrs)
		veth.PeerName = podIfName
		veth.PeerNamespace = netlink.NsFd(int(ns))
		if err := netlink.LinkAdd(veth); err != nil {
			return fmt.Errorf("creating veth %s: %w", pl.hostVeth, err)
		}
		if host, err = netlink.LinkByName(pl.hostVeth); err != nil {
			return fmt.Errorf("finding veth %s after creating it: %w", pl.hostVeth, err)
		}
		if eth0, err = nh.LinkByName(podIfName); err != nil {
			return fmt.Errorf("finding %s in the pod netns after creating it: %w", podIfName, err)
		}
	}
	if host.Attrs().MasterIndex != pl.bridge.Attrs().Index {
		if err := netlink.LinkSetMaster(host, pl.bridge); err != nil {
			return fmt.Errorf("attaching %s to bridge %s: %w", pl.hostVeth, pl.bridge.Attrs().Name, err)
		}
	}
	if err := netlink.LinkSetUp(host); err != nil {
		return fmt.Errorf("bringing %s up: %w", pl.hostVeth, err)
	}

	lo, err := nh.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("finding lo in the pod netns: %w", err)
	}
	if err := nh.LinkSetUp(lo); err != nil {
		return fmt.Errorf("bringing lo up in the pod netns: %w", err)
	}
	addrs, err := Dump(func() ([]netlink.Addr, error) { return nh.AddrList(eth0, netlink.FAMILY_V4) })
	if err != nil {
		return fmt.Errorf("listing addresses of %s in the pod netns: %w", podIfName, err)
	}
	want := ipNet(pl.addr)
	for _, a := range addrs {
		if !a.IPNet.IP.Equal(want.IP) || a.IPNet.String() != want.String() {
			if err := nh.AddrDel(eth0, &a); err != nil {
				return fmt.Errorf("removing stale address %s from %s: %w", a.IPNet, podIfName, err)
			}
		}
	}
	if err := nh.AddrReplace(eth0, &netlink.Addr{IPNet: want}); err != nil {
		return fmt.Errorf("adding %s to %s in the pod netns: %w", pl.addr, podIfName, err)
	}
	if err := nh.LinkSetUp(eth0); err != nil {
		return fmt.Errorf("bringing %s up in the pod netns: %w", podIfName, err)
	}
	route := &netlink.Route{
		LinkIndex: eth0.Attrs().Index,
		Dst:       &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)},
		Gw:        pl.gateway.AsSlice(),
	}
	if err := nh.RouteReplace(route); err != nil {
		return fmt.Errorf("adding default route via %s in the pod netns: %w", pl.gateway, err)
	}
	return nil
}

// InNetNS runs fn on a locked OS thread switched into the network
// namespace at path, then switches back. Sockets fn opens stay in that
// namespace after it returns, and processes it starts run there; goroutines
// it starts do not (they run on other threads). If switching back fails the
// thread stays locked and dies with its goroutine, rather than running
// other goroutines in the wrong namespace.
func InNetNS(path string, fn func() error) error {
	target, err := netns.GetFromPath(path)
	if err != nil {
		return fmt.Errorf("opening netns %s: %w", path, err)
	}
	defer target.Close()
	return InNetNSHandle(target, fn)
}

// InNetNSHandle is InNetNS for an open namespace handle.
func InNetNSHandle(ns netns.NsHandle, fn func() error) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			done <- fmt.Errorf("getting the current netns: %w", err)
			return
		}
		defer orig.Close()
		if err := netns.Set(ns); err != nil {
			runtime.UnlockOSThread()
			done <- fmt.Errorf("entering netns: %w", err)
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			done <- errors.Join(ferr, fmt.Errorf("returning from netns: %w", err))
			return // the thread stays locked and is discarded
		}
		runtime.UnlockOSThread()
		done <- ferr
	}()
	return <-done
}

// RoutesWithin lists the IPv4 routes of the main table that lie inside
// pool (as specific as pool or more) and do not go out through the link
// named own, each as "PREFIX dev NAME" (the arguments of `ip route del`). Such a route takes traffic for
// addresses of pool away from own: a pod CIDR that overlaps one would give
// pods that the host cannot reach.
func RoutesWithin(pool netip.Prefix, own string) ([]string, error) {
	routes, err := netlink.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		return nil, fmt.Errorf("listing routes: %w", err)
	}
	ownIndex := -1
	if link, err := netlink.LinkByName(own); err == nil {
		ownIndex = link.Attrs().Index
	}
	var found []string
	for _, r := range routes {
		if r.Dst == nil || r.LinkIndex == ownIndex {
			continue
		}
		dst, err := prefixOf(r.Dst)
		if err != nil || dst.Bits() < pool.Bits() || !pool.Contains(dst.Addr()) {
			continue
		}
		desc := dst.String() // a multipath route names no link
		if r.LinkIndex > 0 {
			if link, err := netlink.LinkByIndex(r.LinkIndex); err == nil {
				desc += " dev " + link.Attrs().Name
			}
		}
		found = append(found, desc)
	}
	return found, nil
}
