// Package lbip announces LoadBalancer Service addresses on the node network,
// the way an L2 load balancer (MetalLB's ARP mode, kube-vip) does: each
// address is held by exactly one live node, chosen by rendezvous hashing
// over the gossip members every node sees, so all nodes agree without
// talking; the holder puts the address on its node interface (the kernel
// then answers ARP for it) and sends gratuitous ARP so that neighbours
// forget the previous holder at once. When the holder dies, gossip drops it
// from every member's list, the next node in hash order takes the address
// over. The service proxy (netfabric/svcproxy) forwards what arrives.
package lbip

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/flotilla-dev/flotilla/netfabric"

	"github.com/mdlayher/arp"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/flotilla-dev/flotilla/netfabric/svcview"
)

// labelSuffix marks the addresses this package added (the IFA_LABEL of an
// address is "<link>:<suffix>"), so that a restarted agent finds them.
const labelSuffix = ":lb"

// Owner returns the node that holds ip among nodes ("" when there is
// none): the node with the highest hash of (ip, node), so that removing a
// node moves only the addresses it held.
func Owner(ip netip.Addr, nodes []string) string {
	best, bestScore := "", uint64(0)
	for _, n := range nodes {
		h := fnv.New64a()
		h.Write(ip.AsSlice())
		h.Write([]byte{0})
		h.Write([]byte(n))
		if s := h.Sum64(); best == "" || s > bestScore || s == bestScore && n < best {
			best, bestScore = n, s
		}
	}
	return best
}

// Config configures an Announcer.
type Config struct {
	// NodeName is this node's name, as in gossip. Required.
	NodeName string
	// Link is the interface that carries the node address, where held
	// addresses are added and announced. Required.
	Link string
	// InPool says whether an address is in the cluster's load balancer
	// pool: the only addresses the node holds. An address outside it found
	// in a Service's status (admission refuses such writes; this is the
	// node's own check) is never held nor announced. Required.
	InPool func(netip.Addr) bool
	// Label marks the addresses this Announcer holds on Link (IFA_LABEL:
	// Link's name, a colon and a suffix; at most 15 bytes). Default
	// Link+":lb". Announcers with different labels on one link (a node's
	// load balancer addresses and a server's API VIP) leave each other's
	// addresses alone.
	Label string
	// GratuitousARPs is how many gratuitous ARPs announce a newly held
	// address (200 ms apart). Default 3.
	GratuitousARPs int
	// Logger; default discard.
	Logger *slog.Logger
}

// Announcer holds this node's share of the LoadBalancer addresses.
type Announcer struct {
	cfg Config
	log *slog.Logger

	mu   sync.Mutex
	held map[netip.Addr]bool
	// refused are the addresses outside the pool already logged.
	refused map[netip.Addr]bool
}

// New returns an Announcer; it holds nothing until Sync.
func New(cfg Config) (*Announcer, error) {
	if cfg.NodeName == "" || cfg.Link == "" || cfg.InPool == nil {
		return nil, errors.New("lbip: NodeName, Link and InPool are required")
	}
	if cfg.GratuitousARPs <= 0 {
		cfg.GratuitousARPs = 3
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Announcer{cfg: cfg, log: cfg.Logger.With("subsystem", "lbip"), held: map[netip.Addr]bool{}, refused: map[netip.Addr]bool{}}, nil
}

// Want returns the LoadBalancer addresses of snap that this node holds
// when alive are the live nodes (this one included or not).
func Want(snap *svcview.Snapshot, alive []string, self string) []netip.Addr {
	var out []netip.Addr
	seen := map[netip.Addr]bool{}
	for _, svc := range snap.Services {
		for _, ip := range svcview.LoadBalancerIPs(svc) {
			if ip.Is4() && !seen[ip] && Owner(ip, alive) == self {
				seen[ip] = true
				out = append(out, ip)
			}
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

// Sync makes the link carry exactly the addresses this node holds now, and
// announces the ones it just took. alive are the live members' node names
// (agents only: they run the proxy).
func (a *Announcer) Sync(ctx context.Context, snap *svcview.Snapshot, alive []string) error {
	var want []netip.Addr
	for _, ip := range Want(snap, alive, a.cfg.NodeName) {
		if a.cfg.InPool(ip) {
			want = append(want, ip)
			continue
		}
		a.mu.Lock()
		if !a.refused[ip] {
			a.refused[ip] = true
			a.log.Warn("not holding a load balancer address outside the pool", "ip", ip)
		}
		a.mu.Unlock()
	}
	return a.set(ctx, want)
}

// Hold makes the link carry exactly ips (those in the pool) and announces
// the ones it just took: for an address one member holds at a time, as
// the API server's VIP that the leader holds.
func (a *Announcer) Hold(ctx context.Context, ips []netip.Addr) error {
	var want []netip.Addr
	for _, ip := range ips {
		if a.cfg.InPool(ip) {
			want = append(want, ip)
		}
	}
	return a.set(ctx, want)
}

// Release removes every address this node holds (a polite shutdown: the
// other nodes take them over as soon as gossip says this one left).
func (a *Announcer) Release(ctx context.Context) error { return a.set(ctx, nil) }

func (a *Announcer) set(ctx context.Context, want []netip.Addr) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	link, err := netlink.LinkByName(a.cfg.Link)
	if err != nil {
		return fmt.Errorf("lbip: link %s: %w", a.cfg.Link, err)
	}
	have, err := a.current(link)
	if err != nil {
		return err
	}
	wantSet := map[netip.Addr]bool{}
	for _, ip := range want {
		wantSet[ip] = true
	}
	var errs []error
	for ip := range have {
		if !wantSet[ip] {
			if err := netlink.AddrDel(link, a.addr(ip)); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
				errs = append(errs, fmt.Errorf("lbip: release %s: %w", ip, err))
				continue
			}
			a.log.Info("released load balancer address", "ip", ip, "link", a.cfg.Link)
		}
	}
	var added []netip.Addr
	for _, ip := range want {
		if have[ip] {
			continue
		}
		if err := netlink.AddrReplace(link, a.addr(ip)); err != nil {
			errs = append(errs, fmt.Errorf("lbip: hold %s on %s: %w", ip, a.cfg.Link, err))
			continue
		}
		added = append(added, ip)
		a.log.Info("holding load balancer address", "ip", ip, "link", a.cfg.Link)
	}
	a.held = wantSet
	if len(added) > 0 {
		a.announce(context.WithoutCancel(ctx), link, added)
	}
	return errors.Join(errs...)
}

func (a *Announcer) label() string {
	l := a.cfg.Link + labelSuffix
	if a.cfg.Label != "" {
		l = a.cfg.Label
	}
	if len(l) > unix.IFNAMSIZ-1 {
		return "" // too long for a label: tracked in memory only
	}
	return l
}

func (a *Announcer) addr(ip netip.Addr) *netlink.Addr {
	return &netlink.Addr{IPNet: &net.IPNet{IP: ip.AsSlice(), Mask: net.CIDRMask(32, 32)}, Label: a.label(),
		Flags: unix.IFA_F_NOPREFIXROUTE}
}

// current is what the link carries of ours: labelled addresses, plus the
// ones held in memory.
func (a *Announcer) current(link netlink.Link) (map[netip.Addr]bool, error) {
	addrs, err := netfabric.Dump(func() ([]netlink.Addr, error) { return netlink.AddrList(link, netlink.FAMILY_V4) })
	if err != nil {
		return nil, fmt.Errorf("lbip: list addresses of %s: %w", a.cfg.Link, err)
	}
	have := map[netip.Addr]bool{}
	label := a.label()
	for _, ad := range addrs {
		ip, ok := netip.AddrFromSlice(ad.IP.To4())
		if !ok {
			continue
		}
		ones, _ := ad.Mask.Size()
		if ones == 32 && (label != "" && ad.Label == label || a.held[ip]) {
			have[ip] = true
		}
	}
	return have, nil
}

// announce sends gratuitous ARPs for ips so that hosts and switches on the
// node network send to this node now: the first at once, the repeats from
// a goroutine (on the socket opened here, so in this network namespace).
func (a *Announcer) announce(ctx context.Context, link netlink.Link, ips []netip.Addr) {
	ifi, err := net.InterfaceByIndex(link.Attrs().Index)
	if err != nil {
		a.log.Warn("gratuitous ARP: no interface", "link", a.cfg.Link, "err", err)
		return
	}
	c, err := arp.Dial(ifi)
	if err != nil {
		a.log.Warn("gratuitous ARP: cannot open a packet socket", "link", a.cfg.Link, "err", err)
		return
	}
	bcast := net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	send := func() {
		for _, ip := range ips {
			p, err := arp.NewPacket(arp.OperationRequest, ifi.HardwareAddr, ip, bcast, ip)
			if err == nil {
				err = c.WriteTo(p, bcast)
			}
			if err != nil {
				a.log.Warn("gratuitous ARP failed", "ip", ip, "err", err)
			}
		}
	}
	send()
	go func() {
		defer c.Close()
		for range a.cfg.GratuitousARPs - 1 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(200 * time.Millisecond):
			}
			send()
		}
	}()
}
