package svcproxy

import (
	"flag"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

var update = flag.Bool("update", false, "rewrite testdata/*.nft from the current output")

var testParams = params{
	Table:       "flotilla-svc",
	ClusterCIDR: netip.MustParsePrefix("10.244.0.0/16"),
	PodCIDR:     netip.MustParsePrefix("10.244.1.0/24"),
}

// scenarios are rendered into testdata/<name>.nft. Read a diff of those
// files before committing it: it is the change to every node's firewall.
var scenarios = []struct {
	name string
	svcs []svc
}{
	{"empty", nil},
	{"cluster-ip", []svc{
		{ns: "default", name: "web", clusterIP: "10.96.0.20", ports: []port{tcp("http", 80, 8080)},
			eps: []ep{{ip: "10.244.1.5"}, {ip: "10.244.2.7"}, {ip: "10.244.1.6"}, {ip: "10.244.3.9", notReady: true}}},
		{ns: "kube-system", name: "dns", clusterIP: "10.96.0.10",
			ports: []port{{name: "dns", proto: corev1.ProtocolUDP, port: 53, target: 5353}, tcp("dns-tcp", 53, 5353)},
			eps:   []ep{{ip: "10.244.1.3"}, {ip: "10.244.2.3"}}},
		{ns: "default", name: "sig", clusterIP: "10.96.0.30",
			ports: []port{{proto: corev1.ProtocolSCTP, port: 9000, target: 9000}}, eps: []ep{{ip: "10.244.2.8"}}},
		{ns: "default", name: "headless", clusterIP: "None", ports: []port{tcp("http", 80, 80)}, eps: []ep{{ip: "10.244.1.9"}}},
		{ns: "default", name: "external", typ: corev1.ServiceTypeExternalName, ports: []port{tcp("http", 80, 80)}},
	}},
	{"nodeport-loadbalancer", []svc{
		{ns: "shop", name: "front", typ: corev1.ServiceTypeNodePort, clusterIP: "10.96.1.1",
			ports: []port{{name: "http", proto: corev1.ProtocolTCP, port: 80, target: 8080, nodePort: 30080}},
			eps:   []ep{{ip: "10.244.1.10"}, {ip: "10.244.2.10"}}},
		{ns: "shop", name: "lb", typ: corev1.ServiceTypeLoadBalancer, clusterIP: "10.96.1.2",
			lbIPs: []string{"192.0.2.10"}, externalIPs: []string{"198.51.100.7"},
			ports: []port{{name: "https", proto: corev1.ProtocolTCP, port: 443, target: 8443, nodePort: 30443}},
			eps:   []ep{{ip: "10.244.1.11"}, {ip: "10.244.2.11"}, {ip: "10.244.3.11"}}},
		{ns: "shop", name: "lb-no-nodeport", typ: corev1.ServiceTypeLoadBalancer, clusterIP: "10.96.1.3",
			lbIPs: []string{"192.0.2.11"},
			ports: []port{{name: "q", proto: corev1.ProtocolUDP, port: 5000, target: 5000}},
			eps:   []ep{{ip: "10.244.2.12"}}},
	}},
	{"affinity", []svc{
		{ns: "default", name: "sticky", clusterIP: "10.96.2.1", affinity: -1, ports: []port{tcp("http", 80, 8080)},
			eps: []ep{{ip: "10.244.1.20"}, {ip: "10.244.2.20"}}},
		{ns: "default", name: "sticky-np", typ: corev1.ServiceTypeNodePort, clusterIP: "10.96.2.2", affinity: 60,
			ports: []port{{name: "http", proto: corev1.ProtocolTCP, port: 80, target: 8080, nodePort: 30081}},
			eps:   []ep{{ip: "10.244.1.21"}}},
	}},
	{"no-endpoints", []svc{
		{ns: "default", name: "empty", clusterIP: "10.96.3.1", ports: []port{tcp("http", 80, 8080)}},
		{ns: "default", name: "unready", typ: corev1.ServiceTypeLoadBalancer, clusterIP: "10.96.3.2", lbIPs: []string{"192.0.2.30"},
			ports: []port{{name: "http", proto: corev1.ProtocolTCP, port: 80, target: 8080, nodePort: 30082}},
			eps:   []ep{{ip: "10.244.1.30", notReady: true}}},
	}},
	{"conflicts-and-skips", []svc{
		{ns: "a", name: "first", clusterIP: "10.96.4.1", externalIPs: []string{"198.51.100.9"},
			ports: []port{tcp("http", 80, 8080)}, eps: []ep{{ip: "10.244.1.40"}}},
		{ns: "b", name: "second", clusterIP: "10.96.4.2", externalIPs: []string{"198.51.100.9"},
			ports: []port{tcp("http", 80, 8080)}, eps: []ep{{ip: "10.244.1.41"}, {ip: "fd00::41"}}},
		{ns: "b", name: "v6", clusterIP: "fd00:96::1", ports: []port{tcp("http", 80, 8080)}, eps: []ep{{ip: "fd00::42"}}},
		{ns: "b", name: "odd", clusterIP: "10.96.4.3", affinity: -1, ports: []port{tcp("we ird;x{}", 80, 8080)}, eps: []ep{{ip: "10.244.1.43"}}},
	}},
}

func TestRenderGolden(t *testing.T) {
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			rs := render(testParams, snapshot(sc.svcs...))
			path := filepath.Join("testdata", sc.name+".nft")
			if *update {
				if err := os.WriteFile(path, []byte(rs.text), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if rs.text != string(want) {
				t.Errorf("render differs from %s (run with -update after reading the diff):\n%s", path, rs.text)
			}
		})
	}
}

// TestGoldenFilesLoad feeds every golden file to the kernel (`nft -c`,
// nothing is committed) in a namespace of its own: the text must be a
// ruleset nft 1.0.x accepts, not just the text we expect.
func TestGoldenFilesLoad(t *testing.T) {
	requireNFT(t)
	ns := newNetNS(t, "fsp"+randHex(t, 8)+"g")
	files, _ := filepath.Glob("testdata/*.nft")
	if len(files) == 0 {
		t.Fatal("no golden files")
	}
	for _, f := range files {
		if err := inNetNS(t, ns, func() error {
			out, err := exec.Command("nft", "-c", "-f", f).CombinedOutput()
			if err != nil {
				t.Errorf("%s: %v\n%s", f, err, out)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
}

func TestRenderDetails(t *testing.T) {
	t.Run("deterministic and order-independent", func(t *testing.T) {
		sc := scenarios[2].svcs
		a := render(testParams, snapshot(sc...)).text
		rev := slices.Clone(sc)
		slices.Reverse(rev)
		if b := render(testParams, snapshot(rev...)).text; a != b {
			t.Error("rendering depends on the order of the services")
		}
	})
	t.Run("objects", func(t *testing.T) {
		rs := render(testParams, snapshot(scenarios[3].svcs...))
		var aff, chains int
		for _, o := range rs.objects {
			if !strings.Contains(rs.text, " "+o.name+" {") {
				t.Errorf("object %v not declared in the text", o)
			}
			switch o.kind {
			case kindAffinity:
				aff++
			case kindChain:
				chains++
			}
		}
		if aff != 3 {
			t.Errorf("%d affinity sets, want 3 (one per endpoint)", aff)
		}
	})
	t.Run("conflicts and skips reported", func(t *testing.T) {
		rs := render(testParams, snapshot(scenarios[5].svcs...))
		if len(rs.conflicts) != 1 || !strings.Contains(rs.conflicts[0], "a/first/tcp/http") {
			t.Errorf("conflicts %q", rs.conflicts)
		}
		if len(rs.skipped) != 1 || !strings.Contains(rs.skipped[0], "b/v6") {
			t.Errorf("skipped %q", rs.skipped)
		}
	})
	t.Run("udp flows", func(t *testing.T) {
		rs := render(testParams, snapshot(scenarios[1].svcs...))
		want := []udpFlow{
			{Frontend: netip.MustParseAddr("10.96.0.10"), Port: 53, Backend: netip.MustParseAddr("10.244.1.3")},
			{Frontend: netip.MustParseAddr("10.96.0.10"), Port: 53, Backend: netip.MustParseAddr("10.244.2.3")},
		}
		if !slices.Equal(rs.udp, want) {
			t.Errorf("udp flows %v, want %v", rs.udp, want)
		}
		less := render(testParams, snapshot(svc{ns: "kube-system", name: "dns", clusterIP: "10.96.0.10",
			ports: []port{{name: "dns", proto: corev1.ProtocolUDP, port: 53, target: 5353}},
			eps:   []ep{{ip: "10.244.2.3"}}}))
		if got := staleUDP(rs.udp, less.udp); !slices.Equal(got, want[:1]) {
			t.Errorf("stale %v, want %v", got, want[:1])
		}
	})
	t.Run("affinity names follow the timeout", func(t *testing.T) {
		s := scenarios[3].svcs[0]
		a := render(testParams, snapshot(s))
		s.affinity = 30
		b := render(testParams, snapshot(s))
		for _, o := range a.objects {
			if o.kind == kindAffinity && slices.Contains(b.objects, o) {
				t.Errorf("set %s kept although the timeout changed", o.name)
			}
		}
	})
}

func TestTransaction(t *testing.T) {
	want := &ruleset{text: "table ip T {\n}\n", objects: []object{
		{kindChain, "services"}, {kindMap, "service-ips"}, {kindSet, "hairpin"}, {kindAffinity, "affinity-A"},
	}}
	have := []object{
		{kindChain, "services"}, {kindChain, "pick-cluster-9"}, {kindMap, "service-ips"}, {kindMap, "endpoints-8"},
		{kindSet, "hairpin"}, {kindAffinity, "affinity-A"}, {kindAffinity, "affinity-B"},
	}
	got := rewriteTransaction("T", have, want)
	wantText := `table ip T {}
flush table ip T
flush map ip T service-ips
delete map ip T endpoints-8
flush set ip T hairpin
delete set ip T affinity-B
delete chain ip T pick-cluster-9
table ip T {
}
`
	if got != wantText {
		t.Errorf("in place:\n%s\nwant:\n%s", got, wantText)
	}
	if got, w := replaceTransaction("T", want), "table ip T {}\ndelete table ip T\ntable ip T {\n}\n"; got != w {
		t.Errorf("replace:\n%s\nwant:\n%s", got, w)
	}
}

func TestParseListing(t *testing.T) {
	out := `{"nftables": [{"metainfo": {"version": "1.0.6"}},
{"set": {"family": "ip", "name": "affinity-X", "table": "T", "type": "ipv4_addr", "flags": ["timeout"]}},
{"set": {"family": "ip", "name": "hairpin", "table": "T", "type": ["ipv4_addr", "ipv4_addr"]}},
{"set": {"family": "ip", "name": "__set0", "table": "T", "type": "ipv4_addr"}},
{"set": {"family": "ip", "name": "hairpin", "table": "other", "type": ["ipv4_addr", "ipv4_addr"]}},
{"map": {"family": "ip", "name": "service-ips", "table": "T", "map": "verdict"}},
{"chain": {"family": "ip", "table": "T", "name": "services", "handle": 1}},
{"chain": {"family": "ip", "table": "other", "name": "x", "handle": 1}}]}`
	got, err := parseListing([]byte(out), "T")
	if err != nil {
		t.Fatal(err)
	}
	sortObjects(got)
	want := []object{{kindChain, "services"}, {kindMap, "service-ips"}, {kindSet, "hairpin"}, {kindAffinity, "affinity-X"}}
	if !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	if _, err := parseListing([]byte("not json"), "T"); err == nil {
		t.Error("garbage parsed")
	}
}

func TestNewValidates(t *testing.T) {
	pod := netip.MustParsePrefix("10.244.1.0/24")
	for _, c := range []struct {
		cfg  Config
		want string // "" = valid
	}{
		{Config{PodCIDR: pod}, ""},
		{Config{}, "PodCIDR is required"},
		{Config{PodCIDR: netip.MustParsePrefix("10.9.1.0/24")}, "not inside"},
		{Config{PodCIDR: netip.MustParsePrefix("fd00::/64")}, "IPv4"},
		{Config{PodCIDR: pod, ClusterCIDR: netip.MustParsePrefix("10.244.1.0/25")}, "not inside"},
		{Config{PodCIDR: pod, Table: "bad name"}, "Config.Table"},
		{Config{PodCIDR: pod, Bridge: "a-very-long-bridge-name"}, "Config.Bridge"},
	} {
		p, err := New(c.cfg)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%+v: %v", c.cfg, err)
		case c.want == "" && (p.cfg.Table != "flotilla-svc" || p.cfg.Bridge != "flotilla0" || p.cfg.ClusterCIDR.String() != "10.244.0.0/16"):
			t.Errorf("defaults not applied: %+v", p.cfg)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%+v: error %v, want one saying %q", c.cfg, err, c.want)
		}
	}
}
