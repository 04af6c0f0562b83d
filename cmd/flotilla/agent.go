package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/flotilla-dev/flotilla/cluster/apiclient"
	"github.com/flotilla-dev/flotilla/cluster/auth"
	"github.com/flotilla-dev/flotilla/cluster/gossip"
	"github.com/flotilla-dev/flotilla/cluster/join"
	"github.com/flotilla-dev/flotilla/netfabric"
	"github.com/flotilla-dev/flotilla/node"
	"github.com/flotilla-dev/flotilla/node/host"
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
(written by 'flotilla server', or made by 'flotilla token create'), take a pod
CIDR, join the gossip and the VXLAN overlay, and run the pods bound to this
node on its own Podman service.

On its first start the agent makes its keys and gets its certificates with
the token (DATA_DIR/pki): a client certificate for system:node:NAME and a
serving certificate for its log endpoint. They are renewed before they
expire; the token is needed again only if they expire unrenewed.

The agent learns the cluster's other servers from gossip, and keeps them in
DATA_DIR/agent-state.json: when the server it talks to stops answering, or
the token's server is gone when it starts, it turns to another one.

Pods keep running while no server is reachable; the agent reconciles when
one is back. An agent restart adopts its running pods.`,
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
		if tok, err = tok.WithServerHost(o.join); err != nil {
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

	// What the servers told the agent at an earlier start (agentstate.go):
	// its pod CIDR and gossip keys, for a start while no server answers,
	// and the cluster's servers, tried after the token's.
	state, haveSaved, err := openAgentState(o.dataDir, o.nodeName)
	if err != nil {
		return err
	}
	saved := state.get()

	// Trust the servers only through the cluster CA the token carries.
	caPEM := tok.CAPEM()
	// The node's own certificates: on the first start the join token buys
	// them; afterwards they are on disk and renewed before they expire, by
	// whichever server answers.
	certs, err := join.WaitNodeCerts(ctx, join.NodeCertsConfig{
		Dir: filepath.Join(o.dataDir, "pki"), NodeName: o.nodeName, Server: tok.Server, CAPEM: caPEM,
		Servers: func() []string { return state.get().serverURLs() },
		IPs:     []net.IP{advertise}, BootstrapToken: tok.BootstrapToken, Logger: log.With("component", "certificates"),
		// A node that ran before starts from its last known state even if
		// its certificates lapsed while no server answered.
		StartExpired: haveSaved,
	}, say)
	if err != nil {
		return err
	}
	// The API through the token's server, or another one when it does not
	// answer; followServers keeps the others up to date from gossip.
	api, err := apiclient.New(apiclient.Config{Server: tok.Server, Servers: saved.serverURLs(), CAData: caPEM,
		GetClientCertificate: certs.ClientCertificate})
	if err != nil {
		return err
	}
	var (
		cidr    string
		keys    gossipKeys
		offline bool
	)
	regCtx, cancel := context.WithTimeout(ctx, offlineAfter)
	err = host.Register(regCtx, api, o.nodeName, "")
	cancel()
	switch {
	case err == nil:
		if keys, err = readGossipKeys(ctx, api); err != nil {
			return err
		}
		say("joined %s as node %s (certificate valid until %s)", api.Server(), o.nodeName, certs.ClientNotAfter().Local().Format(time.RFC3339))
		if cidr, err = host.WaitPodCIDR(ctx, api, o.nodeName, say); err != nil {
			return err
		}
		if err := state.update(func(s *agentState) { s.PodCIDR = cidr; s.setKeys(keys) }); err != nil {
			log.Warn("saving the agent's state for a start without the server", "err", err)
		}
	case haveSaved && unreachable(err):
		offline = true
		cidr = saved.PodCIDR
		if keys, err = saved.keys(); err != nil {
			return err
		}
		say("no server answers (%s): starting node %s from its last known state (pod CIDR %s, its pods as they were); it follows the servers once one answers",
			strings.Join(firstThen(tok.Server, saved.serverURLs()), ", "), o.nodeName, cidr)
	default:
		return err
	}
	_, podCIDR, err := net.ParseCIDR(cidr)
	if err != nil {
		return fmt.Errorf("node %s has pod CIDR %q: %w", o.nodeName, cidr, err)
	}
	o.podCIDR = cidr

	// Gossip first: a second agent with this node's name is refused here,
	// before it touches the network. The VTEP MAC follows from the pod CIDR.
	members, err := gossip.New(gossip.Config{
		NodeName: o.nodeName, BindPort: o.gossipPort, AdvertiseAddr: advertise.String(), Key: keys.primary,
		Meta: gossip.Meta{Role: gossip.RoleAgent, NodeName: o.nodeName, TunnelIP: advertise.String(),
			PodCIDR: cidr, VTEPMAC: netfabric.VTEPMACFor(podCIDR).String()},
		Logger: log.With("component", "gossip"),
	})
	if err != nil {
		return fmt.Errorf("start gossip: %w", err)
	}
	defer members.Shutdown()
	if err := members.SetKeys(keys.primary, keys.others...); err != nil {
		return fmt.Errorf("start gossip: %w", err)
	}
	// Through the token's server and every server known since.
	gossipAddrs := func() []string { return firstThen(tok.GossipAddr, state.get().gossipAddrs()) }
	if err := members.Join(ctx, gossipAddrs()); err != nil && !offline {
		return fmt.Errorf("join the gossip: %w", err)
	} else if err != nil {
		go rejoinGossip(ctx, members, gossipAddrs, log)
	}

	// The agent's endpoint (logs, streams, metrics, stats): the node's
	// serving certificate, clients of the cluster CA. Only the API server
	// and system:masters read metrics and stats here: the agent cannot ask
	// the cluster's RBAC (no SubjectAccessReview yet); logs only the API
	// server.
	addr := net.JoinHostPort(advertise.String(), strconv.Itoa(node.LogsPort))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", addr, err)
	}
	n, err := host.New(ctx, host.Config{NodeName: o.nodeName, DataDir: o.dataDir, Settings: o.hostSettings(), Store: api,
		NodeIP: advertise, Overlay: true, Members: members, Offline: offline, Services: o.serviceOptions.config(),
		ReadLBPool: func(ctx context.Context) (string, error) {
			info, err := readJoinInfo(ctx, api)
			return info.lbPool, err
		},
		Endpoint: &host.Endpoint{Listener: ln, Authorizer: node.OnlyGroup(auth.GroupMasters), TLS: &tls.Config{
			GetCertificate: certs.ServingCertificate, MinVersion: tls.VersionTLS12,
			ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: certs.Roots(),
		}},
		Logger: log})
	if err != nil {
		return err
	}
	defer n.Close()
	say("node %s: pod CIDR %s, overlay on %s", o.nodeName, cidr, advertise)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { certs.Run(gctx); return nil })
	g.Go(func() error {
		followGossipKeys(gctx, api, members, gossipKeyPollInterval, log.With("component", "gossip"), func(k gossipKeys) {
			if err := state.update(func(s *agentState) { s.setKeys(k) }); err != nil {
				log.Warn("saving the agent's state for a start without the server", "err", err)
			}
		})
		return nil
	})
	g.Go(func() error {
		followServers(gctx, members, func(servers []knownServer) {
			urls := apiURLs(servers)
			log.Info("the cluster's servers, as gossip announces them", "servers", urls)
			if err := api.SetServers(urls); err != nil {
				log.Warn("using the servers gossip announces", "err", err)
			}
			if err := state.update(func(s *agentState) { s.Servers = servers }); err != nil {
				log.Warn("saving the cluster's servers for a start without the token's", "err", err)
			}
		})
		return nil
	})
	g.Go(func() error { return n.Run(gctx) })
	err = g.Wait()
	_ = members.Leave(2 * time.Second)
	say("stopped; pods keep running, and `flotilla agent` adopts them when it starts again")
	return ignoreCanceled(err)
}

// offlineAfter is how long an agent with a saved state waits for the
// server at start before it starts from that state.
const offlineAfter = 10 * time.Second

// rejoinGossip joins the gossip through the addresses addrs returns until
// it succeeds or ctx ends: an agent that started while no server answered.
func rejoinGossip(ctx context.Context, members *gossip.Membership, addrs func() []string, log *slog.Logger) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(5 * time.Second):
		}
		through := addrs()
		if err := members.Join(ctx, through); err == nil {
			log.Info("joined the gossip", "through", through)
			return
		}
	}
}

// followServers tells found the cluster's servers as gossip announces them
// (serversOf), at once and whenever they change, until ctx ends or members
// shuts down. A view with no server in it (this agent alone, not joined
// yet) is not told: the servers known before stay the best guess.
func followServers(ctx context.Context, members *gossip.Membership, found func([]knownServer)) {
	ch, stop := members.Subscribe()
	defer stop()
	var last []knownServer
	for {
		select {
		case <-ctx.Done():
			return
		case _, ok := <-ch:
			if !ok {
				return
			}
		}
		if servers := serversOf(members.Members()); len(servers) > 0 && !slices.Equal(servers, last) {
			last = servers
			found(servers)
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
