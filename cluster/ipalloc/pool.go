package ipalloc

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"
)

// Pool is the set of addresses LoadBalancer Services get theirs from
// (server flag --lb-pool): CIDRs and ranges, IPv4 or IPv6. A CIDR holds all
// its addresses, network and broadcast included (a /32 is one address), as
// the addresses are announced on the nodes' network, not routed as a
// subnet. The zero Pool is empty: no addresses to give.
type Pool struct {
	ranges []Range // sorted, not overlapping
}

// Range is an inclusive range of addresses of one family.
type Range struct{ First, Last netip.Addr }

func (r Range) String() string {
	if r.First == r.Last {
		return r.First.String()
	}
	return r.First.String() + "-" + r.Last.String()
}

func (r Range) contains(a netip.Addr) bool {
	return a.BitLen() == r.First.BitLen() && r.First.Compare(a) <= 0 && a.Compare(r.Last) <= 0
}

// ParsePool parses the value of --lb-pool: comma-separated CIDRs
// (192.168.1.240/28) and ranges (192.168.1.240-192.168.1.250, or a single
// address). Entries may not overlap. "" is the empty pool.
func ParsePool(s string) (Pool, error) {
	var p Pool
	if strings.TrimSpace(s) == "" {
		return p, nil
	}
	for _, e := range strings.Split(s, ",") {
		e = strings.TrimSpace(e)
		r, err := parseRange(e)
		if err != nil {
			return Pool{}, fmt.Errorf("--lb-pool %q: %w", s, err)
		}
		p.ranges = append(p.ranges, r)
	}
	return NewPool(p.ranges...)
}

func parseRange(e string) (Range, error) {
	if e == "" {
		return Range{}, fmt.Errorf("empty entry: want CIDRs or FIRST-LAST ranges separated by commas")
	}
	if strings.Contains(e, "/") {
		pfx, err := netip.ParsePrefix(e)
		if err != nil {
			return Range{}, fmt.Errorf("%q is not a CIDR", e)
		}
		if pfx.Addr().Zone() != "" || pfx.Addr().Is4In6() {
			return Range{}, fmt.Errorf("%q: want a plain IPv4 or IPv6 CIDR", e)
		}
		if m := pfx.Masked(); m != pfx {
			return Range{}, fmt.Errorf("%q has host bits set: did you mean %s?", e, m)
		}
		return Range{pfx.Addr(), lastAddr(pfx)}, nil
	}
	first, last, isRange := strings.Cut(e, "-")
	a, err := netip.ParseAddr(strings.TrimSpace(first))
	if err != nil || a.Zone() != "" {
		return Range{}, fmt.Errorf("%q is not an address, a CIDR or a FIRST-LAST range", e)
	}
	b := a
	if isRange {
		if b, err = netip.ParseAddr(strings.TrimSpace(last)); err != nil || b.Zone() != "" {
			return Range{}, fmt.Errorf("%q: %q is not an address", e, strings.TrimSpace(last))
		}
	}
	a, b = a.Unmap(), b.Unmap()
	switch {
	case a.BitLen() != b.BitLen():
		return Range{}, fmt.Errorf("%q mixes IPv4 and IPv6", e)
	case b.Less(a):
		return Range{}, fmt.Errorf("%q: the first address is above the last", e)
	}
	return Range{a, b}, nil
}

// NewPool makes a Pool of ranges, refusing invalid or overlapping ones.
func NewPool(ranges ...Range) (Pool, error) {
	rs := append([]Range(nil), ranges...)
	for _, r := range rs {
		if !r.First.IsValid() || !r.Last.IsValid() || r.First.BitLen() != r.Last.BitLen() || r.Last.Less(r.First) {
			return Pool{}, fmt.Errorf("--lb-pool: %s is not a valid range", r)
		}
	}
	sort.Slice(rs, func(i, j int) bool { return rs[i].First.Less(rs[j].First) })
	for i := 1; i < len(rs); i++ {
		if rs[i].First.BitLen() == rs[i-1].Last.BitLen() && !rs[i-1].Last.Less(rs[i].First) {
			return Pool{}, fmt.Errorf("--lb-pool: %s overlaps %s", rs[i], rs[i-1])
		}
	}
	return Pool{ranges: rs}, nil
}

// Empty reports a pool without addresses.
func (p Pool) Empty() bool { return len(p.ranges) == 0 }

// Ranges returns the pool's ranges, lowest first.
func (p Pool) Ranges() []Range { return append([]Range(nil), p.ranges...) }

// String is the pool as --lb-pool takes it (ranges, lowest first).
func (p Pool) String() string {
	parts := make([]string, len(p.ranges))
	for i, r := range p.ranges {
		parts[i] = r.String()
	}
	return strings.Join(parts, ",")
}

// Contains reports whether a is in the pool.
func (p Pool) Contains(a netip.Addr) bool {
	a = a.Unmap()
	for _, r := range p.ranges {
		if r.contains(a) {
			return true
		}
	}
	return false
}

// First returns the lowest address of the pool for which taken is false.
// It calls taken at most once per address it passes over, so a pool of
// any size costs what the taken addresses cost.
func (p Pool) First(taken func(netip.Addr) bool) (netip.Addr, bool) {
	for _, r := range p.ranges {
		for a := r.First; a.IsValid(); a = a.Next() {
			if !taken(a) {
				return a, true
			}
			if a == r.Last {
				break
			}
		}
	}
	return netip.Addr{}, false
}
