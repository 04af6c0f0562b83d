package svcproxy

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os/exec"
	"reflect"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// TestUpdateMatchesFreshLoad drives a proxy through random changes to
// 40 services (endpoints come and go and turn unready, types, protocols
// and affinity change) and checks after each Sync that the table it
// updated in place is the table that loading the same rendering from
// scratch gives, object for object, rule for rule, element for element.
func TestUpdateMatchesFreshLoad(t *testing.T) {
	requireNFT(t)
	id := randHex(t, 8)
	updated := newNetNS(t, "fsp"+id+"u")
	fresh := newNetNS(t, "fsp"+id+"f")
	table := "fsp-" + id
	p, err := New(Config{Table: table, PodCIDR: netip.MustParsePrefix("10.244.1.0/24"), Bridge: "fspnone", Logger: discardLog()})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	t.Cleanup(func() { inNetNS(t, updated, func() error { return p.Destroy(ctx) }) })

	rng := rand.New(rand.NewPCG(1, 2))
	svcs := make([]svc, 40)
	for i := range svcs {
		svcs[i] = svc{ns: "ns", name: fmt.Sprintf("s%d", i), clusterIP: fmt.Sprintf("10.96.0.%d", i+1)}
		mutate(rng, &svcs[i], i)
	}
	for step := 0; step < 25; step++ {
		for k := 0; k < 1+rng.IntN(4); k++ {
			i := rng.IntN(len(svcs))
			mutate(rng, &svcs[i], i)
		}
		snap := snapshot(svcs...)
		if err := inNetNS(t, updated, func() error { return p.Sync(ctx, snap) }); err != nil {
			t.Fatalf("step %d: %v", step, err)
		}
		if step > 0 && p.lastMode != "update" {
			t.Errorf("step %d: Sync did a %q, want an update", step, p.lastMode)
		}
		want := render(p.p, snap)
		if err := inNetNS(t, fresh, func() error {
			_, err := runNFT(ctx, replaceTransaction(table, want), "-f", "-")
			return err
		}); err != nil {
			t.Fatalf("step %d: loading the rendering: %v", step, err)
		}
		got, exp := listing(t, updated, table), listing(t, fresh, table)
		if !reflect.DeepEqual(got, exp) {
			for name := range exp {
				if !reflect.DeepEqual(got[name], exp[name]) {
					t.Errorf("step %d: %s differs:\nupdated: %s\nfresh:   %s", step, name, got[name], exp[name])
				}
			}
			for name := range got {
				if _, ok := exp[name]; !ok {
					t.Errorf("step %d: %s left over", step, name)
				}
			}
			t.FailNow()
		}
	}
}

// mutate changes service i at random: usually only its endpoints (the
// common change), else everything.
func mutate(rng *rand.Rand, s *svc, i int) {
	if len(s.ports) == 0 || rng.IntN(10) < 3 {
		mutateSpec(rng, s, i)
	}
	s.eps = nil
	for e := 0; e < rng.IntN(6); e++ {
		s.eps = append(s.eps, ep{ip: fmt.Sprintf("10.244.%d.%d", rng.IntN(3), 2+rng.IntN(20)), notReady: rng.IntN(5) == 0})
	}
}

func mutateSpec(rng *rand.Rand, s *svc, i int) {
	types := []corev1.ServiceType{corev1.ServiceTypeClusterIP, corev1.ServiceTypeNodePort, corev1.ServiceTypeLoadBalancer}
	s.typ = types[rng.IntN(3)]
	proto := []corev1.Protocol{corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP}[rng.IntN(3)]
	s.ports = []port{{name: "p", proto: proto, port: 80, target: int32(8000 + rng.IntN(3)), nodePort: int32(30000 + i)}}
	s.lbIPs = []string{fmt.Sprintf("192.0.2.%d", i+1)}
	s.affinity = []int32{0, 0, -1, 60}[rng.IntN(4)]
}

// listing is the table in the namespace at path as "kind name" →
// canonical JSON: handles dropped, set elements sorted (their order in a
// listing depends on the kernel's hashing), rules in chain order.
func listing(t *testing.T, path, table string) map[string]string {
	t.Helper()
	var out []byte
	if err := inNetNS(t, path, func() (err error) {
		out, err = exec.Command("nft", "-j", "list", "table", "ip", table).Output()
		return err
	}); err != nil {
		t.Fatalf("listing: %v", err)
	}
	var doc struct {
		Nftables []map[string]map[string]any `json:"nftables"`
	}
	if err := json.Unmarshal(out, &doc); err != nil {
		t.Fatal(err)
	}
	res := map[string]string{}
	rules := map[string][]string{}
	for _, entry := range doc.Nftables {
		for kind, o := range entry {
			delete(o, "handle")
			switch kind {
			case "set", "map":
				if elems, ok := o["elem"].([]any); ok {
					var ss []string
					for _, e := range elems {
						b, _ := json.Marshal(e)
						ss = append(ss, string(b))
					}
					slices.Sort(ss)
					o["elem"] = ss
				}
				b, _ := json.Marshal(o)
				res[kind+" "+o["name"].(string)] = string(b)
			case "chain":
				b, _ := json.Marshal(o)
				res["chain "+o["name"].(string)] = string(b)
			case "rule":
				b, _ := json.Marshal(o["expr"])
				c := o["chain"].(string)
				rules[c] = append(rules[c], string(b))
			}
		}
	}
	for c, rs := range rules {
		res["rules "+c] = strings.Join(rs, "\n")
	}
	return res
}
