package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/pflag"

	"github.com/flotilla-dev/flotilla/cluster/apiclient"
	"github.com/flotilla-dev/flotilla/cluster/apiserver"
	"github.com/flotilla-dev/flotilla/cluster/ipalloc"
	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/gitsync"
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
	apiAddr  string
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
	log                *slog.Logger
}

// serviceAddrOptions are the server-side flags of Services' addresses,
// shared by up and server.
type serviceAddrOptions struct {
	serviceCIDR   string
	nodePortRange string
	lbPool        string
}

func (o *serviceAddrOptions) addFlags(f *pflag.FlagSet) {
	f.StringVar(&o.serviceCIDR, "service-cidr", ipalloc.DefaultServiceCIDR, "range Services' virtual IPs come from (must not overlap the pod or node networks)")
	f.StringVar(&o.nodePortRange, "service-node-port-range", ipalloc.DefaultNodePortRange, "node ports for NodePort and LoadBalancer Services")
	f.StringVar(&o.lbPool, "lb-pool", "", "addresses for LoadBalancer Services, on the node network: comma-separated CIDRs or FIRST-LAST ranges (default none: they stay <pending>)")
}

// controlPlane is the store, the API listener and credentials, the
// controllers and the Git sync: a cluster's server side.
type controlPlane struct {
	store      *store.Badger
	listener   net.Listener
	token      string
	caPEM      []byte
	certFile   string
	keyFile    string
	serverURL  string
	kubeconfig string
	repo       string
	webhook    string
	manager    *reconciler.Manager
	syncer     *gitsync.Syncer
	log        *slog.Logger
}

// openControlPlane prepares every part; serve runs them. On error, what
// was opened is closed.
func openControlPlane(o planeOptions, say func(string, ...any)) (cp *controlPlane, err error) {
	cp = &controlPlane{log: o.log}
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
	// The API listener first: a port in use should fail before anything starts.
	if cp.listener, err = net.Listen("tcp", o.apiAddr); err != nil {
		return nil, fmt.Errorf("listen on %s: %w (is another flotilla running? pass --api-addr)", o.apiAddr, err)
	}
	if cp.store, err = store.Open(store.Config{Dir: filepath.Join(o.dataDir, "db"), Logger: o.log.With("component", "store")}); err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	say("store at %s, revision %d", filepath.Join(o.dataDir, "db"), cp.store.Revision())
	if cp.token, err = ensureSecret(o.dataDir, "token"); err != nil {
		return nil, err
	}
	if cp.webhook, err = ensureSecret(o.dataDir, "webhook-secret"); err != nil {
		return nil, err
	}
	_, port, _ := net.SplitHostPort(cp.listener.Addr().String())
	host := o.publicHost
	if host == "" {
		host = listenHost(cp.listener.Addr().String())
	}
	if cp.caPEM, cp.certFile, cp.keyFile, err = apiserver.EnsureCerts(filepath.Join(o.dataDir, "tls"), append([]string{host}, o.hosts...)); err != nil {
		return nil, fmt.Errorf("TLS certificates: %w", err)
	}
	cp.serverURL = "https://" + net.JoinHostPort(host, port)
	cp.kubeconfig = filepath.Join(o.dataDir, "kubeconfig.yaml")
	if err := apiclient.WriteKubeconfig(cp.kubeconfig, cp.serverURL, cp.caPEM, cp.token); err != nil {
		return nil, fmt.Errorf("write kubeconfig: %w", err)
	}
	if cp.manager, err = reconciler.New(reconciler.Config{
		Store: cp.store, Logger: o.log.With("component", "reconciler"),
		Membership: o.membership, PodEvictionTimeout: o.podEvictionTimeout, LoadBalancerPool: pool,
		LocalVolumeRoot: o.localVolumeRoot, ExpectedNodes: o.expectNodes, SchedulingSettle: o.schedulingSettle,
	}); err != nil {
		return nil, err
	}
	validator, err := schema.NewValidator()
	if err != nil {
		return nil, fmt.Errorf("load the CUE schema: %w", err)
	}
	cp.repo = o.repo
	if cp.syncer, err = gitsync.New(gitsync.Config{
		URL: o.repo, Branch: o.branch, Path: o.path, Interval: o.interval,
		WebhookSecret: cp.webhook, WorkDir: filepath.Join(o.dataDir, "gitsync"),
		Store: cp.store, Loader: validator, Admit: gitsync.ChainAdmit(alloc.AdmitGit, volumebinding.AdmitGit), Logger: o.log.With("component", "gitsync"),
	}); err != nil {
		return nil, err
	}
	return cp, nil
}

// apiServer builds the API server: the store's REST API, the sync trigger,
// the Git webhook and the CA for joining agents, with logs from logs.
func (cp *controlPlane) apiServer(logs apiserver.LogSource) (*apiserver.Server, error) {
	return apiserver.New(apiserver.Config{
		Store: cp.store, Token: cp.token, TLSCertFile: cp.certFile, TLSKeyFile: cp.keyFile,
		Logs: logs, Logger: cp.log.With("component", "apiserver"),
		Extra: map[string]http.Handler{apiserver.SyncPath: syncHandler(cp.syncer, cp.store)},
		Open: map[string]http.Handler{
			"/hooks/git": cp.syncer.WebhookHandler(),
			// Agents fetch the CA here and check it against the join token's
			// fingerprint before trusting anything else from the server.
			CACertsPath: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Content-Type", "application/x-pem-file")
				_, _ = w.Write(cp.caPEM)
			}),
		},
	})
}

// defaultClusterCIDR is the pod network of the whole cluster (the
// reconciler's and netfabric's default).
var defaultClusterCIDR = netip.MustParsePrefix("10.244.0.0/16")

// CACertsPath serves the cluster CA's certificate (public) to joining agents.
const CACertsPath = "/cacerts"

func (cp *controlPlane) close() {
	if cp.listener != nil {
		cp.listener.Close()
	}
	if cp.store != nil {
		cp.store.Close()
	}
}

// openLog opens DATA_DIR/flotilla.log for the role's logger.
func openLog(dataDir string) (*os.File, string, error) {
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, "", fmt.Errorf("create data dir: %w", err)
	}
	path := filepath.Join(dataDir, "flotilla.log")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, "", fmt.Errorf("open the log: %w", err)
	}
	return f, path, nil
}

// ignoreCanceled turns the context.Canceled of a clean stop into nil.
func ignoreCanceled(err error) error {
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}
