// Package ingress is the ingress controller every node agent runs: it serves
// networking.k8s.io/v1 Ingresses as an HTTP(S) reverse proxy to the ready
// endpoints of their services.
//
// The agent hands it each new svcview.Snapshot with Update; the proxy
// builds a whole new routing table (hosts, paths, backends, TLS
// certificates) from it and swaps it in atomically, so a request is routed
// by exactly one snapshot and Update never blocks requests.
//
// Routing follows the Ingress specification:
//
//   - A rule's host is exact ("foo.com") or a wildcard ("*.foo.com", which
//     matches exactly one more label: "a.foo.com", not "foo.com" nor
//     "a.b.foo.com"); a rule without a host matches every host. Host names
//     are compared case-insensitively and the request's port is ignored.
//   - Paths: Exact compares the whole path; Prefix compares '/'-separated
//     elements ("/foo" matches "/foo" and "/foo/bar", not "/foobar"; a
//     trailing slash on either side is ignored); ImplementationSpecific is
//     Prefix. The longest matching path wins, and Exact beats Prefix of the
//     same length. Request paths are matched after cleaning ("/a/../b" is
//     "/b"), the way the backend will read them.
//   - Hosts are tried from the most specific down: the exact host's rules,
//     then the wildcard's, then the rules without a host; the first of them
//     with a matching path serves the request. When none matches, the
//     spec.defaultBackend of the oldest Ingress that has one serves it; when
//     there is none either, the answer is 404.
//   - Rules of all Ingresses are merged. Where two route the same host,
//     path and path type, the older Ingress (creationTimestamp, then
//     namespace and name) wins and the conflict is logged.
//
// Ingresses whose spec.ingressClassName (or, when unset, legacy annotation
// kubernetes.io/ingress.class) names another class are ignored.
//
// TLS: each spec.tls entry's certificate (a kubernetes.io/tls Secret in the
// Ingress's namespace) is served to clients whose SNI names one of the
// entry's hosts (exact, then wildcard); an entry without hosts covers the
// DNS names of its certificate. Any other client gets a self-signed
// default certificate made at New. HTTPS requests are routed by the same
// rules as HTTP; plain HTTP is not redirected to HTTPS.
package ingress

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/flotilla-dev/flotilla/netfabric/svcview"
)

// Off, as Config.HTTPAddr or Config.HTTPSAddr, disables that listener.
const Off = "off"

// DefaultClassName is the ingress class served when Config.ClassName is
// empty.
const DefaultClassName = "flotilla"

// Config configures a Proxy. Zero values mean the defaults.
type Config struct {
	// HTTPAddr is where plain HTTP is served (the agent's
	// --ingress-http-addr). Default ":80", every address of the node.
	// Off disables it.
	HTTPAddr string
	// HTTPSAddr is where HTTPS is served (the agent's
	// --ingress-https-addr). Default ":443". Off disables it. Ports below
	// 1024 need root or CAP_NET_BIND_SERVICE.
	HTTPSAddr string
	// ClassName is the ingress class this controller serves: Ingresses
	// whose spec.ingressClassName is empty or equal to it. Default
	// "flotilla". The others are ignored, so another controller may serve
	// them.
	ClassName string
	// Logger receives the proxy's logs. Default: discard.
	Logger *slog.Logger
}

// Timeouts of the listeners and of the connections to endpoints. Requests
// and responses themselves have no overall deadline: streams, long polls
// and WebSockets pass.
const (
	// readHeaderTimeout bounds a client's request line and headers.
	readHeaderTimeout = 10 * time.Second
	// idleTimeout closes a client's keep-alive connection idle this long.
	idleTimeout = 2 * time.Minute
	// dialTimeout bounds connecting to an endpoint; an endpoint that does
	// not answer in time is a 502.
	dialTimeout = 5 * time.Second
	// responseHeaderTimeout bounds an endpoint's wait before its response
	// headers (ingress-nginx's proxy-read-timeout is 60s too).
	responseHeaderTimeout = 60 * time.Second
	// backendIdleTimeout closes an idle keep-alive connection to an
	// endpoint, including one to an endpoint that has gone away.
	backendIdleTimeout = 90 * time.Second
	// shutdownTimeout is how long Run waits for requests in flight when its
	// context ends before closing their connections.
	shutdownTimeout = 5 * time.Second
	// errorLogEvery rate-limits the log of failed requests to one service.
	errorLogEvery = 30 * time.Second
)

// Proxy is the ingress proxy of one node. It is safe for concurrent use.
type Proxy struct {
	cfg         Config
	log         *slog.Logger
	defaultCert *tls.Certificate
	transport   *http.Transport
	handler     http.Handler
	table       atomic.Pointer[table] // nil until the first Update
	errLimit    *rateLimiter          // backend failures, by service
	debugLog    *log.Logger           // net/http's complaints (TLS handshakes, clients gone mid-body): noise

	mu        sync.Mutex // serialises Update; guards the fields below
	last      *svcview.Snapshot
	certCache map[nsName]certEntry // parsed certificates, by secret
	problems  map[problem]bool     // what the last Update logged
}

// New validates cfg and returns a Proxy that routes nothing until the first
// Update (requests get 503). It generates the default certificate; it does
// not listen: call Run (or Serve).
func New(cfg Config) (*Proxy, error) {
	if cfg.HTTPAddr == "" {
		cfg.HTTPAddr = ":80"
	}
	if cfg.HTTPSAddr == "" {
		cfg.HTTPSAddr = ":443"
	}
	if err := checkAddr("Config.HTTPAddr", "--ingress-http-addr", cfg.HTTPAddr); err != nil {
		return nil, err
	}
	if err := checkAddr("Config.HTTPSAddr", "--ingress-https-addr", cfg.HTTPSAddr); err != nil {
		return nil, err
	}
	if cfg.HTTPAddr == Off && cfg.HTTPSAddr == Off {
		return nil, errors.New("ingress: both listeners are off (--ingress-http-addr=off and --ingress-https-addr=off): nothing to serve; do not start the ingress instead")
	}
	if cfg.ClassName == "" {
		cfg.ClassName = DefaultClassName
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	cert, err := selfSignedCert(time.Now())
	if err != nil {
		return nil, fmt.Errorf("ingress: generate the default certificate: %w", err)
	}
	p := &Proxy{
		cfg:         cfg,
		log:         cfg.Logger.With("subsystem", "ingress"),
		defaultCert: cert,
		transport:   newTransport(),
		errLimit:    newRateLimiter(errorLogEvery, time.Now),
		certCache:   map[nsName]certEntry{},
		problems:    map[problem]bool{},
	}
	p.debugLog = slog.NewLogLogger(p.log.Handler(), slog.LevelDebug)
	p.handler = http.HandlerFunc(p.serveHTTP)
	return p, nil
}

func checkAddr(field, flag, addr string) error {
	if addr == Off {
		return nil
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return fmt.Errorf("ingress: %s %q: want host:port (e.g. \":80\") or %q; set it with %s: %w", field, addr, Off, flag, err)
	}
	return nil
}

// Update makes snap the source of all routes and certificates, from the
// next request on. snap is only read, never changed, and may be kept by the
// caller; nil removes every route. Problems found in it (a missing service
// or Secret, a bad certificate, conflicting rules) are logged once each,
// when they appear and when they are resolved, never per request. Update
// may be called from any goroutine; calls are serialised.
func (p *Proxy) Update(snap *svcview.Snapshot) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if snap == p.last && p.table.Load() != nil {
		return
	}
	p.last = snap
	ings := servedIngresses(snap, p.cfg.ClassName)
	t, probs := buildTable(snap, ings)
	certs, certProbs := p.buildCerts(snap, ings, time.Now())
	t.certs = certs
	for _, pl := range t.pools {
		pl.rp = p.reverseProxy(pl)
	}
	p.table.Store(t)
	p.logProblems(append(probs, certProbs...))
	p.log.Debug("routing table updated", "ingresses", len(ings), "hosts", len(t.exact)+len(t.wildcard),
		"routes", t.routes, "backends", len(t.pools), "certificates", certs.count)
}

// logProblems logs the problems that are new since the last Update and
// those that have gone.
func (p *Proxy) logProblems(probs []problem) {
	now := make(map[problem]bool, len(probs))
	for _, pr := range probs {
		if now[pr] {
			continue
		}
		now[pr] = true
		if !p.problems[pr] {
			p.log.Warn("ingress problem", "ingress", pr.ingress, "problem", pr.msg)
		}
	}
	for pr := range p.problems {
		if !now[pr] {
			p.log.Info("ingress problem resolved", "ingress", pr.ingress, "problem", pr.msg)
		}
	}
	p.problems = now
}

// Handler returns the proxy's HTTP handler, which routes by the current
// table: what Run serves on both listeners.
func (p *Proxy) Handler() http.Handler { return p.handler }

// TLSConfig returns a new TLS configuration for serving the proxy's HTTPS
// with any listener: certificates by SNI from the current table, TLS 1.2
// or newer, HTTP/2 and HTTP/1.1.
func (p *Proxy) TLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		NextProtos:     []string{"h2", "http/1.1"},
		GetCertificate: p.getCertificate,
	}
}

func (p *Proxy) getCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	if t := p.table.Load(); t != nil && t.certs != nil {
		if c := t.certs.get(hello.ServerName); c != nil {
			return c, nil
		}
	}
	return p.defaultCert, nil
}

// Run listens on Config.HTTPAddr and Config.HTTPSAddr (those not Off) and
// serves them until ctx ends; then it waits a few seconds for requests in
// flight and returns nil. An address it cannot listen on is an error
// returned at once, naming the address and the flag that changes it.
func (p *Proxy) Run(ctx context.Context) error {
	var lc net.ListenConfig
	var httpLn, httpsLn net.Listener
	if p.cfg.HTTPAddr != Off {
		ln, err := lc.Listen(ctx, "tcp", p.cfg.HTTPAddr)
		if err != nil {
			return listenError("HTTP", p.cfg.HTTPAddr, "--ingress-http-addr", err)
		}
		httpLn = ln
	}
	if p.cfg.HTTPSAddr != Off {
		ln, err := lc.Listen(ctx, "tcp", p.cfg.HTTPSAddr)
		if err != nil {
			if httpLn != nil {
				httpLn.Close()
			}
			return listenError("HTTPS", p.cfg.HTTPSAddr, "--ingress-https-addr", err)
		}
		httpsLn = ln
	}
	return p.Serve(ctx, httpLn, httpsLn)
}

func listenError(what, addr, flag string, err error) error {
	why := "cannot listen there"
	switch {
	case errors.Is(err, syscall.EADDRINUSE):
		why = "the address is in use: another web server or ingress controller may hold it"
	case errors.Is(err, syscall.EACCES):
		why = "permission denied: ports below 1024 need root or CAP_NET_BIND_SERVICE"
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		why = "no interface of this node has that address"
	}
	return fmt.Errorf("ingress: listen for %s on %s: %s; choose another address with %s (or %s=%s to disable %s): %w",
		what, addr, why, flag, flag, Off, what, err)
}

// Serve is Run on listeners the caller opened (either may be nil, not
// both): plain HTTP on httpLn, HTTPS (TLSConfig) on httpsLn. It closes
// them when it returns.
func (p *Proxy) Serve(ctx context.Context, httpLn, httpsLn net.Listener) error {
	if httpLn == nil && httpsLn == nil {
		return errors.New("ingress: Serve: no listener")
	}
	type served struct {
		name string
		srv  *http.Server
	}
	var servers []served
	errc := make(chan error, 2)
	start := func(name string, ln net.Listener, tlsConf *tls.Config) {
		srv := &http.Server{
			Handler:           p.handler,
			TLSConfig:         tlsConf,
			ReadHeaderTimeout: readHeaderTimeout,
			IdleTimeout:       idleTimeout,
			ErrorLog:          p.debugLog,
		}
		servers = append(servers, served{name, srv})
		p.log.Info("serving ingress", "protocol", name, "addr", ln.Addr().String())
		go func() {
			var err error
			if tlsConf != nil {
				err = srv.ServeTLS(ln, "", "")
			} else {
				err = srv.Serve(ln)
			}
			if err != nil && !errors.Is(err, http.ErrServerClosed) {
				err = fmt.Errorf("ingress: serve %s on %s: %w", name, ln.Addr(), err)
			} else {
				err = nil
			}
			errc <- err
		}()
	}
	if httpLn != nil {
		start("HTTP", httpLn, nil)
	}
	if httpsLn != nil {
		start("HTTPS", httpsLn, p.TLSConfig())
	}

	var err error
	pending := len(servers)
	select {
	case <-ctx.Done():
	case err = <-errc:
		pending--
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancel()
	for _, s := range servers {
		if serr := s.srv.Shutdown(sctx); serr != nil {
			p.log.Warn("requests still in flight at shutdown; closing their connections", "protocol", s.name, "err", serr)
			s.srv.Close()
		}
	}
	for ; pending > 0; pending-- {
		if e := <-errc; err == nil {
			err = e
		}
	}
	p.transport.CloseIdleConnections()
	return err
}

// serveHTTP routes one request by the current table.
func (p *Proxy) serveHTTP(w http.ResponseWriter, r *http.Request) {
	t := p.table.Load()
	if t == nil {
		plainError(w, http.StatusServiceUnavailable, "ingress routes are not loaded yet")
		return
	}
	pl := t.match(requestHost(r.Host), cleanPath(r.URL.Path))
	if pl == nil {
		plainError(w, http.StatusNotFound, "404 not found: no ingress rule matches this host and path")
		return
	}
	if pl.unavailable != "" {
		plainError(w, http.StatusServiceUnavailable, pl.unavailable)
		return
	}
	pl.rp.ServeHTTP(w, r)
}

// plainError answers with a short text the client sees as it is.
func plainError(w http.ResponseWriter, code int, msg string) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	io.WriteString(w, msg+"\n")
}
