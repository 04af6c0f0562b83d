package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/pflag"
	"golang.org/x/sync/errgroup"
	psaapi "k8s.io/pod-security-admission/api"

	"github.com/flotilla-dev/flotilla/cluster/admission"
	"github.com/flotilla-dev/flotilla/cluster/apiclient"
	"github.com/flotilla-dev/flotilla/cluster/apiserver"
	"github.com/flotilla-dev/flotilla/cluster/auth"
	"github.com/flotilla-dev/flotilla/cluster/events"
	"github.com/flotilla-dev/flotilla/cluster/ipalloc"
	"github.com/flotilla-dev/flotilla/cluster/raftlog"
	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/gitsync"
	"github.com/flotilla-dev/flotilla/internal/logfile"
	"github.com/flotilla-dev/flotilla/node"
	"github.com/flotilla-dev/flotilla/reconciler"
	"github.com/flotilla-dev/flotilla/reconciler/nodelifecycle"
	"github.com/flotilla-dev/flotilla/reconciler/volumebinding"
	"github.com/flotilla-dev/flotilla/schema"
)

// planeOptions configure the control plane that `up` and `server` share.
type planeOptions struct {
	dataDir  string
	repo     string // "" means a copy of examples/hello under dataDir
	branch   string
	path     string
	interval time.Duration
	// fetchTimeout bounds each ref listing and fetch (0: gitsync's default).
	fetchTimeout time.Duration
	git          gitOptions // credentials and trust of the Git sync
	apiAddr      string
	// hosts are the names and addresses the API certificate is valid for,
	// besides the listener's own.
	hosts []string
	// publicHost is the address clients are told (kubeconfig, join token);
	// "" means the listener's.
	publicHost         string
	membership         nodelifecycle.Membership // nil: heartbeats only
	podEvictionTimeout time.Duration
	services           serviceAddrOptions
	localVolumeRoot    string        // "": the reconciler's default
	expectNodes        int           // Ready nodes that end the scheduler's settling at start
	schedulingSettle   time.Duration // 0: the scheduler's default
	nodeCertTTL        time.Duration // 0: apiserver.DefaultNodeCertTTL
	secretsKeyFile     string        // "": DATA_DIR/secrets-key.json
	// peers: this server's log has peers (`server`); nil: a group of
	// this server alone (`up`).
	peers *peerConfig
	log   *slog.Logger
}

// serviceAddrOptions are the server-side admission flags, shared by up and
// server: Services' addresses and the default Pod Security level.
type serviceAddrOptions struct {
	serviceCIDR   string
	nodePortRange string
	lbPool        string
	externalIPs   string
	podSecurity   string
}

func (o *serviceAddrOptions) addFlags(f *pflag.FlagSet) {
	f.StringVar(&o.serviceCIDR, "service-cidr", ipalloc.DefaultServiceCIDR, "range Services' virtual IPs come from (must not overlap the pod or node networks)")
	f.StringVar(&o.nodePortRange, "service-node-port-range", ipalloc.DefaultNodePortRange, "node ports for NodePort and LoadBalancer Services")
	f.StringVar(&o.lbPool, "lb-pool", "", "addresses for LoadBalancer Services, on the node network: comma-separated CIDRs or FIRST-LAST ranges (default none: they stay <pending>)")
	f.StringVar(&o.externalIPs, "service-external-ip-cidrs", "", "ranges Services' spec.externalIPs may use, comma-separated CIDRs (default none: externalIPs are refused, since a Service could take any address's traffic)")
	f.StringVar(&o.podSecurity, "pod-security-default", string(admission.DefaultPodSecurity), "Pod Security level (privileged, baseline or restricted) of namespaces without pod-security.kubernetes.io labels")
}

// controlPlane is the store, the API listener and credentials, the
// controllers and the Git sync: a cluster's server side.
type controlPlane struct {
	store         *store.Badger
	raft          *raftlog.Node // the store's replicated log
	peerListener  net.Listener  // the log's peers (nil for a group of one)
	peerTransport *raftlog.HTTPTransport
	stopPeers     context.CancelFunc
	// onLead runs as this server becomes the leader, before the
	// controllers start (nil: nothing).
	onLead func(context.Context)
	// leaderWork runs beside the controllers while this server leads
	// (the API VIP); the next term starts only once it returned.
	leaderWork     []func(context.Context)
	secretsKeyFile string // the key file of the store's Secrets
	// admission is the write pipeline; writes is the store seen through it,
	// as the controllers and an in-process agent write (the API server and
	// gitsync run the same pipeline on their own writes).
	admission   *admission.Pipeline
	writes      *admission.Store
	listener    net.Listener
	caPEM       []byte
	signer      *apiserver.Signer // the cluster CA: node certificates
	tlsDir      string
	dataDir     string
	auditor     *apiserver.Auditor // DATA_DIR/audit.log
	auditFile   io.WriteCloser
	nodeCertTTL time.Duration
	certFile    string
	keyFile     string
	serverURL   string
	kubeconfig  string
	repo        string
	webhook     string
	rbac        *auth.RBAC   // authorizes API requests; run it beside the API server
	lbPool      ipalloc.Pool // --lb-pool: the only addresses nodes announce
	// managerConfig builds the controllers' Manager of each term of
	// leadership.
	managerConfig reconciler.Config
	events        *events.Broadcaster // the server's Events, through the write pipeline
	syncer        *gitsync.Syncer
	// metrics is the process's Prometheus registry: every part adds its
	// families, the API server (and an in-process agent) serve it.
	metrics *prometheus.Registry
	log     *slog.Logger
}

// openControlPlane prepares every part; serve runs them. On error, what
// was opened is closed.
func openControlPlane(o planeOptions, say func(string, ...any)) (cp *controlPlane, err error) {
	cp = &controlPlane{log: o.log, metrics: apiserver.NewRegistry(), dataDir: o.dataDir}
	defer func() {
		if err != nil {
			cp.close()
		}
	}()
	// Bad flags fail before anything starts.
	cidr, err := ipalloc.ParseServiceCIDR(o.services.serviceCIDR)
	if err != nil {
		return nil, err
	}
	if cidr.Overlaps(defaultClusterCIDR) {
		return nil, fmt.Errorf("--service-cidr %s overlaps the pod network %s: pick another range", cidr, defaultClusterCIDR)
	}
	ports, err := ipalloc.ParsePortRange(o.services.nodePortRange)
	if err != nil {
		return nil, err
	}
	alloc, err := ipalloc.New(ipalloc.Config{ServiceCIDR: cidr, NodePortRange: ports})
	if err != nil {
		return nil, err
	}
	pool, err := ipalloc.ParsePool(o.services.lbPool)
	if err != nil {
		return nil, err
	}
	externalIPs, err := admission.ParseExternalIPCIDRs(o.services.externalIPs)
	if err != nil {
		return nil, err
	}
	// The API listener first: a port in use should fail before anything starts.
	if cp.listener, err = net.Listen("tcp", o.apiAddr); err != nil {
		return nil, fmt.Errorf("listen on %s: %w (is another flotilla running? pass --api-addr)", o.apiAddr, err)
	}
	if o.peers != nil {
		if cp.peerListener, err = net.Listen("tcp", o.peers.listenAddr); err != nil {
			return nil, fmt.Errorf("listen on %s for the other servers: %w (pass --peer-addr)", o.peers.listenAddr, err)
		}
	}
	_, port, _ := net.SplitHostPort(cp.listener.Addr().String())
	host := o.publicHost
	if host == "" {
		host = listenHost(cp.listener.Addr().String())
	}
	if cp.caPEM, cp.certFile, cp.keyFile, err = apiserver.EnsureCerts(filepath.Join(o.dataDir, "tls"), append([]string{host}, o.hosts...)); err != nil {
		return nil, fmt.Errorf("TLS certificates: %w", err)
	}
	cp.tlsDir = filepath.Join(o.dataDir, "tls")
	if cp.store, cp.secretsKeyFile, err = openStore(o, say); err != nil {
		return nil, err
	}
	id, err := serverID(o.dataDir)
	if err != nil {
		return nil, err
	}
	var peers *logPeers
	if o.peers != nil {
		serveTLS, sendTLS, err := peerTLS(cp.tlsDir, o.peers.name, cp.caPEM, cp.certFile, cp.keyFile)
		if err != nil {
			return nil, err
		}
		cp.peerTransport = raftlog.NewHTTPTransport(id, sendTLS, o.log.With("component", "raft"))
		var peerCtx context.Context
		peerCtx, cp.stopPeers = context.WithCancel(context.Background())
		peers = &logPeers{transport: cp.peerTransport, self: o.peers.advertise, serve: func(n *raftlog.Node) {
			go servePeers(peerCtx, cp.peerListener, serveTLS, n, o.log.With("component", "raft"))
		}}
	}
	if cp.raft, err = startLog(context.Background(), o.dataDir, id, cp.store, peers, o.log, say); err != nil {
		return nil, err
	}
	say("store at %s, revision %d", filepath.Join(o.dataDir, "db"), cp.store.Revision())
	if err := cp.store.RegisterMetrics(cp.metrics); err != nil {
		return nil, err
	}
	if cp.webhook, err = ensureSecret(o.dataDir, "webhook-secret"); err != nil {
		return nil, err
	}
	if cp.signer, err = apiserver.LoadSigner(cp.tlsDir); err != nil {
		return nil, err
	}
	cp.nodeCertTTL = o.nodeCertTTL
	// Who did what through the API, rotated like the role's own log.
	if cp.auditFile, err = logfile.Open(logfile.Config{Path: filepath.Join(o.dataDir, "audit.log")}); err != nil {
		return nil, fmt.Errorf("open the audit log: %w", err)
	}
	cp.auditor = apiserver.NewAuditor(cp.auditFile, o.log.With("component", "audit"))
	cp.serverURL = "https://" + net.JoinHostPort(host, port)
	cp.kubeconfig = filepath.Join(o.dataDir, "kubeconfig.yaml")
	// The admin kubeconfig carries a client certificate in system:masters
	// (cluster-admin), issued afresh at each start.
	certPEM, keyPEM, err := apiserver.IssueClientCert(filepath.Join(o.dataDir, "tls"), adminUser, []string{auth.GroupMasters}, apiserver.DefaultClientCertTTL)
	if err != nil {
		return nil, fmt.Errorf("admin client certificate: %w", err)
	}
	if err := apiclient.WriteKubeconfig(cp.kubeconfig, cp.serverURL, cp.caPEM, apiclient.Credential{CertPEM: certPEM, KeyPEM: keyPEM}); err != nil {
		return nil, fmt.Errorf("write kubeconfig: %w", err)
	}
	if cp.rbac, err = auth.NewRBAC(context.Background(), cp.store, o.log); err != nil {
		return nil, err
	}
	validator, err := schema.NewValidator()
	if err != nil {
		return nil, fmt.Errorf("load the CUE schema: %w", err)
	}
	// One write pipeline for every writer: the API (as a user's), the
	// controllers and the in-process agent (as the cluster's), Git. It
	// shares the commit loader's CUE schema: the schema validates one
	// document at a time per evaluator, so an API write waits for one
	// document of a big commit, not for the whole commit.
	if cp.admission, err = admission.New(admission.Config{Validator: validator, Allocator: alloc, ExternalIPs: externalIPs, LBPool: pool,
		PodSecurity: psaapi.Level(o.services.podSecurity)}); err != nil {
		return nil, err
	}
	cp.writes = cp.admission.Store(cp.store, admission.Cluster)
	cp.lbPool = pool
	serverHost, _ := os.Hostname()
	cp.events = events.New(context.Background(), events.Config{Store: cp.writes, Host: serverHost, Logger: o.log.With("component", "events")})
	// A Manager runs once: each term of leadership gets a new one (its
	// caches and controllers' memory start afresh from the store), whose
	// metrics take the place of the last one's.
	cp.managerConfig = reconciler.Config{
		Events: cp.events.Recorder,
		Store:  cp.writes, Logger: o.log.With("component", "reconciler"),
		Membership: o.membership, PodEvictionTimeout: o.podEvictionTimeout, LoadBalancerPool: pool,
		LocalVolumeRoot: o.localVolumeRoot, ExpectedNodes: o.expectNodes, SchedulingSettle: o.schedulingSettle,
		Metrics: replacingRegisterer{cp.metrics},
	}
	if _, err = reconciler.New(cp.managerConfig); err != nil { // bad settings fail at start
		return nil, err
	}
	cp.repo = o.repo
	gitCfg := gitsync.Config{
		URL: o.repo, Branch: o.branch, Path: o.path, Interval: o.interval, FetchTimeout: o.fetchTimeout,
		WebhookSecret: cp.webhook, WorkDir: filepath.Join(o.dataDir, "gitsync"),
		Store: cp.store, Loader: validator,
		// Bindings first, so that the pipeline's immutable-field check
		// sees the volume a claim is bound to kept.
		Admit:  gitsync.ChainAdmit(volumebinding.AdmitGit, gitsync.PipelineAdmit(cp.admission)),
		Logger: o.log.With("component", "gitsync"),
		Events: cp.events.Recorder("gitsync"),
	}
	if err := o.git.config(&gitCfg); err != nil {
		return nil, err
	}
	if cp.syncer, err = gitsync.New(gitCfg); err != nil {
		return nil, err
	}
	if err := cp.syncer.RegisterMetrics(cp.metrics); err != nil {
		return nil, err
	}
	return cp, nil
}

// whileLeader runs the leader's work — the controllers and the Git sync —
// for as long as this server leads the store's log.
func (cp *controlPlane) whileLeader(ctx context.Context) error {
	return cp.raft.WhileLeader(ctx, func(ctx context.Context) error {
		if cp.onLead != nil {
			cp.onLead(ctx)
		}
		g, ctx := errgroup.WithContext(ctx)
		manager, err := reconciler.New(cp.managerConfig)
		if err != nil {
			return err
		}
		g.Go(func() error { return manager.Run(ctx) })
		for _, w := range cp.leaderWork {
			g.Go(func() error { w(ctx); return nil })
		}
		g.Go(func() error { return cp.syncer.Run(ctx) })
		return g.Wait()
	})
}

// replacingRegisterer registers a collector in place of one already
// registered with the same descriptors (the last term's controllers').
type replacingRegisterer struct{ prometheus.Registerer }

func (r replacingRegisterer) Register(c prometheus.Collector) error {
	err := r.Registerer.Register(c)
	var dup prometheus.AlreadyRegisteredError
	if errors.As(err, &dup) {
		r.Registerer.Unregister(dup.ExistingCollector)
		err = r.Registerer.Register(c)
	}
	return err
}

func (r replacingRegisterer) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			panic(err)
		}
	}
}

// nodeAccess is what the API server reaches on the nodes.
type nodeAccess interface {
	apiserver.LogSource
	apiserver.StreamSource
	apiserver.ResourceMetrics
}

// apiServer builds the API server: the store's REST API, the sync trigger,
// the Git webhook and the CA for joining agents, with logs, streams
// (exec, attach, port-forward) and the metrics API's numbers from the
// nodes.
func (cp *controlPlane) apiServer(nodes nodeAccess, extra map[string]http.Handler) (*apiserver.Server, error) {
	handlers := map[string]http.Handler{
		apiserver.SyncPath:             syncHandler(cp.syncer),
		apiserver.SecretsKeyRotatePath: rotateKeyHandler(cp.store, cp.raft, cp.secretsKeyFile),
		apiserver.SnapshotSavePath:     snapshotHandler(cp),
		apiserver.ServersPath:          serversHandler(cp.raft),
	}
	for path, h := range extra {
		handlers[path] = h
	}
	return apiserver.New(apiserver.Config{
		Store: cp.store, Admission: cp.admission, TLSCertFile: cp.certFile, TLSKeyFile: cp.keyFile,
		ClientCA: cp.caPEM,
		// Nodes are decided by the Node authorizer, everyone else by RBAC.
		Authorizer: auth.NodeAuthorizer{Store: cp.store, Next: cp.rbac,
			Shared: map[string]bool{"secrets/" + auth.SystemNamespace + "/" + gossipSecretName: true,
				"configmaps/" + auth.SystemNamespace + "/" + joinInfoName: true}},
		Tokens: auth.BootstrapTokens{Store: cp.store}, Signer: cp.signer, NodeCertTTL: cp.nodeCertTTL, Audit: cp.auditor,
		Logs: nodes, Streams: nodes, Logger: cp.log.With("component", "apiserver"), Metrics: cp.metrics, ResourceMetrics: nodes,
		Extra: handlers,
		Open: map[string]http.Handler{
			"/hooks/git": cp.syncer.WebhookHandler(),
		},
	})
}

// nodeLogs reads pods' logs from their agents, as auth.APIServerUser with
// a client certificate of the cluster CA (issued afresh at each start).
func (cp *controlPlane) nodeLogs() (*apiserver.NodeLogs, error) {
	certPEM, keyPEM, err := apiserver.IssueClientCert(cp.tlsDir, auth.APIServerUser, nil, apiserver.DefaultClientCertTTL)
	if err != nil {
		return nil, fmt.Errorf("the server's client certificate: %w", err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(cp.caPEM)
	return apiserver.NewNodeLogs(cp.store, node.LogsPort, &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{pair}}), nil
}

// adminUser is the user of the admin kubeconfig that up and server write.
const adminUser = "flotilla-admin"

// defaultClusterCIDR is the pod network of the whole cluster (the
// reconciler's and netfabric's default).
var defaultClusterCIDR = netip.MustParsePrefix("10.244.0.0/16")

func (cp *controlPlane) close() {
	if cp.events != nil {
		cp.events.Shutdown()
	}
	if cp.listener != nil {
		cp.listener.Close()
	}
	if cp.auditor != nil {
		cp.auditor.Close()
	}
	if cp.auditFile != nil {
		cp.auditFile.Close()
	}
	if cp.raft != nil {
		cp.raft.Stop()
	}
	if cp.stopPeers != nil {
		cp.stopPeers()
	}
	if cp.peerTransport != nil {
		cp.peerTransport.Close()
	}
	if cp.peerListener != nil {
		cp.peerListener.Close()
	}
	if cp.store != nil {
		cp.store.Close()
	}
}

// logOptions are a role's log rotation flags (see internal/logfile).
type logOptions struct {
	maxSizeMiB int
	maxFiles   int
}

func (o *logOptions) addFlags(f *pflag.FlagSet) {
	f.IntVar(&o.maxSizeMiB, "log-max-size", logfile.DefaultMaxSizeMiB, "rotate DATA_DIR/flotilla.log when it reaches this many MiB")
	f.IntVar(&o.maxFiles, "log-max-files", logfile.DefaultMaxFiles, "rotated logs kept (gzipped); older ones are removed")
}

// openLog opens DATA_DIR/flotilla.log for the role's logger, rotated by
// size (internal/logfile: 50 MiB × 5 gzipped files by default).
func openLog(dataDir string, o logOptions) (io.WriteCloser, string, error) {
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, "", fmt.Errorf("create data dir: %w", err)
	}
	if o.maxSizeMiB < 1 {
		return nil, "", fmt.Errorf("--log-max-size %d: want at least 1 (MiB)", o.maxSizeMiB)
	}
	if o.maxFiles < 1 {
		return nil, "", fmt.Errorf("--log-max-files %d: want at least 1", o.maxFiles)
	}
	path := filepath.Join(dataDir, "flotilla.log")
	w, err := logfile.Open(logfile.Config{Path: path, MaxSizeMiB: o.maxSizeMiB, MaxFiles: o.maxFiles})
	if err != nil {
		return nil, "", fmt.Errorf("open the log: %w", err)
	}
	return w, path, nil
}

// ignoreCanceled turns the context.Canceled of a clean stop into nil.
func ignoreCanceled(err error) error {
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}
