// Package svcproxy programs Service virtual IPs, NodePorts and
// load-balancer addresses as one nftables table: kube-proxy's nftables
// mode for a Flotilla node.
//
// Each Sync renders the whole table from a svcview.Snapshot (render.go: a
// pure function, golden-tested) and applies it in one atomic `nft -f -`
// transaction (transaction.go); an unchanged rendering is a no-op. The node
// plumbing that pod → service → pod traffic needs on a bridge (br_netfilter,
// hairpin mode) is in kernel.go, with the reasons.
//
// Every call acts on the network namespace of the calling OS thread, like
// netfabric: an agent runs it in the node's namespace (under nsenter in the
// lab), tests from a thread locked into a namespace of their own.
package svcproxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/flotilla-dev/flotilla/netfabric/svcview"
)

// Config configures a Proxy. Zero values mean the documented default.
type Config struct {
	// Table names the nftables table (family ip) that holds every rule.
	// Default "flotilla-svc". Two proxies in one network namespace need
	// different tables.
	Table string
	// ClusterCIDR holds the pod addresses of the whole cluster (IPv4).
	// Connections to a cluster IP from outside it (the node itself, or a
	// client routed to the VIP) are masqueraded. Default 10.244.0.0/16.
	ClusterCIDR netip.Prefix
	// PodCIDR is this node's pod range (IPv4, inside ClusterCIDR).
	// Required. NodePort and load-balancer connections from outside it are
	// masqueraded, so that replies come back through this node; its pods
	// keep their address.
	PodCIDR netip.Prefix
	// Bridge is the node's pod bridge (netfabric's Config.Bridge), whose
	// ports Sync puts in hairpin mode so that a pod can reach itself
	// through a service. Default "flotilla0".
	Bridge string
	// Logger receives the proxy's logs. Default: discard.
	Logger *slog.Logger
}

// Proxy keeps one node's service table in step with the snapshots it is
// given. Its methods may be called from any goroutine; they are serialised.
type Proxy struct {
	cfg Config
	log *slog.Logger
	p   params
	// nft runs the nft command (a field so that tests can count runs).
	nft func(ctx context.Context, stdin string, args ...string) ([]byte, error)
	// now is the clock (a field so that tests can move it).
	now func() time.Time

	mu sync.Mutex
	// applied is the last ruleset in the kernel; nil when unknown (before
	// the first Sync, after a failure, after Destroy).
	applied *ruleset
	// udp are the UDP frontend → backend pairs of the table in the kernel
	// (known even when applied is not: a failed transaction changes
	// nothing).
	udp []udpFlow
	// lastRewrite is when the whole table was last written.
	lastRewrite time.Time
	// lastMode is how the last Sync that ran nft did it: "update",
	// "rewrite", "replace" (or "none": nothing to send).
	lastMode string
	// lastWarn is the last conflict/skip report logged, so that an
	// unchanged problem is not logged at every Sync.
	lastWarn string
	// plumbingErr is the last br_netfilter / hairpin error logged.
	plumbingErr string
}

var tableName = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_.-]{0,62}$`)

// New validates cfg and returns a proxy. It touches no kernel state.
func New(cfg Config) (*Proxy, error) {
	if cfg.Table == "" {
		cfg.Table = "flotilla-svc"
	}
	if !tableName.MatchString(cfg.Table) {
		return nil, fmt.Errorf("svcproxy: Config.Table %q: want a letter, then up to 62 letters, digits, '_', '.' or '-'", cfg.Table)
	}
	if !cfg.ClusterCIDR.IsValid() {
		cfg.ClusterCIDR = netip.MustParsePrefix("10.244.0.0/16")
	}
	if !cfg.ClusterCIDR.Addr().Is4() {
		return nil, fmt.Errorf("svcproxy: Config.ClusterCIDR %s: must be an IPv4 CIDR", cfg.ClusterCIDR)
	}
	cfg.ClusterCIDR = cfg.ClusterCIDR.Masked()
	if !cfg.PodCIDR.IsValid() {
		return nil, errors.New("svcproxy: Config.PodCIDR is required")
	}
	if !cfg.PodCIDR.Addr().Is4() {
		return nil, fmt.Errorf("svcproxy: Config.PodCIDR %s: must be an IPv4 CIDR", cfg.PodCIDR)
	}
	cfg.PodCIDR = cfg.PodCIDR.Masked()
	if cfg.PodCIDR.Bits() < cfg.ClusterCIDR.Bits() || !cfg.ClusterCIDR.Contains(cfg.PodCIDR.Addr()) {
		return nil, fmt.Errorf("svcproxy: Config.PodCIDR %s is not inside Config.ClusterCIDR %s", cfg.PodCIDR, cfg.ClusterCIDR)
	}
	if cfg.Bridge == "" {
		cfg.Bridge = "flotilla0"
	}
	if len(cfg.Bridge) > 15 {
		return nil, fmt.Errorf("svcproxy: Config.Bridge %q: longer than 15 bytes", cfg.Bridge)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return &Proxy{
		cfg: cfg,
		log: cfg.Logger.With("subsystem", "svcproxy", "table", cfg.Table),
		p:   params{Table: cfg.Table, ClusterCIDR: cfg.ClusterCIDR, PodCIDR: cfg.PodCIDR},
		nft: runNFT,
		now: time.Now,
	}, nil
}

// Sync makes the table match snap: every service port with a cluster IP
// reaches one of its ready endpoints at random, on the cluster IPs, the
// NodePorts (any local address) and the load-balancer and external IPs;
// a port without a ready endpoint is rejected. The table changes in one
// transaction, or not at all (the old one stays, and the error says why):
// usually just what differs from the last Sync, at times the whole table
// (transaction.go). A snapshot that renders as the table already applied
// runs no nft at all. A nil snapshot means no services.
//
// Before that it makes sure of the node plumbing (br_netfilter, hairpin
// mode on the bridge's ports); failing that is logged, not returned: the
// services work, except a pod calling a service that picks an endpoint on
// its own bridge.
func (p *Proxy) Sync(ctx context.Context, snap *svcview.Snapshot) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	start := time.Now()
	p.ensurePlumbing()

	want := render(p.p, snap)
	p.reportProblems(want)
	if p.applied != nil && p.applied.text == want.text {
		return nil
	}
	mode, err := p.apply(ctx, want)
	if err != nil {
		return err
	}
	p.lastMode = mode
	if n, err := deleteUDPFlows(staleUDP(p.udp, want.udp)); err != nil {
		p.log.Warn("cannot delete stale UDP conntrack entries", "err", err)
	} else if n > 0 {
		p.log.Debug("deleted stale UDP conntrack entries", "entries", n)
	}
	p.udp = want.udp
	p.log.Debug("services programmed", "how", mode, "services", want.services, "frontends", want.frontends,
		"endpoints", want.endpoints, "bytes", len(want.text), "took", time.Since(start))
	return nil
}

// fullSyncPeriod is how often Sync rewrites the whole table instead of
// updating what changed: a safety net should anything else edit the table.
const fullSyncPeriod = time.Hour

// apply puts want in the kernel: an update from the last applied
// rendering when there is one, else (or if that fails) a rewrite of the
// listed table, else a replacement (see transaction.go).
func (p *Proxy) apply(ctx context.Context, want *ruleset) (mode string, err error) {
	table := p.cfg.Table
	prev := p.applied
	p.applied = nil // unknown until this succeeds
	var have []object
	known := false
	switch {
	case prev == nil:
	case p.now().Sub(p.lastRewrite) >= fullSyncPeriod:
		have, known = prev.objects, true
	default:
		script, ok := updateTransaction(table, prev, want)
		if !ok {
			have, known = prev.objects, true
			break
		}
		if script == "" {
			p.applied = want
			return "none", nil
		}
		_, err := p.nft(ctx, script, "-f", "-")
		if err == nil {
			p.applied = want
			return "update", nil
		}
		if ctx.Err() != nil {
			return "", fmt.Errorf("svcproxy: updating table ip %s: %w", table, err)
		}
		p.log.Warn("updating the table failed; rewriting it", "err", err)
	}
	if !known {
		objs, err := p.listTable(ctx)
		if err != nil {
			p.log.Debug("cannot list the table; replacing it", "err", err)
		}
		have, known = objs, err == nil
	}
	if known {
		_, err := p.nft(ctx, rewriteTransaction(table, have, want), "-f", "-")
		if err == nil {
			p.applied, p.lastRewrite = want, p.now()
			return "rewrite", nil
		}
		if ctx.Err() != nil {
			return "", fmt.Errorf("svcproxy: rewriting table ip %s: %w", table, err)
		}
		p.log.Warn("rewriting the table failed; replacing it (clients of ClientIP services lose their affinity)", "err", err)
	}
	if _, err := p.nft(ctx, replaceTransaction(table, want), "-f", "-"); err != nil {
		return "", fmt.Errorf("svcproxy: replacing table ip %s: %w", table, err)
	}
	p.applied, p.lastRewrite = want, p.now()
	return "replace", nil
}

// listTable returns the chains, maps and sets of the table (none if it
// does not exist), sorted.
func (p *Proxy) listTable(ctx context.Context) ([]object, error) {
	var objs []object
	for _, what := range []string{"chains", "sets", "maps"} {
		out, err := p.nft(ctx, "", "-j", "-t", "list", what, "ip")
		if err != nil {
			return nil, fmt.Errorf("listing table ip %s: %w", p.cfg.Table, err)
		}
		o, err := parseListing(out, p.cfg.Table)
		if err != nil {
			return nil, fmt.Errorf("listing table ip %s: %w", p.cfg.Table, err)
		}
		objs = append(objs, o...)
	}
	sortObjects(objs)
	return slices.Compact(objs), nil
}

// Destroy deletes the table (a missing one is fine). It leaves br_netfilter
// and hairpin mode alone: the pod network may rely on them too. A later
// Sync programs the table again.
func (p *Proxy) Destroy(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.applied = nil
	t := p.cfg.Table
	if _, err := p.nft(ctx, fmt.Sprintf("table ip %[1]s {}\ndelete table ip %[1]s\n", t), "-f", "-"); err != nil {
		return fmt.Errorf("svcproxy: deleting table ip %s: %w", t, err)
	}
	return nil
}

func (p *Proxy) ensurePlumbing() {
	var errs []error
	if err := ensureBridgeNetfilter(); err != nil {
		errs = append(errs, err)
	}
	n, err := ensureHairpin(p.cfg.Bridge)
	if err != nil {
		errs = append(errs, err)
	}
	if n > 0 {
		p.log.Debug("hairpin mode turned on", "bridge", p.cfg.Bridge, "ports", n)
	}
	msg := ""
	if err := errors.Join(errs...); err != nil {
		msg = err.Error()
	}
	if msg != p.plumbingErr {
		if msg != "" {
			p.log.Warn("pods may not reach services whose endpoint is on their own bridge", "err", msg)
		} else {
			p.log.Info("bridge plumbing for services in place", "bridge", p.cfg.Bridge)
		}
		p.plumbingErr = msg
	}
}

// reportProblems logs frontends claimed twice and ports that got no rules,
// when that list changes.
func (p *Proxy) reportProblems(rs *ruleset) {
	report := strings.Join(rs.conflicts, "; ") + "|" + strings.Join(rs.skipped, "; ")
	if report == p.lastWarn {
		return
	}
	p.lastWarn = report
	for _, c := range rs.conflicts {
		p.log.Warn("frontend claimed twice; the later service port gets no rules for it", "frontend", c)
	}
	for _, s := range rs.skipped {
		p.log.Warn("service port not programmed", "port", s)
	}
}

func runNFT(ctx context.Context, stdin string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, "nft", args...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.Bytes(), fmt.Errorf("nft %s: %w: %s", strings.Join(args, " "), err, firstLines(errb.String(), 6))
	}
	return out.Bytes(), nil
}

// firstLines keeps an nft error readable: a failed transaction can echo
// hundreds of lines.
func firstLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = append(lines[:n], fmt.Sprintf("… (%d more lines)", len(lines)-n))
	}
	return strings.Join(lines, "\n")
}
