package svcproxy

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// Pod → service → pod on the same bridge, and why the node needs
// br_netfilter and hairpin mode.
//
// A pod calls a service IP: the frame goes to the bridge's MAC (the pod's
// gateway) and the node DNATs it to an endpoint. When that endpoint sits on
// the same bridge, its reply is addressed to the client pod's MAC, so the
// bridge switches it port to port and the IP layer never sees it: nothing
// turns the source back into the service IP, and the client drops a reply
// from an address it never called (a TCP reset; a hung UDP exchange).
// Masquerading every pod → service connection would fix that at the price
// of the client's address, which the services are promised to see. So the
// node turns on br_netfilter: with net.bridge.bridge-nf-call-iptables=1 (a
// per-network-namespace sysctl on this kernel), IPv4 frames switched by the
// bridge pass the IP netfilter hooks, where conntrack undoes the DNAT.
// Loading the module is global, the sysctl is this namespace's; netfabric's
// firewall.go already copes with what br_netfilter does to a FORWARD chain
// with a drop policy.
//
// With br_netfilter, the DNAT of a frame that came in from a bridge port
// happens in the bridge's own prerouting, and a destination on the same
// bridge is then *switched*, not routed. For a pod that reaches ITSELF
// through the service, that means out of the very port it came in, which a
// bridge refuses unless the port is in hairpin mode; and the pod would then
// get a packet whose source is its own address, which the kernel drops as
// a martian. Both were seen here (two pods on a bridge, one service: the
// self-connection hung until hairpin mode AND a masquerade were in place).
// So Sync turns hairpin mode on for every port of the pod bridge, and the
// table masquerades exactly the connections whose chosen endpoint is their
// source (kube-proxy's rule; see "hairpin" in render.go). Only a pod's own
// connections to itself lose the source address; nobody else's do. A pod
// becomes an endpoint through a change that makes the next Sync, which
// sets its port; netfabric could also set hairpin mode when it attaches a
// veth, so that a pod restarted with the same address never waits for it.

// ensureBridgeNetfilter loads br_netfilter if needed and makes bridged IPv4
// pass the IP hooks in the calling thread's network namespace.
func ensureBridgeNetfilter() error {
	const dir = "/proc/sys/net/bridge"
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		if out, err := exec.Command("modprobe", "br_netfilter").CombinedOutput(); err != nil {
			return fmt.Errorf("loading br_netfilter: %w: %s", err, strings.TrimSpace(string(out)))
		}
	}
	path := dir + "/bridge-nf-call-iptables"
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("reading %s: %w", path, err)
	}
	if strings.TrimSpace(string(b)) == "1" {
		return nil
	}
	if err := os.WriteFile(path, []byte("1\n"), 0o644); err != nil {
		return fmt.Errorf("enabling %s: %w", path, err)
	}
	return nil
}

// ensureHairpin turns hairpin mode on for every port of the bridge that
// lacks it, with one netlink dump, and returns how many it changed. A
// missing bridge is not an error (netfabric has not made it yet): zero.
func ensureHairpin(bridge string) (int, error) {
	br, err := netlink.LinkByName(bridge)
	var notFound netlink.LinkNotFoundError
	if errors.As(err, &notFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("finding bridge %s: %w", bridge, err)
	}
	req := nl.NewNetlinkRequest(unix.RTM_GETLINK, unix.NLM_F_DUMP)
	req.AddData(nl.NewIfInfomsg(unix.AF_BRIDGE))
	msgs, err := req.Execute(unix.NETLINK_ROUTE, 0)
	if err != nil {
		return 0, fmt.Errorf("listing the ports of bridge %s: %w", bridge, err)
	}
	changed := 0
	for _, m := range msgs {
		info := nl.DeserializeIfInfomsg(m)
		attrs, err := nl.ParseRouteAttr(m[info.Len():])
		if err != nil {
			return changed, fmt.Errorf("parsing the ports of bridge %s: %w", bridge, err)
		}
		master, hairpin := -1, false
		for _, a := range attrs {
			switch a.Attr.Type {
			case unix.IFLA_MASTER:
				if len(a.Value) >= 4 {
					master = int(nl.NativeEndian().Uint32(a.Value))
				}
			case unix.IFLA_PROTINFO | unix.NLA_F_NESTED:
				infos, err := nl.ParseRouteAttr(a.Value)
				if err != nil {
					return changed, fmt.Errorf("parsing the ports of bridge %s: %w", bridge, err)
				}
				for _, in := range infos {
					if in.Attr.Type == nl.IFLA_BRPORT_MODE && len(in.Value) > 0 {
						hairpin = in.Value[0] != 0
					}
				}
			}
		}
		if master != br.Attrs().Index || hairpin {
			continue
		}
		port := &netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: int(info.Index)}}
		if err := netlink.LinkSetHairpin(port, true); err != nil && !errors.Is(err, unix.ENODEV) {
			return changed, fmt.Errorf("turning hairpin mode on for port %d of bridge %s: %w", info.Index, bridge, err)
		}
		changed++
	}
	return changed, nil
}

// deleteUDPFlows removes the conntrack entries that still send a UDP
// frontend's traffic to a backend it no longer has (UDP has no connection
// end that would retire them; a client reusing its source port would keep
// talking to a gone endpoint for as long as it keeps sending).
func deleteUDPFlows(flows []udpFlow) (uint, error) {
	if len(flows) == 0 {
		return 0, nil
	}
	var filters []netlink.CustomConntrackFilter
	for _, f := range flows {
		cf := &netlink.ConntrackFilter{}
		if err := cf.AddProtocol(unix.IPPROTO_UDP); err != nil {
			return 0, err
		}
		if err := cf.AddPort(netlink.ConntrackOrigDstPort, f.Port); err != nil {
			return 0, err
		}
		if f.Frontend.IsValid() {
			if err := cf.AddIP(netlink.ConntrackOrigDstIP, net.IP(f.Frontend.AsSlice())); err != nil {
				return 0, err
			}
		}
		if err := cf.AddIP(netlink.ConntrackReplySrcIP, net.IP(f.Backend.AsSlice())); err != nil {
			return 0, err
		}
		filters = append(filters, cf)
	}
	n, err := netlink.ConntrackDeleteFilters(netlink.ConntrackTable, unix.AF_INET, filters...)
	if err != nil {
		return n, fmt.Errorf("deleting stale UDP conntrack entries: %w", err)
	}
	return n, nil
}
