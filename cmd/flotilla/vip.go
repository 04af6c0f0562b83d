package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"

	"github.com/flotilla-dev/flotilla/netfabric/lbip"
)

// The API VIP (--api-vip) is an address on the servers' network that the
// leader of the store's group holds, announced with gratuitous ARPs as it
// moves: kubeconfigs and join tokens name it, so users and agents reach a
// live server through one address. It needs the servers on one L2 segment.

// apiVIP holds the VIP on the link that carries the server's advertised
// address while this server leads.
type apiVIP struct {
	addr netip.Addr
	ann  *lbip.Announcer
	log  *slog.Logger
}

// newAPIVIP prepares the VIP on the link that carries advertise, and drops
// it if this server held it before a crash (the leader takes it).
func newAPIVIP(ctx context.Context, vip, advertise, name string, log *slog.Logger) (*apiVIP, error) {
	addr, err := netip.ParseAddr(vip)
	if err != nil || !addr.Is4() {
		return nil, fmt.Errorf("--api-vip %q is not an IPv4 address", vip)
	}
	link, err := linkOf(net.ParseIP(advertise))
	if err != nil {
		return nil, err
	}
	label := link + ":vip"
	if len(label) > 15 {
		label = "" // too long for a label: lbip tracks it in memory
	}
	ann, err := lbip.New(lbip.Config{NodeName: name, Link: link, Label: label, InPool: func(a netip.Addr) bool { return a == addr },
		Logger: log})
	if err != nil {
		return nil, err
	}
	if label != "" {
		ann.Release(ctx) //nolint:errcheck // best effort: a stale VIP from before a crash
	}
	return &apiVIP{addr: addr, ann: ann, log: log}, nil
}

// hold holds the VIP until ctx ends (this server stops leading), then
// releases it.
func (v *apiVIP) hold(ctx context.Context) {
	if err := v.ann.Hold(ctx, []netip.Addr{v.addr}); err != nil {
		v.log.Error("holding the API VIP", "vip", v.addr, "err", err)
	} else {
		v.log.Info("holding the API VIP as the leader", "vip", v.addr)
	}
	<-ctx.Done()
	if err := v.ann.Release(context.WithoutCancel(ctx)); err != nil {
		v.log.Error("releasing the API VIP", "vip", v.addr, "err", err)
	}
}

// linkOf is the name of the interface that carries ip.
func linkOf(ip net.IP) (string, error) {
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return "", fmt.Errorf("list this host's addresses: %w", err)
	}
	for _, a := range addrs {
		if a.IP.Equal(ip) {
			l, err := netlink.LinkByIndex(a.LinkIndex)
			if err != nil {
				return "", err
			}
			return l.Attrs().Name, nil
		}
	}
	return "", fmt.Errorf("no interface of this host carries %s (--advertise-addr): the API VIP is held on that interface", ip)
}
