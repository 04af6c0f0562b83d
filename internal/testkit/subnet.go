package testkit

import (
	"crypto/rand"
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"testing"

	"github.com/vishvananda/netlink"
)

// FreeSubnet returns format (an IPv4 CIDR with one %d) filled with a random
// number from 1 to 250 such that no IPv4 route of the current network
// namespace lies inside it. Tests that share the host pick their pod CIDRs
// with it: the bridge of another test, or of a killed run, would take their
// pods' traffic, and netfabric's Init refuses such a CIDR.
func FreeSubnet(tb testing.TB, format string) *net.IPNet {
	tb.Helper()
	routes, err := netlink.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		tb.Fatalf("list routes: %v", err)
	}
	for range 50 {
		x, err := rand.Int(rand.Reader, big.NewInt(250))
		if err != nil {
			tb.Fatal(err)
		}
		p, err := netip.ParsePrefix(fmt.Sprintf(format, x.Int64()+1))
		if err != nil {
			tb.Fatalf("FreeSubnet(%q): %v", format, err)
		}
		if !routeInside(routes, p.Masked()) {
			return &net.IPNet{IP: p.Masked().Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), 32)}
		}
	}
	tb.Fatalf("FreeSubnet(%q): 50 random picks all hold a route of this host", format)
	return nil
}

// routeInside is netfabric.RoutesWithin's test for any link: testkit cannot
// import netfabric, whose own tests import testkit.
func routeInside(routes []netlink.Route, p netip.Prefix) bool {
	for _, r := range routes {
		if r.Dst == nil {
			continue
		}
		addr, ok := netip.AddrFromSlice(r.Dst.IP)
		bits, _ := r.Dst.Mask.Size()
		if ok && bits >= p.Bits() && p.Contains(addr.Unmap()) {
			return true
		}
	}
	return false
}
