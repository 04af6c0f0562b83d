// Package apiserver serves Flotilla's store over a subset of the Kubernetes
// REST API (same paths, JSON, list/watch semantics, Status errors and
// discovery), so that the flotilla CLI, node agents and the real kubectl can
// read and write the cluster. Every write passes the write pipeline
// (cluster/admission); objects that come from Git are read-only here.
package apiserver

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime/debug"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flotilla-dev/flotilla/cluster/admission"
	"github.com/flotilla-dev/flotilla/cluster/auth"
	"github.com/flotilla-dev/flotilla/cluster/store"
)

// DefaultAddr is where ListenAndServe listens when Config.Addr is empty.
const DefaultAddr = ":6443"

// DefaultMaxBodyBytes limits request bodies when Config.MaxBodyBytes is 0
// (the Kubernetes apiserver's own limit).
const DefaultMaxBodyBytes = 3 << 20

// Config is what New needs.
type Config struct {
	// Addr is the TCP address ListenAndServe listens on; "" means DefaultAddr.
	Addr string
	// Store holds the objects; the server reads and watches it directly.
	// Required.
	Store store.Interface
	// Admission is the write pipeline every create, update, patch, status
	// write and delete passes, as a User's (admission.Pipeline.Store over
	// Store). nil: a pipeline without the CUE schema (defaults, Go checks
	// and admission only), for tests of other parts; New logs a warning
	// then. The servers always set it.
	Admission *admission.Pipeline
	// ClientCA is the cluster CA in PEM: a client certificate it signed
	// authenticates its common name as the user and its organizations as
	// groups (needs TLS).
	ClientCA []byte
	// Token is a static bearer token that authenticates as TokenUser (for
	// automation and tests; the flotilla servers set none). With neither
	// ClientCA, Token nor Tokens every request is a member of
	// system:masters (tests); New logs a warning then.
	Token string
	// TokenUser is who Token authenticates as; nil means
	// "system:flotilla:static-token" in system:masters.
	TokenUser *auth.User
	// Tokens authenticates bearer tokens other than Token (bootstrap
	// tokens); nil: none.
	Tokens TokenAuthenticator
	// Signer signs node certificates (POST …/certificatesigningrequests);
	// nil: none are.
	Signer *Signer
	// NodeCertTTL is how long node certificates are valid; 0 means
	// DefaultNodeCertTTL.
	NodeCertTTL time.Duration
	// Audit receives an event per request (see Auditor); nil: no audit
	// log.
	Audit *Auditor
	// Authorizer decides every authenticated request; nil allows them all
	// (tests; New logs a warning then).
	Authorizer auth.Authorizer
	// TLSCertFile and TLSKeyFile are the server certificate and key in PEM
	// (see EnsureCerts). Both empty: plain HTTP.
	TLSCertFile, TLSKeyFile string
	// Logs serves pod logs; nil answers 503 to log requests.
	Logs LogSource
	// Streams serves exec, attach and port-forward; nil answers 503.
	Streams StreamSource
	// Metrics is the process's Prometheus registry: the server adds its
	// families (apiserver_request_total …) and serves it at MetricsPath.
	// nil: a registry of the server's own (NewRegistry).
	Metrics *prometheus.Registry
	// ResourceMetrics feeds the metrics API (metrics.k8s.io: kubectl top)
	// from the agents; nil answers 503 there.
	ResourceMetrics ResourceMetrics
	// Logger receives request errors; nil means slog.Default().
	Logger *slog.Logger
	// MaxBodyBytes limits request bodies; 0 means DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// ShutdownTimeout bounds the graceful shutdown; 0 means 10s.
	ShutdownTimeout time.Duration
	// Extra are more handlers, by exact path, served behind the bearer
	// token: e.g. the sync trigger at SyncPath.
	Extra map[string]http.Handler
	// Open are more handlers, by exact path, served without the bearer
	// token because they authenticate themselves (the Git webhook checks its
	// HMAC signature).
	Open map[string]http.Handler
}

// TokenAuthenticator finds the user of a bearer token: auth.ErrBadToken
// when it is not one of its tokens.
type TokenAuthenticator interface {
	Authenticate(ctx context.Context, token string) (*auth.User, error)
}

// SyncPath is where `flotilla sync` asks the server to fetch and apply the
// newest commit now (POST; the answer is the SyncStatus object).
const SyncPath = "/apis/flotilla.dev/v1alpha1/syncstatuses/default/sync"

// Server is the API server. Create it with New. It serves until the first
// Serve's context ends; a stopped Server is not restarted.
type Server struct {
	cfg     Config
	log     *slog.Logger
	handler http.Handler
	writes  *admission.Store // Store, written through the pipeline
	metrics *requestMetrics

	stopOnce sync.Once
	stopping chan struct{} // closed on shutdown: ends watches and log follows
}

// New checks cfg and builds a server.
func New(cfg Config) (*Server, error) {
	if cfg.Store == nil {
		return nil, errors.New("apiserver: Config.Store is required")
	}
	if (cfg.TLSCertFile == "") != (cfg.TLSKeyFile == "") {
		return nil, errors.New("apiserver: TLSCertFile and TLSKeyFile go together")
	}
	if cfg.Addr == "" {
		cfg.Addr = DefaultAddr
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if cfg.NodeCertTTL <= 0 {
		cfg.NodeCertTTL = DefaultNodeCertTTL
	}
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = 10 * time.Second
	}
	s := &Server{cfg: cfg, log: cfg.Logger, stopping: make(chan struct{})}
	if s.log == nil {
		s.log = slog.Default()
	}
	s.log = s.log.With("component", "apiserver")
	if cfg.Admission == nil {
		p, err := admission.New(admission.Config{})
		if err != nil {
			return nil, fmt.Errorf("apiserver: %w", err)
		}
		cfg.Admission, s.cfg.Admission = p, p
		s.log.Warn("API writes are not validated against the CUE schema (no Config.Admission)")
	}
	s.writes = cfg.Admission.Store(cfg.Store, admission.User)
	if cfg.Token == "" && len(cfg.ClientCA) == 0 && cfg.Tokens == nil {
		s.log.Warn("API authentication is disabled (no client CA or token configured)")
	}
	if s.cfg.TokenUser == nil {
		s.cfg.TokenUser = auth.NewUser("system:flotilla:static-token", auth.GroupMasters)
	}
	if cfg.Authorizer == nil {
		s.log.Warn("API authorization is disabled (no authorizer): every authenticated user may do anything")
	}
	if cfg.Metrics == nil {
		s.cfg.Metrics = NewRegistry()
	}
	s.metrics = newRequestMetrics(s.cfg.Metrics)
	mux := http.NewServeMux()
	mux.Handle(MetricsPath, metricsHandler(s.cfg.Metrics))
	mux.HandleFunc("/healthz", s.health)
	mux.HandleFunc("/readyz", s.health)
	mux.HandleFunc("/livez", s.health)
	mux.HandleFunc("/version", s.version)
	mux.HandleFunc("/api", s.discoveryCore)
	mux.HandleFunc("/apis", s.discoveryGroups)
	mux.HandleFunc("/api/", s.serveResource)
	mux.HandleFunc("/apis/", s.serveResource)
	mux.HandleFunc("/openapi/v2", s.openAPIV2)
	mux.HandleFunc("/openapi/v3", s.openAPIV3)
	mux.HandleFunc("/openapi/v3/", s.openAPIV3)
	for path, h := range cfg.Extra {
		mux.Handle(path, h)
	}
	for path, h := range cfg.Open {
		mux.Handle(path, h)
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.writeError(w, r, notFound("the server could not find the requested resource"), target{})
	})
	s.handler = s.recoverPanics(s.instrument(s.audit(s.authenticate(s.authorize(mux)))))
	return s, nil
}

// Handler returns the HTTP handler with authentication applied, for tests and
// for embedding in another server.
func (s *Server) Handler() http.Handler { return s.handler }

// ListenAndServe listens on Config.Addr and serves until ctx ends.
func (s *Server) ListenAndServe(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("apiserver: %w", err)
	}
	return s.Serve(ctx, ln)
}

// Serve serves on ln (with TLS if configured) until ctx ends, then shuts
// down gracefully: open watches and log streams end, in-flight requests get
// Config.ShutdownTimeout to finish. It returns nil after a shutdown caused
// by ctx.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	if s.cfg.TLSCertFile != "" {
		cert, err := tls.LoadX509KeyPair(s.cfg.TLSCertFile, s.cfg.TLSKeyFile)
		if err != nil {
			ln.Close()
			return fmt.Errorf("apiserver: load TLS key pair: %w", err)
		}
		srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12,
			NextProtos: []string{"h2", "http/1.1"}}
		if len(s.cfg.ClientCA) > 0 {
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(s.cfg.ClientCA) {
				ln.Close()
				return errors.New("apiserver: Config.ClientCA holds no PEM certificate")
			}
			srv.TLSConfig.ClientCAs, srv.TLSConfig.ClientAuth = pool, tls.VerifyClientCertIfGiven
		}
		ln = tls.NewListener(ln, srv.TLSConfig)
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	s.log.Info("API server listening", "addr", ln.Addr().String(), "tls", s.cfg.TLSCertFile != "")
	select {
	case err := <-errc:
		return fmt.Errorf("apiserver: %w", err)
	case <-ctx.Done():
	}
	s.stopOnce.Do(func() { close(s.stopping) })
	sctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close()
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("apiserver: %w", err)
	}
	return nil
}

func (s *Server) health(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain")
	_, _ = w.Write([]byte("ok"))
}

// recoverPanics turns a handler panic into a 500 Status instead of a dropped
// connection, and logs it.
func (s *Server) recoverPanics(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				s.log.Error("panic serving API request", "method", r.Method, "path", r.URL.Path, "panic", v,
					"stack", string(debug.Stack()))
				s.writeError(w, r, fmt.Errorf("panic: %v", v), target{})
			}
		}()
		next.ServeHTTP(w, r)
	})
}
