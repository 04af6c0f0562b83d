package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/flotilla-dev/flotilla/cluster/apiclient"
	"github.com/flotilla-dev/flotilla/cluster/apiserver"
	"github.com/flotilla-dev/flotilla/cluster/gossip"
	"github.com/flotilla-dev/flotilla/cluster/join"
	"github.com/flotilla-dev/flotilla/netfabric"
	"github.com/flotilla-dev/flotilla/node"
)

// agentOptions are the flags of `flotilla agent`.
type agentOptions struct {
	upOptions  // the node-side flags it shares with up (data dir, Podman, network names)
	token      string
	tokenFile  string
	join       string
	advertise  string
	gossipPort int
}

func newAgentCommand() *cobra.Command {
	o := &agentOptions{}
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run a node: join a server's cluster and run the pods it schedules here",
		Long: `Run a node of a multi-node cluster: join the server named by the join token
(printed by 'flotilla server'), take a pod CIDR, join the gossip and the VXLAN
overlay, and run the pods bound to this node on its own Podman service.

Pods keep running while the server is unreachable; the agent reconciles when
it is back. An agent restart adopts its running pods.`,
		Example: `  flotilla agent --token-file /etc/flotilla/join-token --advertise-addr 192.0.2.21
  FLOTILLA_JOIN_TOKEN="$(cat join-token)" flotilla agent --join 192.0.2.10`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cmd.Flags().Changed("token") {
				return errTokenOnCommandLine
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return runAgent(ctx, o, cmd.OutOrStdout())
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.token, "token", "", "refused: a token on the command line is readable by every local user")
	_ = f.MarkHidden("token")
	f.StringVar(&o.tokenFile, "token-file", "", "read the join token from this file (else from $"+joinTokenEnv+")")
	f.StringVar(&o.join, "join", "", "the server's address, when it differs from the one in the token (an IP or host)")
	f.StringVar(&o.advertise, "advertise-addr", "", "this node's IP on the node network (default: the first global IPv4 address)")
	f.IntVar(&o.gossipPort, "gossip-port", gossip.DefaultPort, "gossip port (TCP and UDP)")
	f.StringVar(&o.dataDir, "data-dir", apiclient.DefaultDataDir(), "where the agent keeps its Podman service, pod network state and logs")
	o.addNodeFlags(f)
	return cmd
}

func runAgent(ctx context.Context, o *agentOptions, out io.Writer) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("flotilla agent needs root: it creates network namespaces and runs Podman as root (try sudo)")
	}
	say := func(format string, args ...any) { fmt.Fprintf(out, "flotilla: "+format+"\n", args...) }
	tok, err := readToken(ctx, os.Getenv(joinTokenEnv), o.tokenFile, say)
	if err != nil {
		return err
	}
	if o.join != "" {
		if tok, err = retarget(tok, o.join); err != nil {
			return err
		}
	}
	logFile, logPath, err := openLog(o.dataDir, o.log)
	if err != nil {
		return err
	}
	defer logFile.Close()
	log := roleLogger(logFile, os.Stderr, o.verbose)
	say("logs in %s", logPath)
	if o.nodeName == "" {
		if o.nodeName, err = os.Hostname(); err != nil {
			return fmt.Errorf("node name: %w (pass --node-name)", err)
		}
	}
	advertise := net.ParseIP(o.advertise)
	if o.advertise == "" {
		if advertise, err = firstGlobalIPv4(); err != nil {
			return fmt.Errorf("find this node's address: %w (pass --advertise-addr)", err)
		}
	} else if advertise == nil {
		return fmt.Errorf("--advertise-addr %q is not an IP address", o.advertise)
	}

	// Trust the server only through the CA whose fingerprint the token holds.
	// A server that does not answer yet is waited for; one that answers
	// with another CA is refused at once.
	caPEM, err := fetchCA(ctx, tok)
	for told := false; errors.Is(err, errUnreachable); {
		if !told {
			say("waiting for the server at %s ...", tok.Server)
			told = true
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
		caPEM, err = fetchCA(ctx, tok)
	}
	if err != nil {
		return err
	}
	api, err := apiclient.New(apiclient.Config{Server: tok.Server, CAData: caPEM, Token: tok.APIToken})
	if err != nil {
		return err
	}
	if err := registerNode(ctx, api, o.nodeName, ""); err != nil {
		return fmt.Errorf("%w (is the join token current? `flotilla server` prints it)", err)
	}
	say("joined %s as node %s", tok.Server, o.nodeName)
	cidr, err := waitPodCIDR(ctx, api, o.nodeName, say)
	if err != nil {
		return err
	}
	_, podCIDR, err := net.ParseCIDR(cidr)
	if err != nil {
		return fmt.Errorf("node %s has pod CIDR %q: %w", o.nodeName, cidr, err)
	}
	o.podCIDR = cidr
	if err := saveHostSettings(o.dataDir, o.hostSettings()); err != nil {
		return fmt.Errorf("record the host settings: %w", err)
	}

	// Gossip first: a second agent with this node's name is refused here,
	// before it touches the network. The VTEP MAC follows from the pod CIDR.
	members, err := gossip.New(gossip.Config{
		NodeName: o.nodeName, BindPort: o.gossipPort, AdvertiseAddr: advertise.String(), Key: tok.GossipKey,
		Meta: gossip.Meta{Role: gossip.RoleAgent, NodeName: o.nodeName, TunnelIP: advertise.String(),
			PodCIDR: cidr, VTEPMAC: netfabric.VTEPMACFor(podCIDR).String()},
		Logger: log.With("component", "gossip"),
	})
	if err != nil {
		return fmt.Errorf("start gossip: %w", err)
	}
	defer members.Shutdown()
	if err := members.Join(ctx, []string{tok.GossipAddr}); err != nil {
		return fmt.Errorf("join the gossip: %w", err)
	}

	// The pod network: the node's bridge, then the overlay to the others.
	overlay := netfabric.OverlayConfig{UnderlayIP: advertise}
	mtu, err := netfabric.OverlayMTU(overlay)
	if err != nil {
		return fmt.Errorf("overlay MTU: %w", err)
	}
	fabric, err := netfabric.New(netfabric.Config{
		PodCIDR: podCIDR, MTU: mtu, Bridge: o.bridge, NetNSPrefix: o.netnsPrefix, NFTable: o.nftTable,
		StateDir: filepath.Join(o.dataDir, "net"), Logger: log.With("component", "netfabric"),
	})
	if err != nil {
		return fmt.Errorf("pod network: %w", err)
	}
	if err := fabric.Init(ctx); err != nil {
		return fmt.Errorf("pod network: %w", err)
	}
	if err := fabric.InitOverlay(ctx, overlay); err != nil {
		return fmt.Errorf("pod overlay: %w", err)
	}

	runtime, stopPodman, err := podmanRuntime(ctx, o.dataDir, o.hostSettings(), log)
	if err != nil {
		return err
	}
	defer stopPodman()
	agent, err := node.New(node.Config{NodeName: o.nodeName, Store: api, Runtime: runtime, Network: fabric,
		NodeIP: advertise, ClusterDNS: fabric.Gateway(), ClusterDomain: o.clusterDomain, PodDir: filepath.Join(o.dataDir, "pods"), Logger: log.With("component", "agent"),
		DiskPressure: o.diskPressure()})
	if err != nil {
		return err
	}
	say("node %s: pod CIDR %s, overlay on %s", o.nodeName, cidr, advertise)
	logSrv, err := agentLogServer(o.dataDir, advertise, agent.LogHandler(tok.APIToken))
	if err != nil {
		return err
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return serveUntil(gctx, logSrv) })
	g.Go(func() error { return agent.Run(gctx) })
	g.Go(func() error { followPeers(gctx, members, fabric, log.With("component", "overlay")); return nil })
	services := &servicePlane{opts: o.serviceOptions, store: api, nodeName: o.nodeName, nodeIP: advertise, podCIDR: podCIDR,
		bridge: o.bridge, gateway: fabric.Gateway(), nftTable: o.nftTable, members: members, log: log.With("component", "services")}
	g.Go(func() error { return services.run(gctx) })
	err = g.Wait()
	_ = members.Leave(2 * time.Second)
	say("stopped; pods keep running, and `flotilla agent` adopts them when it starts again")
	return ignoreCanceled(err)
}

// followPeers programs the overlay from gossip: on every membership change,
// the whole set of agents with a pod CIDR. It works while the API server is
// down, since it needs only gossip.
func followPeers(ctx context.Context, members *gossip.Membership, fabric *netfabric.Fabric, log interface {
	Warn(string, ...any)
}) {
	events, stop := members.Subscribe()
	defer stop()
	for {
		var peers []netfabric.Peer
		for _, m := range members.Members() {
			if m.Meta.Role != gossip.RoleAgent || m.Meta.PodCIDR == "" {
				continue
			}
			_, cidr, err1 := net.ParseCIDR(m.Meta.PodCIDR)
			mac, err2 := net.ParseMAC(m.Meta.VTEPMAC)
			ip := net.ParseIP(m.Meta.TunnelIP)
			if err1 != nil || err2 != nil || ip == nil {
				log.Warn("gossip member announces a bad overlay address; skipped", "member", m.Name)
				continue
			}
			peers = append(peers, netfabric.Peer{Node: m.Meta.NodeName, UnderlayIP: ip, PodCIDR: cidr, VTEPMAC: mac})
		}
		if err := fabric.SetPeers(ctx, peers); err != nil {
			log.Warn("programming the overlay", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case _, ok := <-events:
			if !ok {
				return
			}
		}
	}
}

// joinTokenEnv is the environment variable an agent reads its join token
// from when no --token-file is given.
const joinTokenEnv = "FLOTILLA_JOIN_TOKEN"

// errTokenOnCommandLine refuses --token: a process's arguments are in
// /proc/PID/cmdline, readable by every local user for as long as the agent
// runs, and in shell history.
var errTokenOnCommandLine = errors.New("--token puts the join token in the agent's command line, which every local user can read (ps, /proc): " +
	"pass --token-file FILE (mode 0600) or set " + joinTokenEnv)

// readToken reads and parses the join token from file when one is given,
// else takes token (from the environment). A file that does not exist yet
// is waited for (a server starting beside the agent writes it).
func readToken(ctx context.Context, token, file string, say func(string, ...any)) (join.Token, error) {
	if file != "" {
		token = ""
	}
	for told := false; token == "" && file != ""; {
		data, err := os.ReadFile(file)
		if err == nil {
			token = string(data)
			break
		}
		if !errors.Is(err, os.ErrNotExist) {
			return join.Token{}, fmt.Errorf("read the join token: %w", err)
		}
		if !told {
			say("waiting for the join token at %s ...", file)
			told = true
		}
		select {
		case <-ctx.Done():
			return join.Token{}, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
	if token == "" {
		return join.Token{}, fmt.Errorf("no join token: pass --token-file with the file `flotilla server` wrote (DATA_DIR/join-token), or set %s", joinTokenEnv)
	}
	tok, err := join.Parse(token)
	if err != nil {
		return join.Token{}, fmt.Errorf("the join token: %w", err)
	}
	return tok, nil
}

// retarget points the token at another address of the same server.
func retarget(tok join.Token, host string) (join.Token, error) {
	u, err := url.Parse(tok.Server)
	if err != nil {
		return tok, fmt.Errorf("the join token's server %q: %w", tok.Server, err)
	}
	if _, port, err := net.SplitHostPort(u.Host); err == nil {
		u.Host = net.JoinHostPort(host, port)
	} else {
		u.Host = host
	}
	tok.Server = u.String()
	if _, port, err := net.SplitHostPort(tok.GossipAddr); err == nil {
		tok.GossipAddr = net.JoinHostPort(host, port)
	}
	return tok, nil
}

// errUnreachable: the server did not answer (yet).
var errUnreachable = errors.New("cannot reach the server")

// fetchCA gets the cluster CA from the server and checks it against the
// token's fingerprint: the one thing trusted before TLS can be.
func fetchCA(ctx context.Context, tok join.Token) ([]byte, error) {
	cl := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, // checked below, by fingerprint
	}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, tok.Server+CACertsPath, nil)
	if err != nil {
		return nil, err
	}
	resp, err := cl.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%w at %s: %w", errUnreachable, tok.Server, err)
	}
	defer resp.Body.Close()
	pem, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil || resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetch the cluster CA from %s: %s %v", tok.Server, resp.Status, err)
	}
	if err := join.VerifyCA(pem, tok.CAFingerprint); err != nil {
		return nil, fmt.Errorf("the server at %s is not the one the join token names: %w", tok.Server, err)
	}
	return pem, nil
}

// agentLogServer is the HTTPS server of the agent's log endpoint (the server
// proxies `flotilla logs` to it), with a certificate of the agent's own.
func agentLogServer(dataDir string, ip net.IP, h http.Handler) (*http.Server, error) {
	_, certFile, keyFile, err := apiserver.EnsureCerts(filepath.Join(dataDir, "tls"), []string{ip.String()})
	if err != nil {
		return nil, fmt.Errorf("the log endpoint's certificate: %w", err)
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("the log endpoint's certificate: %w", err)
	}
	return &http.Server{
		Addr: net.JoinHostPort(ip.String(), strconv.Itoa(node.LogsPort)), Handler: h,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, ReadHeaderTimeout: 10 * time.Second,
	}, nil
}

// serveUntil serves srv (TLS) until ctx ends, then shuts it down.
func serveUntil(ctx context.Context, srv *http.Server) error {
	ln, err := net.Listen("tcp", srv.Addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", srv.Addr, err)
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(tls.NewListener(ln, srv.TLSConfig)) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		return nil
	}
}
