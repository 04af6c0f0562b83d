package ipalloc

import (
	"net/netip"
	"strings"
	"testing"
)

func TestParsePool(t *testing.T) {
	for in, want := range map[string]string{
		"":                                    "",
		" 10.0.0.200-10.0.0.220 ":             "10.0.0.200-10.0.0.220",
		"192.168.1.240/28,10.0.0.5":           "10.0.0.5,192.168.1.240-192.168.1.255",
		"10.0.0.1/32, fd00::10-fd00::1f":      "10.0.0.1,fd00::10-fd00::1f",
		"10.0.0.1-10.0.0.1,10.0.0.2-10.0.0.3": "10.0.0.1,10.0.0.2-10.0.0.3",
	} {
		p, err := ParsePool(in)
		if err != nil || p.String() != want {
			t.Errorf("ParsePool(%q) = %q, %v; want %q", in, p, err, want)
		}
	}
	for in, why := range map[string]string{
		"10.0.0.1,":                       "empty entry",
		"10.0.0.0/33":                     `"10.0.0.0/33" is not a CIDR`,
		"10.0.0.5/24":                     "host bits set: did you mean 10.0.0.0/24?",
		"lb.example.com":                  "is not an address, a CIDR or a FIRST-LAST range",
		"10.0.0.9-10.0.0.1":               "the first address is above the last",
		"10.0.0.1-fd00::1":                "mixes IPv4 and IPv6",
		"10.0.0.1-ten":                    `"ten" is not an address`,
		"10.0.0.0/24,10.0.0.200-10.0.1.3": "10.0.0.200-10.0.1.3 overlaps 10.0.0.0-10.0.0.255",
	} {
		_, err := ParsePool(in)
		if err == nil || !strings.Contains(err.Error(), why) || !strings.Contains(err.Error(), "--lb-pool") {
			t.Errorf("ParsePool(%q) = %v; want an error naming the flag and saying %q", in, err, why)
		}
	}
}

func TestPoolFirstAndContains(t *testing.T) {
	p, err := ParsePool("10.0.0.200-10.0.0.201,192.168.0.0/31")
	if err != nil {
		t.Fatal(err)
	}
	taken := map[string]bool{}
	var order []string
	for {
		a, ok := p.First(func(a netip.Addr) bool { return taken[a.String()] })
		if !ok {
			break
		}
		taken[a.String()] = true
		order = append(order, a.String())
	}
	if got := strings.Join(order, " "); got != "10.0.0.200 10.0.0.201 192.168.0.0 192.168.0.1" {
		t.Errorf("allocation order %s", got)
	}
	for a, want := range map[string]bool{"10.0.0.200": true, "10.0.0.202": false, "192.168.0.1": true, "::ffff:10.0.0.201": true, "fd00::1": false} {
		if p.Contains(netip.MustParseAddr(a)) != want {
			t.Errorf("Contains(%s) != %v", a, want)
		}
	}
	if !(Pool{}).Empty() || p.Empty() {
		t.Error("Empty")
	}
	if _, ok := (Pool{}).First(func(netip.Addr) bool { return false }); ok {
		t.Error("the empty pool gave an address")
	}
	// A huge pool costs only what is taken.
	big, _ := ParsePool("fd00::/64")
	calls := 0
	if a, ok := big.First(func(a netip.Addr) bool { calls++; return calls <= 3 }); !ok || a.String() != "fd00::3" || calls != 4 {
		t.Errorf("First over a /64 = %v after %d calls", a, calls)
	}
}
