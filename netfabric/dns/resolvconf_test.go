package dns

import (
	"slices"
	"strings"
	"testing"
)

func TestResolvConf(t *testing.T) {
	for _, tc := range []struct {
		name   string
		ns     string
		domain string
		host   []string
		want   string
	}{
		{"plain", "default", "", nil,
			"search default.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.244.1.1\noptions ndots:5\n"},
		{"host search, deduplicated, dots trimmed", "shop", "edge.example.", []string{"corp.example.", "", "Edge.Example", "lan"},
			"search shop.svc.edge.example svc.edge.example edge.example corp.example lan\nnameserver 10.244.1.1\noptions ndots:5\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := string(ResolvConf("10.244.1.1", tc.ns, tc.domain, tc.host)); got != tc.want {
				t.Errorf("got\n%s\nwant\n%s", got, tc.want)
			}
		})
	}

	// kubelet's limits: 32 domains, 2048 characters.
	var many []string
	for i := range 40 {
		many = append(many, "d"+itoa(i)+".example")
	}
	search := searchOf(t, ResolvConf("10.244.1.1", "default", "", many))
	if len(search) != 32 || search[31] != "d28.example" {
		t.Errorf("40 host domains: kept %d (last %s), want 32", len(search), search[len(search)-1])
	}
	long := []string{strings.Repeat("a", 1000), strings.Repeat("b", 1000), "c.example"}
	search = searchOf(t, ResolvConf("10.244.1.1", "default", "", long))
	if len(strings.Join(search, " ")) > 2048 || !slices.Contains(search, long[0]) || slices.Contains(search, long[1]) {
		t.Errorf("long host domains: %d chars, %d domains", len(strings.Join(search, " ")), len(search))
	}

	// What ResolvConf writes, ParseResolvConf reads.
	rf := ParseResolvConf(ResolvConf("10.244.1.1", "default", "", []string{"lan"}))
	if !slices.Equal(rf.Nameservers, []string{"10.244.1.1"}) || !slices.Equal(rf.Search, []string{"default.svc.cluster.local", "svc.cluster.local", "cluster.local", "lan"}) {
		t.Errorf("round trip: %+v", rf)
	}
}

func searchOf(t *testing.T, conf []byte) []string {
	t.Helper()
	line, _, _ := strings.Cut(string(conf), "\n")
	f := strings.Fields(line)
	if len(f) == 0 || f[0] != "search" {
		t.Fatalf("first line %q", line)
	}
	return f[1:]
}

func TestParseResolvConf(t *testing.T) {
	rf := ParseResolvConf([]byte(`
# comment
nameserver 127.0.0.53
nameserver   10.0.0.2   # trailing
search a.example b.example.
options edns0 trust-ad
domain only.example
nameserver
search c.example
`))
	if !slices.Equal(rf.Nameservers, []string{"127.0.0.53", "10.0.0.2"}) {
		t.Errorf("nameservers %q", rf.Nameservers)
	}
	if !slices.Equal(rf.Search, []string{"c.example"}) {
		t.Errorf("search %q (the last search/domain line wins)", rf.Search)
	}
	if rf := ParseResolvConf([]byte("search a.example b.example.\n")); !slices.Equal(rf.Search, []string{"a.example", "b.example"}) {
		t.Errorf("search %q", rf.Search)
	}
	if rf := ParseResolvConf(nil); rf.Nameservers != nil || rf.Search != nil {
		t.Errorf("empty: %+v", rf)
	}
}
