package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flotilla-dev/flotilla/cluster/apiclient"
	"github.com/flotilla-dev/flotilla/cluster/apiserver"
	"github.com/flotilla-dev/flotilla/cluster/auth"
	"github.com/flotilla-dev/flotilla/cluster/gossip"
	"github.com/flotilla-dev/flotilla/cluster/join"
	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/cluster/store/storetest"
	"github.com/flotilla-dev/flotilla/internal/testkit"
)

// TestTokenCommands: `flotilla token create` prints a join token around a
// new bootstrap token that authenticates; list shows its ID and time left,
// never its secret; revoke ends it.
func TestTokenCommands(t *testing.T) {
	api := newTestAPI(t)
	st, server, caPEM, run := api.store, api.server, api.caPEM, api.run
	ctx := context.Background()
	fp, err := join.Fingerprint(caPEM)
	if err != nil {
		t.Fatal(err)
	}

	if out, err := run("token", "create"); err == nil || !strings.Contains(out+err.Error(), "flotilla server") {
		t.Errorf("token create before the server published its join info: %v\n%s", err, out)
	}
	if err := publishJoinInfo(ctx, st, make([]byte, 32), joinInfo{server: server, gossipAddr: "127.0.0.1:7946", caFingerprint: fp, caPEM: caPEM}, false); err != nil {
		t.Fatal(err)
	}
	out, err := run("token", "create", "--ttl", "2h", "--description", "rack 3")
	if err != nil {
		t.Fatalf("token create: %v\n%s", err, out)
	}
	tok, err := join.Parse(strings.SplitN(out, "\n", 2)[0])
	if err != nil {
		t.Fatalf("token create printed no join token: %v\n%s", err, out)
	}
	if tok.Server != server || tok.CAFingerprint != fp || tok.GossipAddr != "127.0.0.1:7946" || !bytes.Equal(tok.CAPEM(), caPEM) {
		t.Errorf("join token %v", tok)
	}
	if u, err := (auth.BootstrapTokens{Store: st}).Authenticate(ctx, tok.BootstrapToken); err != nil || u.Username != "system:bootstrap:"+tok.TokenID() {
		t.Errorf("the new token authenticates as %v, %v", u, err)
	}
	_, secret, _ := strings.Cut(tok.BootstrapToken, ".")
	out, err = run("token", "list")
	if err != nil || !strings.Contains(out, tok.TokenID()) || !strings.Contains(out, "rack 3") || !(strings.Contains(out, " 2h0m ") || strings.Contains(out, " 1h59m ")) || strings.Contains(out, secret) {
		t.Errorf("token list (%v):\n%s", err, out)
	}
	if out, err := run("token", "revoke", tok.TokenID()); err != nil || !strings.Contains(out, "revoked") {
		t.Errorf("token revoke: %v\n%s", err, out)
	}
	if _, err := (auth.BootstrapTokens{Store: st}).Authenticate(ctx, tok.BootstrapToken); err == nil {
		t.Error("a revoked token still authenticates")
	}
	if out, err := run("token", "revoke", tok.TokenID()); err == nil || !strings.Contains(err.Error(), "no join token") {
		t.Errorf("revoking it again: %v\n%s", err, out)
	}
	if out, err := run("token", "list"); err != nil || !strings.Contains(out, "No join tokens") {
		t.Errorf("token list after revoke (%v):\n%s", err, out)
	}
}

// testAPI is an API server in this process with the cluster CA, bootstrap
// tokens and an admin kubeconfig; run runs the CLI against it.
type testAPI struct {
	store  *store.Badger
	server string
	caPEM  []byte
	run    func(args ...string) (string, error)
}

func newTestAPI(t *testing.T) testAPI {
	t.Helper()
	dir := t.TempDir()
	caPEM, certFile, keyFile, err := apiserver.EnsureCerts(dir, []string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	st := store.MemoryFor(t)
	srv, err := apiserver.New(apiserver.Config{Store: st, TLSCertFile: certFile, TLSKeyFile: keyFile, ClientCA: caPEM,
		Tokens: auth.BootstrapTokens{Store: st}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() { cancel(); <-done })
	server := "https://" + ln.Addr().String()
	certPEM, keyPEM, err := apiserver.IssueClientCert(dir, "admin", []string{auth.GroupMasters}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	kubeconfig := filepath.Join(dir, "kubeconfig.yaml")
	if err := apiclient.WriteKubeconfig(kubeconfig, server, caPEM, apiclient.Credential{CertPEM: certPEM, KeyPEM: keyPEM}); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) (string, error) {
		t.Helper()
		var out, errOut bytes.Buffer
		root := newRootCommand()
		root.SetArgs(append([]string{"--kubeconfig", kubeconfig}, args...))
		root.SetOut(&out)
		root.SetErr(&errOut)
		err := root.ExecuteContext(context.Background())
		return out.String() + errOut.String(), err
	}
	return testAPI{store: st, server: server, caPEM: caPEM, run: run}
}

// TestRotateGossipKey: `flotilla token rotate-gossip-key` replaces the
// gossip key in three steps; members following the Secret stay together
// through them, and afterwards the old key joins nothing.
func TestRotateGossipKey(t *testing.T) {
	api := newTestAPI(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	oldKey, err := join.NewGossipKey()
	if err != nil {
		t.Fatal(err)
	}
	if err := publishJoinInfo(ctx, api.store, oldKey, joinInfo{server: api.server, gossipAddr: "127.0.0.1:7946", caFingerprint: "x"}, false); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	member := func(name string, key []byte) *gossip.Membership {
		m, err := gossip.New(gossip.Config{NodeName: name, BindAddr: "127.0.0.1", BindPort: gossip.AnyPort, Key: key,
			Meta: gossip.Meta{Role: gossip.RoleAgent, NodeName: name}, Logger: log})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = m.Shutdown() })
		return m
	}
	a, b := member("a", oldKey), member("b", oldKey)
	if err := b.Join(ctx, []string{a.Local().Addr.String()}); err != nil {
		t.Fatal(err)
	}
	for _, m := range []*gossip.Membership{a, b} {
		go followGossipKeys(ctx, api.store, m, 100*time.Millisecond, log, nil)
	}
	out, err := api.run("token", "rotate-gossip-key", "--step-wait", "1s")
	if err != nil || !strings.Contains(out, "step 3 of 3") || !strings.Contains(out, "rotated") {
		t.Fatalf("rotate-gossip-key: %v\n%s", err, out)
	}
	keys, err := readGossipKeys(ctx, api.store)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(keys.primary, oldKey) || len(keys.others) != 0 {
		t.Fatalf("after the rotation: %d other keys, primary changed %v", len(keys.others), !bytes.Equal(keys.primary, oldKey))
	}
	testkit.EventuallyTrue(t, "both members on the new key only, still together", 10*time.Second, func() bool {
		return len(a.Members()) == 2 && len(b.Members()) == 2
	})
	jctx, jcancel := context.WithTimeout(ctx, 30*time.Second)
	defer jcancel()
	testkit.EventuallyTrue(t, "the old key is dropped everywhere", 10*time.Second, func() bool {
		return errors.Is(member(fmt.Sprintf("stale-%d", time.Now().UnixNano()), oldKey).Join(jctx, []string{a.Local().Addr.String()}), gossip.ErrKeyMismatch)
	})
	if err := member("fresh", keys.primary).Join(jctx, []string{b.Local().Addr.String()}); err != nil {
		t.Errorf("a member with the new key: %v", err)
	}
}

// TestPublishJoinInfoConcurrently: a server elected as it starts publishes
// the join info twice at once (its start, and its leadership); neither may
// fail on the other's write (a conflict made the server exit).
func TestPublishJoinInfoConcurrently(t *testing.T) {
	st := storetest.OneVoter(t)
	ctx := t.Context()
	var wg sync.WaitGroup
	errs := make(chan error, 4*25)
	for w := range 4 {
		wg.Go(func() {
			for i := range 25 {
				info := joinInfo{server: fmt.Sprintf("https://10.0.0.%d:6443", w+1), gossipAddr: "10.0.0.1:7946", caFingerprint: fmt.Sprint(i)}
				if err := publishJoinInfo(ctx, st, make([]byte, 32), info, false); err != nil {
					errs <- fmt.Errorf("writer %d, try %d: %w", w, i, err)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got, err := readJoinInfo(ctx, st); err != nil || !strings.HasPrefix(got.server, "https://10.0.0.") {
		t.Fatalf("join info after the writes: %+v, %v", got, err)
	}
}
