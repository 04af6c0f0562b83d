package main

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/flotilla-dev/flotilla/internal/atomicfile"

	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/flotilla-dev/flotilla/cluster/apiclient"
	"github.com/flotilla-dev/flotilla/cluster/apiserver"
	"github.com/flotilla-dev/flotilla/cluster/auth"
	"github.com/flotilla-dev/flotilla/cluster/gossip"
	"github.com/flotilla-dev/flotilla/cluster/join"
	"github.com/flotilla-dev/flotilla/cluster/raftlog"
	"github.com/flotilla-dev/flotilla/examples"
	"github.com/flotilla-dev/flotilla/gitsync"
	"github.com/flotilla-dev/flotilla/reconciler/nodelifecycle"
	"github.com/flotilla-dev/flotilla/reconciler/scheduler"
	"github.com/flotilla-dev/flotilla/volumes/pvbinding"
)

// serverOptions are the flags of `flotilla server`.
type serverOptions struct {
	dataDir            string
	repo, branch, path string
	interval           time.Duration
	gitTimeout         time.Duration
	git                gitOptions
	apiAddr            string
	advertise          string
	gossipPort         int
	gossipBind         string
	name               string
	podEvictionTimeout time.Duration
	verbose            bool
	log                logOptions // rotation of DATA_DIR/flotilla.log
	services           serviceAddrOptions
	localVolumeRoot    string
	secretsKey         string // --secrets-key-file
	expectNodes        int
	schedulingSettle   time.Duration
	tokenTTL           time.Duration
	nodeCertTTL        time.Duration
	peerAddr           string // --peer-addr
	apiVIP             string // --api-vip
	joinTokenFile      string // --join-token-file
}

func newServerCommand(g *globalFlags) *cobra.Command {
	o := &serverOptions{}
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Run the control plane of a multi-node cluster; agents join it with the join token it writes",
		Long: `Run the control plane of a multi-node cluster: the store, the API server, the
controllers and scheduler, the Git sync, and a gossip member that tells which
nodes are alive. It runs no pods itself: agents do ('flotilla agent').

It writes a join token to DATA_DIR/join-token (mode 0600) that carries what an
agent needs to join: the API address, a bootstrap token that expires (24 h)
and can do nothing but get the node its certificate, and the fingerprint of
the cluster's CA. 'flotilla token create' makes more.

More servers make the control plane survive the loss of one: they replicate
the store with Raft (two of three must be up) and the leader runs the
controllers and the Git sync. Join one with a server join token
('flotilla token create --server') and the same --repo; give all of them the
same --api-vip so that kubeconfigs and agents follow the leader.`,
		Example: `  flotilla server --repo https://git.example/ops/site.git --advertise-addr 192.0.2.10
  flotilla server --repo https://git.example/ops/site.git --git-username deploy --git-password-file /etc/flotilla/git-token
  flotilla server --repo ssh://git@git.example/ops/site.git --git-ssh-key-file /etc/flotilla/deploy_key --git-known-hosts-file /etc/flotilla/known_hosts
  flotilla agent --token-file /etc/flotilla/join-token   # on each node, with a copy of DATA_DIR/join-token
  flotilla server --advertise-addr 192.0.2.12 --api-vip 192.0.2.10 --repo https://git.example/ops/site.git --join-token-file server-token`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return runServer(ctx, o, cmd.OutOrStdout())
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.dataDir, "data-dir", apiclient.DefaultDataDir(), "where the store, certificates, kubeconfig and join token live")
	f.StringVar(&o.repo, "repo", "", "Git repository to sync: a URL or a local path (default: a copy of examples/hello under the data dir)")
	f.StringVar(&o.branch, "branch", "", "branch to follow (default: the repository's HEAD)")
	f.StringVar(&o.path, "path", "", "sub-path of the repository that holds the manifests")
	f.DurationVar(&o.interval, "interval", 15*time.Second, "how often to poll the repository")
	f.DurationVar(&o.gitTimeout, "git-timeout", gitsync.DefaultFetchTimeout, "how long one ref listing or fetch may take before it fails and is retried with back-off")
	o.git.addFlags(f)
	f.StringVar(&o.apiAddr, "api-addr", ":6443", "address the API server listens on")
	f.StringVar(&o.advertise, "advertise-addr", "", "the IP agents reach this server at (default: the first global IPv4 address)")
	f.IntVar(&o.gossipPort, "gossip-port", gossip.DefaultPort, "gossip port (TCP and UDP)")
	f.StringVar(&o.gossipBind, "gossip-bind", "", "address gossip listens on (default: all of this host's)")
	f.StringVar(&o.name, "name", "", "this server's gossip name (default: server-<host name>)")
	o.services.addFlags(f)
	addSecretsKeyFlag(f, &o.secretsKey)
	f.StringVar(&o.localVolumeRoot, "local-volume-root", pvbinding.DefaultLocalVolumeRoot, "where on each node the built-in \"local\" StorageClass makes volumes: ROOT/<node>/<volume>")
	f.DurationVar(&o.podEvictionTimeout, "pod-eviction-timeout", 30*time.Second, "how long a node may be unreachable before its pods are recreated elsewhere")
	f.IntVar(&o.expectNodes, "expect-nodes", 0, "at start, bind no pod until this many nodes are Ready (or --scheduling-settle passes), so that replicas spread; 0: the nodes the cluster already knows")
	f.DurationVar(&o.schedulingSettle, "scheduling-settle", scheduler.DefaultSettle, "at start, how long binding waits at most for the nodes to be Ready (negative: not at all)")
	f.DurationVar(&o.tokenTTL, "token-ttl", auth.DefaultBootstrapTokenTTL, "how long the join token written at start may be used to join")
	f.DurationVar(&o.nodeCertTTL, "node-cert-ttl", apiserver.DefaultNodeCertTTL, "how long node certificates are valid (agents renew them at 70-90% of that)")
	f.StringVar(&o.peerAddr, "peer-addr", ":"+strconv.Itoa(DefaultPeerPort), "address the other servers reach this one's store log at (mutual TLS; servers only)")
	f.StringVar(&o.apiVIP, "api-vip", "", "an address on the servers' network that the leader holds (moved with gratuitous ARPs): kubeconfigs and join tokens name it; give every server the same")
	f.StringVar(&o.joinTokenFile, "join-token-file", "", "join the servers of an existing cluster with this server join token (made by flotilla token create --server); only on the first start")
	f.BoolVarP(&o.verbose, "verbose", "v", false, "log debug messages")
	o.log.addFlags(f)
	cmd.AddCommand(newServerRemoveCommand(g))
	return cmd
}

func runServer(ctx context.Context, o *serverOptions, out io.Writer) error {
	say := func(format string, args ...any) { fmt.Fprintf(out, "flotilla: "+format+"\n", args...) }
	logFile, logPath, err := openLog(o.dataDir, o.log)
	if err != nil {
		return err
	}
	defer logFile.Close()
	log := roleLogger(logFile, os.Stderr, o.verbose)
	say("logs in %s", logPath)
	if o.advertise == "" {
		ip, err := firstGlobalIPv4()
		if err != nil {
			return fmt.Errorf("find this host's address: %w (pass --advertise-addr)", err)
		}
		o.advertise = ip.String()
	}
	if net.ParseIP(o.advertise) == nil {
		return fmt.Errorf("--advertise-addr %q is not an IP address", o.advertise)
	}
	if o.name == "" {
		host, _ := os.Hostname()
		o.name = "server-" + host
	}
	_, peerPort, err := net.SplitHostPort(o.peerAddr)
	if err != nil {
		return fmt.Errorf("--peer-addr %q: %w", o.peerAddr, err)
	}
	peerAdvertise := net.JoinHostPort(o.advertise, peerPort)
	if o.joinTokenFile != "" {
		data, err := os.ReadFile(o.joinTokenFile)
		if err != nil {
			return fmt.Errorf("--join-token-file: %w", err)
		}
		if _, err := joinServers(ctx, o.dataDir, strings.TrimSpace(string(data)), o.name, peerAdvertise, o.secretsKey, say); err != nil {
			return err
		}
	}
	key, err := ensureGossipKey(o.dataDir)
	if err != nil {
		return err
	}
	members, err := gossip.New(gossip.Config{
		NodeName: o.name, BindAddr: o.gossipBind, BindPort: o.gossipPort, AdvertiseAddr: o.advertise, Key: key,
		Meta:   gossip.Meta{Role: gossip.RoleServer, NodeName: o.name, TunnelIP: o.advertise},
		Logger: log.With("component", "gossip"),
	})
	if err != nil {
		return fmt.Errorf("start gossip: %w", err)
	}
	defer members.Shutdown()
	view := nodelifecycle.WatchGossip(ctx, members)

	repo := o.repo
	if repo == "" {
		repo = filepath.Join(o.dataDir, "repo")
		if err := gitsync.InitLocalRepo(repo, examples.Hello()); err != nil && !errors.Is(err, gitsync.ErrRepoExists) {
			return fmt.Errorf("create the example repository: %w", err)
		}
	}
	publicHost, hosts := o.advertise, []string{"127.0.0.1"}
	var vip *apiVIP
	if o.apiVIP != "" {
		if vip, err = newAPIVIP(ctx, o.apiVIP, o.advertise, o.name, log.With("component", "vip")); err != nil {
			return err
		}
		publicHost, hosts = o.apiVIP, append(hosts, o.advertise)
	}
	cp, err := openControlPlane(planeOptions{
		dataDir: o.dataDir, repo: repo, branch: o.branch, path: o.path, interval: o.interval, fetchTimeout: o.gitTimeout, git: o.git,
		apiAddr: o.apiAddr, publicHost: publicHost, hosts: hosts,
		membership: view, podEvictionTimeout: o.podEvictionTimeout, services: o.services, localVolumeRoot: o.localVolumeRoot, log: log,
		expectNodes: o.expectNodes, schedulingSettle: o.schedulingSettle, nodeCertTTL: o.nodeCertTTL,
		secretsKeyFile: o.secretsKey,
		peers:          &peerConfig{name: o.name, listenAddr: o.peerAddr, advertise: peerAdvertise},
	}, say)
	if err != nil {
		return err
	}
	defer cp.close()
	if o.repo == "" {
		if err := gitsync.RemoveSyncHooks(repo); err != nil { // the repository is watched now
			return err
		}
	}
	fp, err := join.Fingerprint(cp.caPEM)
	if err != nil {
		return err
	}
	// Agents read the gossip key with their node certificate; join tokens
	// carry the API address, a gossip address and the CA's fingerprint.
	info := joinInfo{server: cp.serverURL, gossipAddr: net.JoinHostPort(o.advertise, strconv.Itoa(o.gossipPort)), caFingerprint: fp, caPEM: cp.caPEM,
		lbPool: cp.lbPool.String()}
	if vip != nil {
		// Held in the term's own work: a term's release can never undo
		// the next term's hold.
		cp.leaderWork = append(cp.leaderWork, vip.hold)
	}
	cp.onLead = func(ctx context.Context) {
		if err := publishJoinInfo(ctx, cp.writes, key, info, false); err != nil && ctx.Err() == nil {
			log.Warn("publishing the join info as the new leader", "err", err)
		}
	}
	// Agents find every server's own address in gossip (the VIP is one
	// address among them, not a server's).
	_, apiPort, _ := net.SplitHostPort(cp.listener.Addr().String())
	ownURL := "https://" + net.JoinHostPort(o.advertise, apiPort)
	if err := members.UpdateMeta(ctx, gossip.Meta{Role: gossip.RoleServer, NodeName: o.name, APIAddr: ownURL, TunnelIP: o.advertise}); err != nil {
		return fmt.Errorf("announce the API address: %w", err)
	}
	// The server reads agents' logs as system:flotilla:apiserver, over
	// mutual TLS.
	logs, err := cp.nodeLogs()
	if err != nil {
		return err
	}
	api, err := cp.apiServer(logs, map[string]http.Handler{
		serverJoinPattern: serverJoinHandler(cp, net.JoinHostPort(o.advertise, strconv.Itoa(o.gossipPort))),
		serverPattern:     removeServerHandler(cp.raft),
	})
	if err != nil {
		return err
	}
	say("API server at %s; kubeconfig %s", cp.serverURL, cp.kubeconfig)
	say("syncing %s", gitsync.SanitizeURL(repo))
	if scheme, insecure := gitsync.InsecureTransport(repo); insecure {
		say("warning: %s:// fetches without encryption or server authentication: anyone on the path can read the repository or serve other commits; use https:// or ssh://", scheme)
	}

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return api.Serve(gctx, cp.listener) })
	// The API serves before the writes below, which need a majority of
	// the servers: one that starts while most are down answers that it
	// has no leader (clients then try another server) instead of holding
	// their connections.
	g.Go(func() error {
		// The join info names the leader of a bigger group (it
		// republishes it when elected), so that new tokens name a server
		// that is alive.
		keep := len(cp.raft.Status().Members) > 1
		if err := untilQuorum(gctx, say, "publish the join info", func(ctx context.Context) error {
			return publishJoinInfo(ctx, cp.writes, key, info, keep)
		}); err != nil {
			return err
		}
		g.Go(func() error {
			// The gossip Secret is the truth (`flotilla token
			// rotate-gossip-key` changes it); the key file follows it,
			// for the next start.
			followGossipKeys(gctx, cp.store, members, gossipKeyPollInterval, log.With("component", "gossip"), func(k gossipKeys) {
				if err := atomicfile.WriteFile(filepath.Join(o.dataDir, "gossip-key"), []byte(hex.EncodeToString(k.primary)+"\n"), 0o600); err != nil {
					log.Warn("saving the gossip key", "err", err)
				}
			})
			return nil
		})
		// A fresh join token at every start, valid for a day: the file
		// is what a node needs to join.
		tokenPath := filepath.Join(o.dataDir, "join-token")
		var (
			tok     join.Token
			expires time.Time
		)
		if err := untilQuorum(gctx, say, "store a join token", func(ctx context.Context) (err error) {
			tok, expires, err = createJoinToken(ctx, cp.writes, info, o.tokenTTL, "written by flotilla server to "+tokenPath)
			return err
		}); err != nil {
			return err
		}
		if err := atomicfile.WriteFile(tokenPath, []byte(tok.Encode()+"\n"), 0o600); err != nil {
			return fmt.Errorf("write the join token: %w", err)
		}
		say("join token %s in %s (valid until %s; `flotilla token create` makes more); copy it to each node (mode 0600) and run there:",
			tok.TokenID(), tokenPath, expires.Local().Format(time.RFC3339))
		fmt.Fprint(out, "\n  flotilla agent --token-file /etc/flotilla/join-token\n\n")
		return nil
	})
	g.Go(func() error { return cp.whileLeader(gctx) })
	g.Go(func() error { cp.rbac.Run(gctx); return nil })
	g.Go(func() error {
		followMembership(gctx, cp.raft, peerAdvertise, log.With("component", "raft"))
		return nil
	})
	g.Go(func() error {
		joinServerGossip(gctx, members, cp.raft, o.advertise, o.gossipPort, log.With("component", "gossip"))
		return nil
	})
	err = g.Wait()
	_ = members.Leave(2 * time.Second)
	say("stopped")
	return ignoreCanceled(err)
}

// untilQuorum runs write until it is done, again each second while the
// store has no leader (this server started while most servers are down,
// or is cut off from them), saying once that it waits. Any other error
// ends it.
func untilQuorum(ctx context.Context, say func(string, ...any), what string, write func(context.Context) error) error {
	waiting := false
	for {
		err := write(ctx)
		if err == nil || !noQuorum(err) || ctx.Err() != nil {
			if err != nil {
				err = fmt.Errorf("%s: %w", what, err)
			}
			return err
		}
		if !waiting {
			waiting = true
			say("waiting for a majority of the servers to %s (%v); the API answers meanwhile, that it has no leader", what, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// noQuorum tells the errors of a store that has no leader: nothing was
// written, or (ErrUnknownOutcome) perhaps it was; a retry is safe for
// writes that create once or put.
func noQuorum(err error) bool {
	return errors.Is(err, raftlog.ErrNoLeader) || errors.Is(err, raftlog.ErrUnknownOutcome) || errors.Is(err, raftlog.ErrProposalDropped)
}

// ensureGossipKey returns the cluster's gossip key, kept in the data dir.
func ensureGossipKey(dataDir string) ([]byte, error) {
	path := filepath.Join(dataDir, "gossip-key")
	if data, err := os.ReadFile(path); err == nil {
		key, err := hex.DecodeString(strings.TrimSpace(string(data)))
		if err != nil || len(key) != gossip.KeySize {
			return nil, fmt.Errorf("%s is not a %d-byte hex key: remove it to make a new one (agents must then rejoin)", path, gossip.KeySize)
		}
		return key, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("read %s: %w; fix its permissions or restore it from a backup", path, err)
	}
	key, err := join.NewGossipKey()
	if err != nil {
		return nil, err
	}
	if err := atomicfile.WriteFile(path, []byte(hex.EncodeToString(key)+"\n"), 0o600); err != nil {
		return nil, err
	}
	return key, nil
}

// firstGlobalIPv4 is the host's first global unicast IPv4 address.
func firstGlobalIPv4() (net.IP, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, err
	}
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok && ipn.IP.To4() != nil && ipn.IP.IsGlobalUnicast() {
			return ipn.IP.To4(), nil
		}
	}
	return nil, errors.New("no global IPv4 address")
}
