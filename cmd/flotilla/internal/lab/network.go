package lab

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/flotilla-dev/flotilla/netfabric"
)

// netnsDir is where the lab's namespaces are named (netfabric manages it).
const netnsDir = netfabric.NetNSDir

// buildNetwork makes the switch, the server's and the nodes' namespaces,
// the veths between them and the host, and their addresses and routes.
func buildNetwork(ctx context.Context, log *slog.Logger, st *state) error {
	handles := map[string]netns.NsHandle{}
	defer func() {
		for _, h := range handles {
			h.Close()
		}
	}()
	for _, name := range st.netnsNames() {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("building the lab network: %w", err)
		}
		h, _, err := netfabric.EnsureNetNS(name)
		if err != nil {
			return err
		}
		handles[name] = h
	}
	sw := handles[st.SwitchNS]
	swh, err := netlink.NewHandleAt(sw)
	if err != nil {
		return fmt.Errorf("opening netlink in %s: %w", st.SwitchNS, err)
	}
	defer swh.Close()
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: switchPort}}
	if err := swh.LinkAdd(br); err != nil {
		return fmt.Errorf("adding bridge %s in %s: %w", switchPort, st.SwitchNS, err)
	}
	if err := swh.LinkSetUp(br); err != nil {
		return fmt.Errorf("setting bridge %s up: %w", switchPort, err)
	}
	// The switch only switches: keep bridged frames out of its (empty)
	// iptables, whatever br_netfilter's default is.
	if err := netfabric.InNetNSHandle(sw, func() error {
		for _, f := range []string{"bridge-nf-call-iptables", "bridge-nf-call-ip6tables", "bridge-nf-call-arptables"} {
			p := "/proc/sys/net/bridge/" + f
			if _, err := os.Stat(p); err == nil {
				if err := os.WriteFile(p, []byte("0\n"), 0o644); err != nil {
					return fmt.Errorf("writing %s: %w", p, err)
				}
			}
		}
		return nil
	}); err != nil {
		return fmt.Errorf("configuring the switch %s: %w", st.SwitchNS, err)
	}
	_, sub, _ := net.ParseCIDR(st.Subnet)
	ones, _ := sub.Mask.Size()

	// The host's leg: <Name>-host in the root namespace, "host" on the switch.
	if err := addVeth(swh, br, "host", netlink.NsFd(sw), st.HostLink, nil); err != nil {
		return err
	}
	host, err := netlink.LinkByName(st.HostLink)
	if err != nil {
		return fmt.Errorf("finding %s: %w", st.HostLink, err)
	}
	if err := netlink.AddrAdd(host, &netlink.Addr{IPNet: &net.IPNet{IP: st.HostIP, Mask: sub.Mask}}); err != nil {
		return fmt.Errorf("adding %s/%d to %s: %w", st.HostIP, ones, st.HostLink, err)
	}
	if err := netlink.LinkSetUp(host); err != nil {
		return fmt.Errorf("setting %s up: %w", st.HostLink, err)
	}

	type leg struct {
		port, ns string
		ip       net.IP
	}
	var legs []leg
	if st.ServerNS != "" {
		legs = append(legs, leg{serverNS, st.ServerNS, st.ServerIP})
	}
	if st.ClientNS != "" {
		legs = append(legs, leg{clientNS, st.ClientNS, st.ClientIP})
	}
	for _, n := range st.Nodes {
		legs = append(legs, leg{n.Name, n.NetNS, n.IP})
	}
	for _, g := range legs {
		h := handles[g.ns]
		if err := addVeth(swh, br, g.port, netlink.NsFd(sw), nodeIf, netlink.NsFd(h)); err != nil {
			return err
		}
		if err := configureLeg(h, g.ns, &net.IPNet{IP: g.ip, Mask: sub.Mask}, st.HostIP); err != nil {
			return err
		}
		log.Debug("lab namespace ready", "netns", g.ns, "ip", g.ip)
	}
	return nil
}

// addVeth creates a veth whose end port sits on the switch bridge and
// whose peer is called peer in peerNS (nil: the root namespace).
func addVeth(swh *netlink.Handle, br *netlink.Bridge, port string, sw netlink.NsFd, peer string, peerNS any) error {
	v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: port, Namespace: sw}, PeerName: peer}
	if peerNS != nil {
		v.PeerNamespace = peerNS
	}
	if err := netlink.LinkAdd(v); err != nil {
		return fmt.Errorf("adding veth %s (switch) – %s: %w", port, peer, err)
	}
	l, err := swh.LinkByName(port)
	if err != nil {
		return fmt.Errorf("finding switch port %s: %w", port, err)
	}
	if err := swh.LinkSetMaster(l, br); err != nil {
		return fmt.Errorf("attaching %s to the switch: %w", port, err)
	}
	if err := swh.LinkSetUp(l); err != nil {
		return fmt.Errorf("setting switch port %s up: %w", port, err)
	}
	return nil
}

// configureLeg brings lo and eth0 up in a namespace, with its address and
// a default route via the host.
func configureLeg(ns netns.NsHandle, name string, addr *net.IPNet, gw net.IP) error {
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return fmt.Errorf("opening netlink in %s: %w", name, err)
	}
	defer h.Close()
	lo, err := h.LinkByName("lo")
	if err == nil {
		err = h.LinkSetUp(lo)
	}
	if err != nil {
		return fmt.Errorf("setting lo up in %s: %w", name, err)
	}
	eth, err := h.LinkByName(nodeIf)
	if err != nil {
		return fmt.Errorf("finding %s in %s: %w", nodeIf, name, err)
	}
	if err := h.AddrAdd(eth, &netlink.Addr{IPNet: addr}); err != nil {
		return fmt.Errorf("adding %s to %s in %s: %w", addr, nodeIf, name, err)
	}
	if err := h.LinkSetUp(eth); err != nil {
		return fmt.Errorf("setting %s up in %s: %w", nodeIf, name, err)
	}
	if err := h.RouteAdd(&netlink.Route{LinkIndex: eth.Attrs().Index, Gw: gw}); err != nil {
		return fmt.Errorf("adding the default route via %s in %s: %w", gw, name, err)
	}
	return nil
}

// leftoverNetNS lists the namespaces that belong to lab name, "<name>-…":
// files in /run/netns and namespaces mounted there, hidden ones included.
func leftoverNetNS(name string) []string {
	out, _ := netfabric.ListNetNS(name + "-")
	return out
}

// netnsInode is the namespace identity behind /run/netns/name (0 if none),
// even one hidden under a mount another tool stacked on /run/netns.
func netnsInode(path string) uint64 { return netfabric.NetNSInode(path) }

// deleteNetNS unmounts and removes a named namespace wherever its mounts
// are (netfabric.DeleteNetNS); missing is fine.
func deleteNetNS(name string) error { return netfabric.DeleteNetNS(name) }

// deleteRootLinks deletes the root namespace's links named "<name>-…"
// (the host veth; its peer on the switch goes with it).
func deleteRootLinks(name string) error {
	links, err := netfabric.Dump(netlink.LinkList)
	if err != nil {
		return fmt.Errorf("listing links: %w", err)
	}
	var errs []error
	for _, l := range links {
		if strings.HasPrefix(l.Attrs().Name, name+"-") {
			if err := netlink.LinkDel(l); err != nil {
				var nf netlink.LinkNotFoundError
				if !errors.As(err, &nf) {
					errs = append(errs, fmt.Errorf("deleting link %s: %w", l.Attrs().Name, err))
				}
			}
		}
	}
	return errors.Join(errs...)
}

// setSwitchPort plugs a node's cable into the switch (up) or pulls it.
func setSwitchPort(st *state, node string, up bool) error {
	sw, err := netns.GetFromPath(filepath.Join(netnsDir, st.SwitchNS))
	if err != nil {
		return fmt.Errorf("opening the switch %s: %w", st.SwitchNS, err)
	}
	defer sw.Close()
	h, err := netlink.NewHandleAt(sw)
	if err != nil {
		return fmt.Errorf("opening netlink in %s: %w", st.SwitchNS, err)
	}
	defer h.Close()
	port, err := h.LinkByName(node)
	if err != nil {
		return fmt.Errorf("the switch port of %s: %w", node, err)
	}
	if up {
		err = h.LinkSetUp(port)
	} else {
		err = h.LinkSetDown(port)
	}
	if err != nil {
		return fmt.Errorf("setting the switch port of %s up=%v: %w", node, up, err)
	}
	return nil
}
