// Package ipalloc allocates Services' cluster IPs and node ports, and
// LoadBalancer addresses: the pure rules, with no I/O. Allocator.Admit
// completes and checks the Services one commit writes (gitsync calls it,
// through AdmitGit, inside the apply transaction); Pool is the set of
// addresses the loadbalancer controller hands out.
//
// An address or port, once given, is kept: Git never sets a cluster IP or
// a node port it did not ask for, the cluster does, so an update keeps the
// stored value and an unchanged commit is never re-admitted at all. Every
// decision depends only on its inputs, so the same commit over the same
// store gives the same addresses.
package ipalloc

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Defaults of Config.
const (
	DefaultServiceCIDR   = "10.96.0.0/16"
	DefaultNodePortRange = "30000-32767"
)

// Config configures an Allocator. Zero values mean the defaults.
type Config struct {
	// ServiceCIDR is where Services' cluster IPs come from (server flag
	// --service-cidr). Default 10.96.0.0/16: 65,534 services. It must not
	// overlap the cluster (pod) CIDR nor the nodes' networks. Changing it
	// later keeps the addresses already given; new ones come from the new
	// range.
	ServiceCIDR netip.Prefix
	// NodePortRange is where node ports come from (server flag
	// --service-node-port-range). Default 30000-32767, as in Kubernetes;
	// the range must not hold ports the nodes themselves listen on.
	NodePortRange PortRange
}

// PortRange is an inclusive range of ports; the zero value means the
// default.
type PortRange struct{ First, Last int32 }

// String is "30000-32767".
func (r PortRange) String() string { return fmt.Sprintf("%d-%d", r.First, r.Last) }

// Contains reports whether p is in the range.
func (r PortRange) Contains(p int32) bool { return p >= r.First && p <= r.Last }

// ParsePortRange parses the value of --service-node-port-range: "FIRST-LAST"
// (or "FIRST+SIZE", as Kubernetes also accepts), ports 1-65535.
func ParsePortRange(s string) (PortRange, error) {
	bad := func(why string) (PortRange, error) {
		return PortRange{}, fmt.Errorf("--service-node-port-range %q: %s (want FIRST-LAST, such as %s)", s, why, DefaultNodePortRange)
	}
	t := strings.TrimSpace(s)
	sep := strings.IndexAny(t, "-+")
	if sep < 0 {
		return bad("no '-' between the first and last port")
	}
	first, err := strconv.ParseInt(strings.TrimSpace(t[:sep]), 10, 32)
	if err != nil {
		return bad("the first port is not a number")
	}
	second, err := strconv.ParseInt(strings.TrimSpace(t[sep+1:]), 10, 32)
	if err != nil {
		return bad("the last port is not a number")
	}
	last := second
	if t[sep] == '+' {
		if second < 1 {
			return bad("the size must be at least 1")
		}
		last = first + second - 1
	}
	r := PortRange{First: int32(first), Last: int32(last)}
	if err := r.validate(); err != nil {
		return bad(err.Error())
	}
	return r, nil
}

func (r PortRange) validate() error {
	switch {
	case r.First < 1 || r.Last > 65535:
		return fmt.Errorf("ports must be within 1-65535")
	case r.First > r.Last:
		return fmt.Errorf("the first port %d is above the last %d", r.First, r.Last)
	}
	return nil
}

// ParseServiceCIDR parses the value of --service-cidr: an IPv4 or IPv6
// prefix such as 10.96.0.0/16, without host bits.
func ParseServiceCIDR(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(strings.TrimSpace(s))
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("--service-cidr %q is not a CIDR (want one such as %s)", s, DefaultServiceCIDR)
	}
	if err := checkServiceCIDR(p); err != nil {
		return netip.Prefix{}, err
	}
	return p, nil
}

func checkServiceCIDR(p netip.Prefix) error {
	if !p.IsValid() {
		return fmt.Errorf("--service-cidr %s is not a valid CIDR", p)
	}
	if p.Addr().Is4In6() {
		return fmt.Errorf("--service-cidr %s is an IPv4-mapped IPv6 range: write the IPv4 range in dotted form", p)
	}
	if m := p.Masked(); m != p {
		return fmt.Errorf("--service-cidr %s has host bits set: did you mean %s?", p, m)
	}
	if p.Bits() > p.Addr().BitLen()-2 {
		return fmt.Errorf("--service-cidr %s is too small: want at most /%d", p, p.Addr().BitLen()-2)
	}
	return nil
}

// Allocator applies the allocation rules of one Config. It holds no state
// between calls (the store is the state), so one Allocator may be used
// from any goroutine.
type Allocator struct {
	cidr  netip.Prefix
	ports PortRange
}

// New checks cfg and returns an Allocator; errors name the flag at fault.
func New(cfg Config) (*Allocator, error) {
	if !cfg.ServiceCIDR.IsValid() {
		cfg.ServiceCIDR = netip.MustParsePrefix(DefaultServiceCIDR)
	}
	if err := checkServiceCIDR(cfg.ServiceCIDR); err != nil {
		return nil, err
	}
	if cfg.NodePortRange == (PortRange{}) {
		cfg.NodePortRange, _ = ParsePortRange(DefaultNodePortRange)
	}
	if err := cfg.NodePortRange.validate(); err != nil {
		return nil, fmt.Errorf("--service-node-port-range %s: %w", cfg.NodePortRange, err)
	}
	return &Allocator{cidr: cfg.ServiceCIDR, ports: cfg.NodePortRange}, nil
}

// ServiceCIDR is the range cluster IPs come from.
func (a *Allocator) ServiceCIDR() netip.Prefix { return a.cidr }

// NodePortRange is the range node ports come from.
func (a *Allocator) NodePortRange() PortRange { return a.ports }
