package ipalloc

import (
	"net/netip"
	"strings"
	"testing"
)

func TestParsePortRange(t *testing.T) {
	for in, want := range map[string]PortRange{
		"30000-32767": {30000, 32767}, " 8000 - 8100 ": {8000, 8100}, "30000+100": {30000, 30099}, "1-65535": {1, 65535},
	} {
		if got, err := ParsePortRange(in); err != nil || got != want {
			t.Errorf("ParsePortRange(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for in, why := range map[string]string{
		"30000": "no '-'", "a-b": "first port is not a number", "1-b": "last port is not a number",
		"0-100": "within 1-65535", "30000-70000": "within 1-65535", "32767-30000": "above the last", "30000+0": "size",
	} {
		_, err := ParsePortRange(in)
		if err == nil || !strings.Contains(err.Error(), why) || !strings.Contains(err.Error(), "--service-node-port-range") {
			t.Errorf("ParsePortRange(%q) = %v; want an error naming the flag and saying %q", in, err, why)
		}
	}
}

func TestParseServiceCIDR(t *testing.T) {
	if p, err := ParseServiceCIDR(" 10.96.0.0/12 "); err != nil || p.String() != "10.96.0.0/12" {
		t.Errorf("ParseServiceCIDR = %v, %v", p, err)
	}
	for in, why := range map[string]string{
		"10.96.0.0":       "not a CIDR",
		"10.96.0.1/16":    "host bits set: did you mean 10.96.0.0/16?",
		"10.96.0.0/31":    "too small: want at most /30",
		"::ffff:0:0/96":   "IPv4-mapped",
		"fd00::/127":      "too small: want at most /126",
		"nonsense/banana": "not a CIDR",
	} {
		_, err := ParseServiceCIDR(in)
		if err == nil || !strings.Contains(err.Error(), why) || !strings.Contains(err.Error(), "--service-cidr") {
			t.Errorf("ParseServiceCIDR(%q) = %v; want an error naming the flag and saying %q", in, err, why)
		}
	}
}

func TestNew(t *testing.T) {
	a, err := New(Config{})
	if err != nil || a.ServiceCIDR().String() != DefaultServiceCIDR || a.NodePortRange().String() != DefaultNodePortRange {
		t.Fatalf("New(Config{}) = %v, %v, %v", a.ServiceCIDR(), a.NodePortRange(), err)
	}
	if _, err := New(Config{ServiceCIDR: netip.MustParsePrefix("10.96.1.0/16")}); err == nil || !strings.Contains(err.Error(), "--service-cidr") {
		t.Errorf("a CIDR with host bits: %v", err)
	}
	if _, err := New(Config{NodePortRange: PortRange{200, 100}}); err == nil || !strings.Contains(err.Error(), "--service-node-port-range") {
		t.Errorf("an upside-down port range: %v", err)
	}
}
