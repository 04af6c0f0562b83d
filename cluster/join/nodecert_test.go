package join_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flotilla-dev/flotilla/cluster/apiserver"
	"github.com/flotilla-dev/flotilla/cluster/auth"
	"github.com/flotilla-dev/flotilla/cluster/join"
	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/internal/testkit"
)

// apiFixture is a real API server with the cluster CA, bootstrap tokens
// and RBAC, signing node certificates valid for ttl.
type apiFixture struct {
	url   string
	caPEM []byte
	store *store.Badger
	stop  func() // ends the server (then its port refuses connections)
}

func newAPI(t *testing.T, ttl time.Duration) apiFixture {
	t.Helper()
	return newAPIs(t, ttl, 1)[0]
}

// newAPIs is n API servers of one cluster: one store, one CA, each server
// on its own port.
func newAPIs(t *testing.T, ttl time.Duration, n int) []apiFixture {
	t.Helper()
	dir := t.TempDir()
	caPEM, certFile, keyFile, err := apiserver.EnsureCerts(dir, []string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	signer, err := apiserver.LoadSigner(dir)
	if err != nil {
		t.Fatal(err)
	}
	st := store.MemoryFor(t)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx, cancel := context.WithCancel(context.Background())
	rbac, err := auth.NewRBAC(ctx, st, log)
	if err != nil {
		t.Fatal(err)
	}
	rbacDone := make(chan struct{})
	go func() { rbac.Run(ctx); close(rbacDone) }()
	t.Cleanup(func() { cancel(); <-rbacDone })
	var out []apiFixture
	for range n {
		srv, err := apiserver.New(apiserver.Config{Store: st, TLSCertFile: certFile, TLSKeyFile: keyFile, ClientCA: caPEM,
			Tokens: auth.BootstrapTokens{Store: st}, Signer: signer, NodeCertTTL: ttl, Authorizer: auth.NodeAuthorizer{Store: st, Next: rbac}, Logger: log})
		if err != nil {
			t.Fatal(err)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		sctx, stop := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { _ = srv.Serve(sctx, ln); close(done) }()
		stopped := func() { stop(); <-done }
		t.Cleanup(stopped)
		out = append(out, apiFixture{url: "https://" + ln.Addr().String(), caPEM: caPEM, store: st, stop: stopped})
	}
	return out
}

// token stores a bootstrap token made at issued, valid for ttl.
func (a apiFixture) token(t *testing.T, issued time.Time, ttl time.Duration) string {
	t.Helper()
	tok, secret, err := auth.NewBootstrapToken(issued, ttl, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.store.Create(context.Background(), secret); err != nil {
		t.Fatal(err)
	}
	return tok
}

// get is GET path as the node whose certificate certs holds.
func (a apiFixture) get(t *testing.T, certs *join.NodeCerts, path string) int {
	t.Helper()
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: certs.Roots(), GetClientCertificate: certs.ClientCertificate}}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Get(a.url + path)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func serial(t *testing.T, get func(*tls.CertificateRequestInfo) (*tls.Certificate, error)) string {
	c, err := get(nil)
	if err != nil || c == nil || c.Leaf == nil {
		t.Fatalf("no certificate: %v", err)
	}
	return c.Leaf.SerialNumber.String()
}

// TestNodeCertsJoinAndRotate: the join token buys the node its client and
// serving certificates (kept 0600 in the directory, reused on restart
// without the token); with a 6 s life they are renewed again and again, and
// the node keeps its API access across three renewals. Another machine
// cannot take the name; an expired token buys nothing.
func TestNodeCertsJoinAndRotate(t *testing.T) {
	api := newAPI(t, 6*time.Second)
	ctx := context.Background()
	dir := t.TempDir()
	cfg := join.NodeCertsConfig{Dir: dir, NodeName: "n1", Server: api.url, CAPEM: api.caPEM,
		IPs: []net.IP{net.IPv4(127, 0, 0, 1)}, BootstrapToken: api.token(t, time.Now(), time.Hour)}
	certs, err := join.LoadNodeCerts(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"node-client.key", "node-client.crt", "node-serving.key", "node-serving.crt"} {
		fi, err := os.Stat(filepath.Join(dir, f))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v, mode %v; want 0600", f, err, fi.Mode())
		}
	}
	srv, _ := certs.ServingCertificate(nil)
	if srv.Leaf.VerifyHostname("n1") != nil || srv.Leaf.VerifyHostname("127.0.0.1") != nil {
		t.Errorf("serving certificate names %v %v", srv.Leaf.DNSNames, srv.Leaf.IPAddresses)
	}
	if code := api.get(t, certs, "/api/v1/pods"); code != http.StatusOK {
		t.Fatalf("as n1: GET pods = %d", code)
	}

	// A restart reads the certificates back; no token needed.
	cfg.BootstrapToken = ""
	again, err := join.LoadNodeCerts(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if serial(t, again.ClientCertificate) != serial(t, certs.ClientCertificate) {
		t.Error("a restart asked for a new certificate instead of reading its own")
	}

	// Three renewals, and the node can still read.
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { again.Run(rctx); close(done) }()
	defer func() { cancel(); <-done }()
	seen := map[string]bool{serial(t, again.ClientCertificate): true}
	testkit.EventuallyTrue(t, "three renewals of the client certificate", 60*time.Second, func() bool {
		seen[serial(t, again.ClientCertificate)] = true
		return len(seen) >= 4
	})
	if code := api.get(t, again, "/api/v1/pods"); code != http.StatusOK {
		t.Errorf("after three renewals: GET pods = %d", code)
	}
	leaf, _ := again.ClientCertificate(nil)
	if _, err := leaf.Leaf.Verify(x509.VerifyOptions{Roots: again.Roots(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("the renewed certificate: %v", err)
	}

	// Another machine claiming n1, and a node with an expired token.
	_, err = join.LoadNodeCerts(ctx, join.NodeCertsConfig{Dir: t.TempDir(), NodeName: "n1", Server: api.url, CAPEM: api.caPEM,
		BootstrapToken: api.token(t, time.Now(), time.Hour), Logger: slog.New(slog.DiscardHandler)})
	if !errors.Is(err, join.ErrNodeRefused) || !strings.Contains(err.Error(), "already in the cluster") {
		t.Errorf("a second n1: %v", err)
	}
	_, err = join.LoadNodeCerts(ctx, join.NodeCertsConfig{Dir: t.TempDir(), NodeName: "n2", Server: api.url, CAPEM: api.caPEM,
		BootstrapToken: api.token(t, time.Now().Add(-time.Hour), time.Minute)})
	if !errors.Is(err, join.ErrNodeRefused) || !strings.Contains(err.Error(), "the join token is expired, revoked") {
		t.Errorf("an expired token: %v", err)
	}
}

// TestWaitNodeCerts: an agent started before its server waits for it,
// saying so once; a server that answers with a certificate of another CA
// than the token's is refused at once, never waited for.
func TestWaitNodeCerts(t *testing.T) {
	api := newAPI(t, time.Hour)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "https://" + ln.Addr().String()
	ln.Close() // nothing answers there
	said := 0
	say := func(string, ...any) { said++ }
	cfg := join.NodeCertsConfig{Dir: t.TempDir(), NodeName: "n1", Server: closed, CAPEM: api.caPEM,
		BootstrapToken: api.token(t, time.Now(), time.Hour), Logger: slog.New(slog.DiscardHandler)}
	ctx, cancel := context.WithTimeout(context.Background(), 2500*time.Millisecond)
	defer cancel()
	if _, err := join.WaitNodeCerts(ctx, cfg, say); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("no server: %v, want to wait until the context ends", err)
	}
	if said != 1 {
		t.Errorf("said %d times while waiting, want once", said)
	}

	other := newAPI(t, time.Hour)
	cfg.Dir, cfg.Server, cfg.CAPEM = t.TempDir(), other.url, api.caPEM
	said = 0
	start := time.Now()
	_, err = join.WaitNodeCerts(context.Background(), cfg, say)
	if err == nil || !strings.Contains(err.Error(), "not the one the join token names") {
		t.Errorf("a server of another CA: %v, want a refusal", err)
	}
	if said != 0 || time.Since(start) > 10*time.Second {
		t.Errorf("a server of another CA was waited for (said %d times, %v)", said, time.Since(start))
	}

	cfg.Dir, cfg.Server = t.TempDir(), api.url
	certs, err := join.WaitNodeCerts(context.Background(), cfg, say)
	if err != nil {
		t.Fatalf("the token's server: %v", err)
	}
	if said != 0 || certs.ClientNotAfter().Before(time.Now()) {
		t.Errorf("the token's server: said %d times, certificate until %v", said, certs.ClientNotAfter())
	}
}

// TestNodeCertsFailover: the first certificates come from a server of the
// list when the token's refuses connections; renewals go to the server
// that answered last, and to the next one when it is gone; the list is
// read again at each request.
func TestNodeCertsFailover(t *testing.T) {
	apis := newAPIs(t, 3*time.Second, 2)
	a, b := apis[0], apis[1]
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "https://" + ln.Addr().String()
	ln.Close()
	var more atomic.Pointer[[]string]
	more.Store(&[]string{a.url})
	cfg := join.NodeCertsConfig{Dir: t.TempDir(), NodeName: "n1", Server: dead, Servers: func() []string { return *more.Load() },
		CAPEM: a.caPEM, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}, BootstrapToken: a.token(t, time.Now(), time.Hour),
		Logger: slog.New(slog.DiscardHandler)}
	said := 0
	certs, err := join.WaitNodeCerts(context.Background(), cfg, func(string, ...any) { said++ })
	if err != nil {
		t.Fatalf("with the token's server down: %v", err)
	}
	if said != 0 {
		t.Errorf("said %d times, want no wait: a server of the list answered", said)
	}

	more.Store(&[]string{a.url, b.url})
	a.stop()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { certs.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	first := serial(t, certs.ClientCertificate)
	testkit.EventuallyTrue(t, "a renewal through the second server", 30*time.Second, func() bool {
		return serial(t, certs.ClientCertificate) != first
	})
	if code := b.get(t, certs, "/api/v1/pods"); code != http.StatusOK {
		t.Errorf("after the renewal: GET pods = %d", code)
	}

	// None answers: the error names each server and is a dial error.
	cfg.Dir, cfg.Server, cfg.Servers = t.TempDir(), dead, func() []string { return []string{a.url} }
	_, err = join.LoadNodeCerts(context.Background(), cfg)
	var op *net.OpError
	if !errors.As(err, &op) || !strings.Contains(err.Error(), strings.TrimPrefix(dead, "https://")) ||
		!strings.Contains(err.Error(), strings.TrimPrefix(a.url, "https://")) {
		t.Errorf("no server answers: %v, want a dial error naming both", err)
	}
}

// TestStartExpired: a node whose certificates lapsed while no server
// answered starts with them when StartExpired says so (it ran before:
// its pods start from its own state), and waits for a server otherwise.
func TestStartExpired(t *testing.T) {
	api := newAPI(t, time.Hour)
	cfg := join.NodeCertsConfig{Dir: t.TempDir(), NodeName: "n1", Server: api.url, CAPEM: api.caPEM,
		BootstrapToken: api.token(t, time.Now(), time.Hour), Logger: slog.New(slog.DiscardHandler)}
	if _, err := join.WaitNodeCerts(context.Background(), cfg, func(string, ...any) {}); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Server = "https://" + ln.Addr().String()
	ln.Close() // no server answers now
	later := time.Now().Add(3 * time.Hour)
	cfg.Now = func() time.Time { return later } // every certificate on disk has expired

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := join.WaitNodeCerts(ctx, cfg, func(string, ...any) {}); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("expired certificates, no server, StartExpired unset: %v, want to wait", err)
	}
	cfg.StartExpired = true
	certs, err := join.WaitNodeCerts(context.Background(), cfg, func(string, ...any) {})
	if err != nil {
		t.Fatalf("expired certificates, no server, StartExpired: %v", err)
	}
	if na := certs.ClientNotAfter(); !na.Before(later) {
		t.Errorf("the client certificate runs until %v: not the expired one", na)
	}
}
