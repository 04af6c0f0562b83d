package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/flotilla-dev/flotilla/internal/atomicfile"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"

	"github.com/flotilla-dev/flotilla/cluster/apiclient"
	"github.com/flotilla-dev/flotilla/cluster/auth"
	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/cmd/flotilla/internal/lab"
	"github.com/flotilla-dev/flotilla/examples"
	"github.com/flotilla-dev/flotilla/gitsync"
	"github.com/flotilla-dev/flotilla/node/podman"
)

// labName prefixes every namespace and link of the lab.
const labName = "flab"

func newLabCommand() *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:   "lab",
		Short: "An N-node cluster on this one Linux host, each node in its own network namespace",
		Long: `Build and drive a multi-node Flotilla cluster on one Linux host, no Docker
needed: a switch namespace with a bridge, one network namespace per node with
its own address, Podman service and agent, and a server in this host's
namespace that syncs a Git repository. Every verb takes --dir.`,
		Example: `  flotilla lab up --nodes 3
  export KUBECONFIG=/var/lib/flotilla/lab/kubeconfig.yaml && flotilla get nodes
  flotilla lab kill node2 && flotilla lab start node2
  flotilla lab down`,
	}
	cmd.PersistentFlags().StringVar(&dir, "dir", filepath.Join(apiclient.DefaultDataDir(), "lab"), "the lab's directory (state, node data, logs)")
	open := func() (*lab.Lab, error) {
		l, err := lab.Open(dir)
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("no lab in %s: start one with `flotilla lab up`", dir)
		}
		return l, err
	}

	var (
		servers int
		nodes   int
		repo    string
		name    string
		subnet  string
		timeout time.Duration
		evict   time.Duration
		certTTL time.Duration
	)
	up := &cobra.Command{
		Use:   "up",
		Short: "Build the lab and wait until every node is Ready",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, sub, err := net.ParseCIDR(subnet)
			if err != nil {
				return fmt.Errorf("--subnet %q: %w", subnet, err)
			}
			var extra []string
			if certTTL > 0 {
				extra = append(extra, "--node-cert-ttl", certTTL.String())
			}
			if servers < 1 || servers > nodes {
				return fmt.Errorf("--servers %d: want 1 to --nodes (%d): each server shares a node's machine", servers, nodes)
			}
			return labUp(cmd.Context(), lab.Config{Dir: dir, Name: name, Nodes: nodes, Subnet: sub}, servers, repo, evict, timeout, extra, cmd.OutOrStdout())
		},
	}
	up.Flags().IntVar(&nodes, "nodes", 3, "how many nodes")
	up.Flags().IntVar(&servers, "servers", 1, "how many servers: 1 runs on this host; more run on node1, node2, … (one each), replicate the store and hold the API VIP (.2 of the subnet) in turn")
	up.Flags().StringVar(&name, "name", labName, "prefix of the lab's namespaces and links (one per lab on a host)")
	up.Flags().StringVar(&subnet, "subnet", "10.98.0.0/24", "the node network (the host is .254, nodes .11, .12, …)")
	up.Flags().StringVar(&repo, "repo", "", "Git repository the server syncs (default: a fresh copy of examples/hello)")
	up.Flags().DurationVar(&timeout, "timeout", 5*time.Minute, "how long to wait for every node to be Ready")
	up.Flags().DurationVar(&evict, "pod-eviction-timeout", 30*time.Second, "the server's --pod-eviction-timeout")
	up.Flags().DurationVar(&certTTL, "node-cert-ttl", 0, "the server's --node-cert-ttl (0: its default)")

	down := &cobra.Command{
		Use:   "down",
		Short: "Remove every namespace, process, mount and file of the lab (also after a crash)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			l, err := lab.Open(dir)
			if errors.Is(err, fs.ErrNotExist) {
				return lab.Cleanup(cmd.Context(), dir, labName, nil)
			} else if err != nil {
				return err
			}
			return l.Down(cmd.Context())
		},
	}
	load := &cobra.Command{
		Use:   "load IMAGE",
		Short: "Copy an image from this host's Podman storage into every node",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			l, err := open()
			if err != nil {
				return err
			}
			return l.LoadImage(cmd.Context(), args[0])
		},
	}
	exec := &cobra.Command{
		Use:   "exec NODE -- CMD [ARG...]",
		Short: "Run a command inside a node's network namespace",
		Args:  cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			l, err := open()
			if err != nil {
				return err
			}
			return l.Exec(cmd.Context(), args[0], args[1:], lab.Stdio{In: cmd.InOrStdin(), Out: cmd.OutOrStdout(), Err: cmd.ErrOrStderr()})
		},
	}
	kill := &cobra.Command{
		Use:   "kill NODE",
		Short: "Fail a node at once: its agent, Podman and containers are killed",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			l, err := open()
			if err != nil {
				return err
			}
			return l.Kill(cmd.Context(), args[0])
		},
	}
	start := &cobra.Command{
		Use:   "start NODE",
		Short: "Start a killed node's agent again",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			l, err := open()
			if err != nil {
				return err
			}
			return l.Start(cmd.Context(), args[0])
		},
	}
	cut := &cobra.Command{
		Use:   "cut NODE",
		Short: "Cut a node off the lab's network (a partition); its processes keep running",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			l, err := open()
			if err != nil {
				return err
			}
			return l.Cut(args[0])
		},
	}
	heal := &cobra.Command{
		Use:   "heal NODE",
		Short: "Plug a node that cut took off the network in again",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			l, err := open()
			if err != nil {
				return err
			}
			return l.Heal(args[0])
		},
	}
	stopServer := &cobra.Command{
		Use:   "stop-server",
		Short: "Stop every server (an outage of the control plane); nodes and pods keep running",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			l, err := open()
			if err != nil {
				return err
			}
			return l.StopServer(cmd.Context())
		},
	}
	startServer := &cobra.Command{
		Use:   "start-server",
		Short: "Start the stopped servers again",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			l, err := open()
			if err != nil {
				return err
			}
			return l.StartServer(cmd.Context())
		},
	}
	cmd.AddCommand(up, down, load, exec, kill, start, cut, heal, stopServer, startServer)
	return cmd
}

// labUp builds the lab: the server in this host's namespace on the lab's
// host address (or, with more servers, one server on each of the first
// nodes, behind an API VIP), an agent in each node, the example image in
// every node; then waits for every node to be Ready.
func labUp(ctx context.Context, cfg lab.Config, servers int, repo string, evict, timeout time.Duration, serverFlags []string, out io.Writer) error {
	dir, nodes := cfg.Dir, cfg.Nodes
	say := func(format string, args ...any) { fmt.Fprintf(out, "flotilla lab: "+format+"\n", args...) }
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	absDir, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	serverDir := filepath.Join(absDir, lab.ServerDir)
	tokenFile := filepath.Join(serverDir, "join-token")
	// The server listens on the lab's host address (.254 of the subnet), so
	// that every node reaches it.
	host := cfg.Subnet.IP.To4()
	if host == nil {
		return fmt.Errorf("--subnet %s: want IPv4", cfg.Subnet)
	}
	hostIP := net.IPv4(host[0], host[1], host[2], host[3]|254).String()
	common := []string{"--pod-eviction-timeout", evict.String(), "--interval", "5s",
		"--lb-pool", lab.LBPool(cfg.Subnet), "--local-volume-root", filepath.Join(absDir, "nodes", "volumes"),
		// Replicas the repository holds before the nodes are up spread over
		// all of them: binding waits for every node (at most as long as
		// lab up waits for them).
		"--expect-nodes", strconv.Itoa(nodes), "--scheduling-settle", timeout.String()}
	common = append(common, serverFlags...)
	if repo != "" {
		abs, err := filepath.Abs(repo)
		if err != nil {
			return err
		}
		common = append(common, "--repo", abs)
	} else if servers > 1 {
		// Every server syncs one copy of the example repository, made
		// once the lab dir is (Up wants it empty): they retry until then.
		common = append(common, "--repo", filepath.Join(absDir, lab.RepoDir))
	}
	server := lab.ProcessSpec{Args: append([]string{exe, "server", "--data-dir", serverDir, "--api-addr", hostIP + ":6443",
		"--advertise-addr", hostIP, "--gossip-bind", hostIP, "--name", "lab-server"}, common...)}
	// With more servers, server i runs on node i (its agent's gossip port
	// taken, the servers gossip on 7947), and the leader holds the VIP.
	vip := net.IPv4(host[0], host[1], host[2], host[3]|2).String()
	multiServer := func(i int) lab.ProcessSpec {
		node := fmt.Sprintf("node%d", i)
		data := serverDir
		if i > 1 {
			data = filepath.Join(absDir, lab.ServersDir, fmt.Sprintf("server%d", i))
		}
		ip := net.IPv4(host[0], host[1], host[2], host[3]|byte(10+i)).String()
		return lab.ProcessSpec{Namespace: node, Args: append([]string{exe, "server", "--data-dir", data, "--api-addr", ":6443",
			"--advertise-addr", ip, "--gossip-port", "7947", "--peer-addr", ":6444", "--api-vip", vip, "--name", fmt.Sprintf("server%d", i)},
			common...)}
	}
	if servers > 1 {
		server = multiServer(1)
	}
	say("building a %d-node lab with %d server(s) in %s ...", nodes, servers, dir)
	cfg.Logger = slog.New(slog.DiscardHandler)
	l, err := lab.Up(ctx, cfg, lab.Spec{
		Server: server,
		Agent: func(n lab.Node) lab.ProcessSpec {
			return lab.ProcessSpec{Args: []string{exe, "agent", "--token-file", tokenFile,
				"--advertise-addr", n.IP.String(), "--data-dir", n.DataDir, "--node-name", n.Name,
				"--podman-root", n.PodmanRoot, "--podman-runroot", n.RunRoot, "--netns-prefix", n.NetNSPrefix,
				// Lab nodes reach nothing outside the machine: no upstream DNS.
				"--dns-upstream", "none"}}
		},
	})
	if err != nil {
		return fmt.Errorf("lab up: %w", err)
	}
	if l.HostIP().String() != hostIP {
		_ = l.Down(ctx)
		return fmt.Errorf("lab up: the lab's host address is %s, not %s", l.HostIP(), hostIP)
	}
	fail := func(err error) error {
		return fmt.Errorf("%w (the lab is left up to look at: logs in %s; `flotilla lab down` removes it)", err, filepath.Join(dir, "logs"))
	}
	if servers > 1 && repo == "" {
		if err := gitsync.InitLocalRepo(filepath.Join(absDir, lab.RepoDir), examples.Hello()); err != nil {
			return fail(fmt.Errorf("create the example repository: %w", err))
		}
	}
	if err := ensureHostImage(ctx, filepath.Join(dir, "images")); err != nil {
		return fail(err)
	}
	say("loading %s into every node ...", examples.HelloImage)
	if err := l.LoadImage(ctx, examples.HelloImage); err != nil {
		return fail(err)
	}
	kubeconfig := filepath.Join(serverDir, "kubeconfig.yaml")
	say("waiting for %d nodes to be Ready ...", nodes)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := waitNodesReady(ctx, kubeconfig, nodes); err != nil {
		return fail(err)
	}
	say("%d nodes Ready.", nodes)
	if servers > 1 {
		if err := labJoinServers(ctx, l, kubeconfig, servers, multiServer, say); err != nil {
			return fail(err)
		}
	}
	repoDir := filepath.Join(serverDir, "repo")
	if servers > 1 && repo == "" {
		repoDir = filepath.Join(absDir, lab.RepoDir)
	}
	labKubeconfig := filepath.Join(dir, lab.KubeconfigFile)
	data, err := os.ReadFile(kubeconfig)
	if err == nil {
		err = atomicfile.WriteFile(labKubeconfig, data, 0o600)
	}
	if err != nil {
		return fail(fmt.Errorf("write %s: %w", labKubeconfig, err))
	}
	kubeconfig = labKubeconfig
	fmt.Fprintf(out, `
  export KUBECONFIG=%s
  flotilla get nodes -o wide
  flotilla get pods -o wide
  cd %s && edit && git commit        # the server syncs this repository
  flotilla lab exec node1 -- wget -qO- http://<pod IP>:8080/
  flotilla lab exec client -- wget -qO- http://<node IP>:<nodePort>/   # from outside the cluster
  (LoadBalancer services get addresses from %s)
  flotilla lab kill node2; flotilla lab start node2
  flotilla lab down
`, kubeconfig, repoDir, l.LBPool())
	return nil
}

// labJoinServers starts servers 2…n, each with a server join token from
// the first, and waits until the store's group has n voters.
func labJoinServers(ctx context.Context, l *lab.Lab, kubeconfig string, n int, spec func(int) lab.ProcessSpec, say func(string, ...any)) error {
	c, err := apiclient.FromKubeconfig(kubeconfig)
	if err != nil {
		return err
	}
	info, err := readJoinInfo(ctx, c)
	if err != nil {
		return err
	}
	tok, _, err := createJoinToken(ctx, c, info, time.Hour, "lab servers", auth.GroupServerJoiners)
	if err != nil {
		return err
	}
	tokenFile := filepath.Join(l.Dir(), lab.ServerTokenFile)
	if err := atomicfile.WriteFile(tokenFile, []byte(tok.Encode()+"\n"), 0o600); err != nil {
		return err
	}
	for i := 2; i <= n; i++ {
		ps := spec(i)
		ps.Args = append(ps.Args, "--join-token-file", tokenFile)
		if err := l.Run(ctx, fmt.Sprintf("server%d", i), ps); err != nil {
			return err
		}
	}
	say("waiting for %d servers to replicate the store ...", n)
	for {
		servers, err := c.Servers(ctx)
		voters := 0
		for _, s := range servers {
			if s.Voter {
				voters++
			}
		}
		if err == nil && voters == n {
			say("%d servers replicate the store.", n)
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %d voting servers (have %d, %v): %w", n, voters, err, ctx.Err())
		case <-time.After(time.Second):
		}
	}
}

// ensureHostImage makes sure the example image is in this host's default
// Podman storage (lab load copies it from there).
func ensureHostImage(ctx context.Context, workDir string) error {
	svc, err := podman.StartService(ctx, podman.ServiceConfig{DataDir: workDir, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return fmt.Errorf("reach this host's Podman: %w", err)
	}
	defer svc.Stop()
	return podman.EnsureBusyboxImage(ctx, svc.Runtime, examples.HelloImage)
}

// waitNodesReady waits until the API answers and n nodes are Ready.
func waitNodesReady(ctx context.Context, kubeconfig string, n int) error {
	var last error
	for {
		ready := 0
		c, err := apiclient.FromKubeconfig(kubeconfig)
		if err == nil {
			var objs []*corev1.Node
			objs, err = listNodes(ctx, c)
			for _, o := range objs {
				if nodeReady(o) {
					ready++
				}
			}
		}
		if err == nil && ready >= n {
			return nil
		}
		if err == nil {
			err = errors.New(strconv.Itoa(ready) + " of " + strconv.Itoa(n) + " nodes Ready")
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("nodes not Ready: %w", last)
		case <-time.After(time.Second):
		}
	}
}

func listNodes(ctx context.Context, c *apiclient.Client) ([]*corev1.Node, error) {
	objs, _, err := c.List(ctx, "nodes", store.ListOptions{})
	if err != nil {
		return nil, err
	}
	out := make([]*corev1.Node, len(objs))
	for i, o := range objs {
		out[i] = o.(*corev1.Node)
	}
	return out, nil
}

func nodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
