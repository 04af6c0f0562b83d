package netfabric

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// The bridge trap, and why the fix looks like this.
//
// With the br_netfilter module loaded (net.bridge.bridge-nf-call-iptables=1,
// the default once anything loads it: Docker, Podman, kube-proxy), IPv4
// frames *switched* by a bridge between two of its ports are also passed
// through the IP FORWARD hook. A FORWARD chain with policy DROP (Docker sets
// one; many firewalls do) then drops pod-to-pod IP traffic on the same
// bridge while ARP, which is not IP, still works: exactly the "ARP works, IP
// does not" symptom. Reproduced in a scratch namespace: `iptables -P
// FORWARD DROP` kills ping between two veths on one bridge, and
// `iptables -I FORWARD -i br0 -j ACCEPT` brings it back.
//
// An accept in a table of our own cannot fix it: in nftables a packet must
// pass every base chain on a hook, an accept ends only its own chain, and a
// drop anywhere is final. So the fix goes where the drop is: when the
// iptables FORWARD chain (legacy or nft backend) can drop, Init inserts two
// narrow rules at its top, accepting what enters or leaves our bridge. A
// drop policy in some other native nftables table is not ours to edit; Init
// names it in a warning. Turning br_netfilter off would also work but is
// global, and the service proxy will need it (pod → VIP → pod on the same
// bridge is DNATed in the IP hooks).
//
// Our own table, `inet <NFTable>`, carries the masquerade from the pod CIDR
// to anything outside the cluster CIDR; it is replaced atomically on every
// Init (one `nft -f` transaction), so re-running Init is a no-op in effect.

const iptablesComment = "flotilla pod network"

// enableForwarding turns on IPv4 forwarding for this network namespace.
func enableForwarding() error {
	const path = "/proc/sys/net/ipv4/ip_forward"
	if b, err := os.ReadFile(path); err == nil && strings.TrimSpace(string(b)) == "1" {
		return nil
	}
	if err := os.WriteFile(path, []byte("1\n"), 0o644); err != nil {
		return fmt.Errorf("enabling ip_forward: %w", err)
	}
	return nil
}

func run(ctx context.Context, stdin string, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

// nftRuleset is our whole table. Declaring then deleting then declaring
// again in one transaction replaces it atomically whether or not it existed.
func (f *Fabric) nftRuleset() string {
	t := f.cfg.NFTable
	return fmt.Sprintf(`table inet %[1]s {}
delete table inet %[1]s
table inet %[1]s {
	comment "flotilla pod network of bridge %[2]s"
	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		ip saddr %[3]s ip daddr != %[4]s masquerade
	}
}
`, t, f.cfg.Bridge, f.pool.Masked(), f.cluster.Masked())
}

func (f *Fabric) ensureNFTables(ctx context.Context) error {
	if _, err := run(ctx, f.nftRuleset(), "nft", "-f", "-"); err != nil {
		return fmt.Errorf("installing nftables table inet %s: %w", f.cfg.NFTable, err)
	}
	return nil
}

func (f *Fabric) deleteNFTables(ctx context.Context) error {
	t := f.cfg.NFTable
	if _, err := run(ctx, fmt.Sprintf("table inet %[1]s {}\ndelete table inet %[1]s\n", t), "nft", "-f", "-"); err != nil {
		return fmt.Errorf("deleting nftables table inet %s: %w", t, err)
	}
	return nil
}

// iptablesForwardRules are the two accepts Init puts at the top of a
// restrictive iptables FORWARD chain.
func (f *Fabric) iptablesForwardRules() [][]string {
	c := []string{"-m", "comment", "--comment", iptablesComment, "-j", "ACCEPT"}
	return [][]string{
		append([]string{"FORWARD", "-i", f.cfg.Bridge}, c...),
		append([]string{"FORWARD", "-o", f.cfg.Bridge}, c...),
	}
}

// iptablesTools are the iptables front ends present. The legacy (x_tables)
// and nft backends hook the kernel side by side and either can drop, so
// each present one is checked.
func iptablesTools() []string {
	var tools []string
	for _, t := range []string{"iptables-nft", "iptables-legacy"} {
		if _, err := exec.LookPath(t); err == nil {
			tools = append(tools, t)
		}
	}
	if len(tools) == 0 {
		if _, err := exec.LookPath("iptables"); err == nil {
			tools = append(tools, "iptables")
		}
	}
	return tools
}

// forwardRestrictive reports whether tool's FORWARD chain may drop
// anything: a policy other than ACCEPT or any rule at all. A missing filter
// table is not restrictive.
func forwardRestrictive(ctx context.Context, tool string) bool {
	out, err := run(ctx, "", tool, "-w", "-S", "FORWARD")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if line != "" && line != "-P FORWARD ACCEPT" {
			return true
		}
	}
	return false
}

func (f *Fabric) ensureIPTables(ctx context.Context) error {
	for _, tool := range iptablesTools() {
		if err := f.ensureIPTablesWith(ctx, tool); err != nil {
			return err
		}
	}
	return nil
}

func (f *Fabric) ensureIPTablesWith(ctx context.Context, tool string) error {
	if !forwardRestrictive(ctx, tool) {
		return nil
	}
	for _, rule := range f.iptablesForwardRules() {
		if _, err := run(ctx, "", tool, append([]string{"-w", "-C"}, rule...)...); err == nil {
			continue
		}
		if _, err := run(ctx, "", tool, append([]string{"-w", "-I", rule[0], "1"}, rule[1:]...)...); err != nil {
			return fmt.Errorf("letting bridge %s through the iptables FORWARD chain: %w", f.cfg.Bridge, err)
		}
		f.log.Info("iptables FORWARD can drop; accepted our bridge in it", "tool", tool, "rule", strings.Join(rule, " "))
	}
	return nil
}

func (f *Fabric) deleteIPTables(ctx context.Context) error {
	for _, tool := range iptablesTools() {
		for _, rule := range f.iptablesForwardRules() {
			for i := 0; i < 10; i++ { // a rule inserted twice by a race: remove every copy
				if _, err := run(ctx, "", tool, append([]string{"-w", "-C"}, rule...)...); err != nil {
					break
				}
				if _, err := run(ctx, "", tool, append([]string{"-w", "-D"}, rule...)...); err != nil {
					return fmt.Errorf("removing our rule from the %s FORWARD chain: %w", tool, err)
				}
			}
		}
	}
	return nil
}

// foreignDrops lists ("family table chain") every native nftables forward
// chain whose policy is drop, outside our table and outside the
// iptables-nft FORWARD chains that ensureIPTables already handles: such a
// chain may still drop pod traffic on the bridge, and only the operator can
// allow the bridge there.
func (f *Fabric) foreignDrops(ctx context.Context) ([]string, error) {
	out, err := run(ctx, "", "nft", "-j", "list", "chains")
	if err != nil {
		return nil, fmt.Errorf("listing nftables chains: %w", err)
	}
	var doc struct {
		Nftables []struct {
			Chain *struct {
				Family, Table, Name, Hook, Policy string
			} `json:"chain"`
		} `json:"nftables"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		return nil, fmt.Errorf("parsing nftables chains: %w", err)
	}
	var found []string
	for _, e := range doc.Nftables {
		c := e.Chain
		if c == nil || c.Hook != "forward" || c.Policy != "drop" || c.Table == f.cfg.NFTable {
			continue
		}
		if (c.Family == "ip" || c.Family == "ip6") && c.Table == "filter" && c.Name == "FORWARD" {
			continue // iptables-nft: handled through iptables
		}
		found = append(found, c.Family+" "+c.Table+" "+c.Name)
	}
	return found, nil
}
