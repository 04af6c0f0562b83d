package join

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flotilla-dev/flotilla/internal/atomicfile"
)

// The files NodeCerts keeps in its directory.
const (
	clientKeyFile   = "node-client.key"
	clientCertFile  = "node-client.crt"
	servingKeyFile  = "node-serving.key"
	servingCertFile = "node-serving.crt"
)

// csrPath is where the server signs node certificates.
const csrPath = "/apis/certificates.k8s.io/v1/certificatesigningrequests"

// NodeCertsConfig is what LoadNodeCerts needs.
type NodeCertsConfig struct {
	// Dir keeps the keys and certificates (made 0700).
	Dir string
	// NodeName is the node the certificates are for: system:node:NAME.
	NodeName string
	// Server is the API's URL (the join token's); CAPEM the cluster CA that
	// signed its certificate, every other server's, and signs the node's.
	Server string
	CAPEM  []byte
	// Servers, if set, returns the URLs of more servers of the cluster. A
	// request that cannot connect to one server (a dial error: nothing was
	// sent) tries the next, and the one that answered is asked first the
	// next time. It is called at each request, so the list may follow the
	// cluster's membership. nil: Server alone.
	Servers func() []string
	// IPs are the addresses the serving certificate names, besides the
	// node's name.
	IPs []net.IP
	// BootstrapToken ("ID.SECRET") asks for the first client certificate,
	// and for a new one if it expired unrenewed; it is not needed while a
	// valid one is on disk.
	BootstrapToken string
	// StartExpired: when a certificate on disk has expired and no server
	// answers to issue a new one, use the expired one rather than wait:
	// a node that ran before starts its pods while every server is away
	// (its certificates lapsed meanwhile), and Run renews them, with the
	// join token, once a server answers.
	StartExpired bool
	Logger       *slog.Logger
	// Now is the clock (nil: time.Now).
	Now func() time.Time
}

// NodeCerts keeps a node's identity: a client certificate for
// system:node:NAME (the agent's API credential) and a serving certificate
// for its log endpoint, both signed by the cluster CA. The keys are made
// here and never leave Dir; the certificates are renewed, with the same
// keys, when 70–90% of their life has passed.
type NodeCerts struct {
	cfg     NodeCertsConfig
	roots   *x509.CertPool
	client  atomic.Pointer[tls.Certificate]
	serving atomic.Pointer[tls.Certificate]
	hc      *http.Client // to the API, as the node (once it has a certificate)
	log     *slog.Logger
	// current is the server that answered last ("" at first): asked first.
	current atomic.Pointer[string]
}

// ErrNodeRefused: the server refused to sign (a bad or expired token, or
// the name is another machine's). Its text is the server's reason.
var ErrNodeRefused = errors.New("the server refused this node a certificate")

// LoadNodeCerts reads the node's certificates from Dir, asking the server
// for any that is missing, for another node or CA, or expired: the client
// certificate with the bootstrap token, then the serving certificate with
// the client certificate.
func LoadNodeCerts(ctx context.Context, cfg NodeCertsConfig) (*NodeCerts, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(cfg.CAPEM) {
		return nil, errors.New("join: the cluster CA holds no PEM certificate")
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("join: %w", err)
	}
	n := &NodeCerts{cfg: cfg, roots: roots, log: cfg.Logger}
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: roots, GetClientCertificate: n.ClientCertificate}
	n.hc = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsCfg, IdleConnTimeout: time.Minute,
		DialContext: dial}}

	client, err := n.load(clientKeyFile, clientCertFile, x509.ExtKeyUsageClientAuth, false)
	if err != nil {
		if cfg.BootstrapToken == "" {
			return nil, fmt.Errorf("join: no valid node certificate in %s (%w) and no join token to ask for one", cfg.Dir, err)
		}
		n.log.Info("asking for the node's client certificate with the join token", "reason", err)
		if client, err = n.request(ctx, clientKeyFile, clientCertFile, certificatesv1.KubeAPIServerClientKubeletSignerName, cfg.BootstrapToken); err != nil {
			if client = n.expired(clientKeyFile, clientCertFile, x509.ExtKeyUsageClientAuth, err); client == nil {
				return nil, err
			}
		}
	}
	n.client.Store(client)
	serving, err := n.load(servingKeyFile, servingCertFile, x509.ExtKeyUsageServerAuth, false)
	if err != nil {
		if serving, err = n.request(ctx, servingKeyFile, servingCertFile, certificatesv1.KubeletServingSignerName, ""); err != nil {
			if serving = n.expired(servingKeyFile, servingCertFile, x509.ExtKeyUsageServerAuth, err); serving == nil {
				return nil, err
			}
		}
	}
	n.serving.Store(serving)
	return n, nil
}

// expired is the certificate on disk, expired, when StartExpired allows it
// and reqErr says that no server answered; else nil.
func (n *NodeCerts) expired(keyFile, certFile string, usage x509.ExtKeyUsage, reqErr error) *tls.Certificate {
	var op *net.OpError
	if !n.cfg.StartExpired || !errors.As(reqErr, &op) {
		return nil
	}
	pair, err := n.load(keyFile, certFile, usage, true)
	if err != nil {
		return nil
	}
	n.log.Warn("no server answers: starting with an expired node certificate; it is renewed once a server answers",
		"certificate", certFile, "expired", pair.Leaf.NotAfter)
	return pair
}

// ClientCertificate is the current client certificate, for
// tls.Config.GetClientCertificate.
func (n *NodeCerts) ClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	return n.client.Load(), nil
}

// ServingCertificate is the current serving certificate, for
// tls.Config.GetCertificate.
func (n *NodeCerts) ServingCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return n.serving.Load(), nil
}

// Roots is the cluster CA as a pool.
func (n *NodeCerts) Roots() *x509.CertPool { return n.roots }

// ClientNotAfter is when the current client certificate expires.
func (n *NodeCerts) ClientNotAfter() time.Time { return n.client.Load().Leaf.NotAfter }

// Run renews each certificate when its time comes, until ctx ends. A failed
// renewal is tried again with back-off; a client certificate that expired
// meanwhile is renewed with the join token, if it is still valid.
func (n *NodeCerts) Run(ctx context.Context) {
	type slot struct {
		cur               *atomic.Pointer[tls.Certificate]
		keyFile, certFile string
		signer            string
		due               time.Time
	}
	slots := []*slot{
		{cur: &n.client, keyFile: clientKeyFile, certFile: clientCertFile, signer: certificatesv1.KubeAPIServerClientKubeletSignerName},
		{cur: &n.serving, keyFile: servingKeyFile, certFile: servingCertFile, signer: certificatesv1.KubeletServingSignerName},
	}
	for _, s := range slots {
		s.due = renewalTime(s.cur.Load().Leaf)
	}
	backoff := time.Second
	for {
		next := slots[0]
		for _, s := range slots[1:] {
			if s.due.Before(next.due) {
				next = s
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(next.due.Sub(n.cfg.Now())):
		}
		token := ""
		if next.cur == &n.client && !n.cfg.Now().Before(n.client.Load().Leaf.NotAfter) {
			// Expired (the server was away all the while): the join token,
			// if still valid, renews it for the same key.
			token = n.cfg.BootstrapToken
		}
		cert, err := n.request(ctx, next.keyFile, next.certFile, next.signer, token)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			n.log.Warn("renewing a node certificate failed; trying again", "signer", next.signer, "err", err,
				"expires", next.cur.Load().Leaf.NotAfter, "retry_in", backoff)
			next.due = n.cfg.Now().Add(backoff)
			backoff = min(2*backoff, time.Minute)
			continue
		}
		backoff = time.Second
		next.cur.Store(cert)
		next.due = renewalTime(cert.Leaf)
		n.log.Info("node certificate renewed", "signer", next.signer, "expires", cert.Leaf.NotAfter)
		if next.cur == &n.client {
			// New connections present the new certificate.
			n.hc.CloseIdleConnections()
		}
	}
}

// renewalTime is a random moment between 70% and 90% of cert's life, as the
// kubelet's certificate manager picks.
func renewalTime(cert *x509.Certificate) time.Time {
	life := cert.NotAfter.Sub(cert.NotBefore)
	return cert.NotBefore.Add(time.Duration(float64(life) * (0.7 + 0.2*mrand.Float64())))
}

// load reads a key and certificate of Dir and checks the certificate is
// this node's, of the cluster CA, for usage, and not expired.
func (n *NodeCerts) load(keyFile, certFile string, usage x509.ExtKeyUsage, anyTime bool) (*tls.Certificate, error) {
	pair, err := tls.LoadX509KeyPair(filepath.Join(n.cfg.Dir, certFile), filepath.Join(n.cfg.Dir, keyFile))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, errors.New("none yet")
		}
		return nil, err
	}
	opts := x509.VerifyOptions{Roots: n.roots, CurrentTime: n.cfg.Now(), KeyUsages: []x509.ExtKeyUsage{usage}}
	if anyTime && pair.Leaf != nil {
		opts.CurrentTime = pair.Leaf.NotAfter // expired, but otherwise the node's
	}
	if usage == x509.ExtKeyUsageServerAuth {
		opts.DNSName = n.cfg.NodeName
	}
	if _, err := pair.Leaf.Verify(opts); err != nil {
		return nil, err
	}
	if want := "system:node:" + n.cfg.NodeName; pair.Leaf.Subject.CommonName != want {
		return nil, fmt.Errorf("it is %q's, this node is %q", pair.Leaf.Subject.CommonName, want)
	}
	if usage == x509.ExtKeyUsageServerAuth {
		for _, ip := range n.cfg.IPs {
			if pair.Leaf.VerifyHostname(ip.String()) != nil {
				return nil, fmt.Errorf("it does not name %s", ip)
			}
		}
	}
	return &pair, nil
}

// request asks the server to sign a certificate for the key of keyFile
// (made if missing) and saves it as certFile. With token it authenticates
// by the bootstrap token, else by the current client certificate.
func (n *NodeCerts) request(ctx context.Context, keyFile, certFile, signer, token string) (*tls.Certificate, error) {
	key, keyPEM, err := ensureKey(filepath.Join(n.cfg.Dir, keyFile))
	if err != nil {
		return nil, err
	}
	tmpl := &x509.CertificateRequest{Subject: pkix.Name{CommonName: "system:node:" + n.cfg.NodeName, Organization: []string{"system:nodes"}}}
	if signer == certificatesv1.KubeletServingSignerName {
		tmpl.DNSNames, tmpl.IPAddresses = []string{n.cfg.NodeName}, n.cfg.IPs
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		return nil, fmt.Errorf("join: make a certificate request: %w", err)
	}
	csr := certificatesv1.CertificateSigningRequest{
		TypeMeta:   metav1.TypeMeta{APIVersion: "certificates.k8s.io/v1", Kind: "CertificateSigningRequest"},
		ObjectMeta: metav1.ObjectMeta{GenerateName: "node-csr-"},
		Spec: certificatesv1.CertificateSigningRequestSpec{
			Request:    pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}),
			SignerName: signer,
			Usages:     []certificatesv1.KeyUsage{certificatesv1.UsageDigitalSignature, certificatesv1.UsageClientAuth},
		},
	}
	if signer == certificatesv1.KubeletServingSignerName {
		csr.Spec.Usages[1] = certificatesv1.UsageServerAuth
	}
	body, err := json.Marshal(&csr)
	if err != nil {
		return nil, err
	}
	hc := n.hc
	if token != "" {
		hc = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: n.roots}, DisableKeepAlives: true,
			DialContext: dial}}
	}
	resp, err := n.post(ctx, hc, body, token)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("join: read the signed certificate: %w", err)
	}
	if resp.StatusCode != http.StatusCreated {
		if resp.StatusCode == http.StatusUnauthorized {
			if token != "" {
				return nil, fmt.Errorf("join: %w: %s: the join token is expired, revoked or not this cluster's (`flotilla token create` on the server makes a new one)", ErrNodeRefused, resp.Status)
			}
			return nil, fmt.Errorf("join: %w: %s: the node's certificate is no longer accepted", ErrNodeRefused, resp.Status)
		}
		var st metav1.Status
		if json.Unmarshal(data, &st) == nil && st.Message != "" {
			return nil, fmt.Errorf("join: %w: %s", ErrNodeRefused, st.Message)
		}
		return nil, fmt.Errorf("join: %w: %s", ErrNodeRefused, resp.Status)
	}
	if err := json.Unmarshal(data, &csr); err != nil || len(csr.Status.Certificate) == 0 {
		return nil, fmt.Errorf("join: the server answered no certificate (%v)", err)
	}
	pair, err := tls.X509KeyPair(csr.Status.Certificate, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("join: the signed certificate: %w", err)
	}
	usage := x509.ExtKeyUsageClientAuth
	opts := x509.VerifyOptions{Roots: n.roots, CurrentTime: n.cfg.Now(), KeyUsages: []x509.ExtKeyUsage{usage}}
	if signer == certificatesv1.KubeletServingSignerName {
		opts.KeyUsages, opts.DNSName = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, n.cfg.NodeName
	}
	if _, err := pair.Leaf.Verify(opts); err != nil {
		return nil, fmt.Errorf("join: the signed certificate is not one of the cluster CA for this node: %w", err)
	}
	if err := atomicfile.WriteFile(filepath.Join(n.cfg.Dir, certFile), csr.Status.Certificate, 0o600); err != nil {
		return nil, fmt.Errorf("join: save the certificate: %w", err)
	}
	return &pair, nil
}

// post sends the certificate request body to the servers in turn, until
// one can be connected to (see NodeCertsConfig.Servers), with the bearer
// token if set. The error names each server tried.
func (n *NodeCerts) post(ctx context.Context, hc *http.Client, body []byte, token string) (*http.Response, error) {
	cur := ""
	if p := n.current.Load(); p != nil {
		cur = *p
	}
	var errs []string
	var last error
	for _, srv := range serverOrder(cur, n.cfg) {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, srv+csrPath, bytes.NewReader(body))
		if err != nil {
			return nil, fmt.Errorf("join: %w", err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json")
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := hc.Do(req)
		if err == nil {
			n.current.Store(&srv)
			return resp, nil
		}
		errs, last = append(errs, err.Error()), err
		var op *net.OpError
		if !errors.As(err, &op) || op.Op != "dial" || ctx.Err() != nil {
			break
		}
	}
	switch len(errs) {
	case 0:
		return nil, errors.New("join: no server to ask for a certificate")
	case 1:
		return nil, fmt.Errorf("join: ask for a certificate: %w", last)
	}
	// The text of every try; the last error (a dial error, or the one that
	// stopped the tries) for errors.As.
	return nil, fmt.Errorf("join: ask for a certificate: %s; %w", strings.Join(errs[:len(errs)-1], "; "), last)
}

// serverOrder lists the servers to ask, without repeats: cur (the one that
// answered last) if set, then cfg.Server, then cfg.Servers().
func serverOrder(cur string, cfg NodeCertsConfig) []string {
	list := []string{cur, cfg.Server}
	if cfg.Servers != nil {
		list = append(list, cfg.Servers()...)
	}
	var out []string
	for _, s := range list {
		if s = strings.TrimRight(s, "/"); s != "" && !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}

// dialTimeout bounds the connection to one server: a server whose host is
// down is given up in time to try the next.
const dialTimeout = 5 * time.Second

// dial connects to a server.
func dial(ctx context.Context, network, addr string) (net.Conn, error) {
	return (&net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}).DialContext(ctx, network, addr)
}

// ensureKey reads the ECDSA P-256 key at path, or makes one (0600).
func ensureKey(path string) (*ecdsa.PrivateKey, []byte, error) {
	if data, err := os.ReadFile(path); err == nil {
		block, _ := pem.Decode(data)
		if block == nil {
			return nil, nil, fmt.Errorf("join: %s is not a PEM key; remove it to make a new one", path)
		}
		key, err := x509.ParseECPrivateKey(block.Bytes)
		if err != nil {
			return nil, nil, fmt.Errorf("join: %s: %w; remove it to make a new one", path, err)
		}
		return key, data, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, nil, fmt.Errorf("join: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("join: %w", err)
	}
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	data := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})
	if err := atomicfile.WriteFile(path, data, 0o600); err != nil {
		return nil, nil, fmt.Errorf("join: save the key: %w", err)
	}
	return key, data, nil
}

// WaitNodeCerts is LoadNodeCerts waiting for a server (cfg.Server or any
// of cfg.Servers) while none answers yet (telling the user once, through
// say); a server that answers with a certificate the token's CA did not
// sign is refused at once.
func WaitNodeCerts(ctx context.Context, cfg NodeCertsConfig, say func(string, ...any)) (*NodeCerts, error) {
	for told := false; ; {
		certs, err := LoadNodeCerts(ctx, cfg)
		var verr *tls.CertificateVerificationError
		var opErr *net.OpError
		switch {
		case err == nil:
			return certs, nil
		case errors.As(err, &verr):
			return nil, fmt.Errorf("the server is not the one the join token names (its certificate is not of the token's CA): %w", err)
		case !errors.As(err, &opErr) || ctx.Err() != nil:
			return nil, fmt.Errorf("node certificate: %w", err)
		}
		if !told {
			say("waiting for the server at %s ...", strings.Join(serverOrder("", cfg), " or "))
			told = true
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Second):
		}
	}
}
