// Package lab builds Flotilla's N-node lab on one Linux host: a switch
// namespace, one network namespace per node, their processes, and the state
// that lets `lab down` undo it all, even after a crash.
//
// # Topology and addressing
//
// Every kernel object is named after Config.Name (default "flab"):
//
//	root namespace    <Name>-host  veth, HostIP (last address of the subnet, .254 in a /24)
//	      │
//	<Name>-switch     bridge br0; ports "host", "server", "node1", … (the switch has no address)
//	      │
//	<Name>-node<i>    eth0, .(10+i) (node1 = 10.98.0.11), lo up, default route via HostIP
//	<Name>-server     eth0, .1: only when Spec.Server.Namespace is "server"
//	<Name>-client     eth0, ClientIP (.253 in a /24): a machine on the node network
//	                  that is no node, to reach NodePorts and load balancer IPs from
//	LBPool            the last quarter of the subnet below the client (.192–.252 in
//	                  a /24): the server's --lb-pool
//
// The bridge lives in a namespace of its own: a fresh namespace has no
// firewall, so the br_netfilter trap (switched IPv4 frames passing the
// FORWARD hook, where a DROP policy in the root namespace kills IP while ARP
// still works) cannot bite; bridge-nf-call-iptables is also turned off there.
// The host only originates and terminates traffic on its veth, so the root
// namespace's forwarding and firewall are not touched. The nodes get a
// default route via HostIP so software that derives "my address" from the
// default route finds eth0; the host neither forwards nor masquerades for
// the lab, so nothing leaves the machine. IP forwarding inside a node (for
// its pods) is the agent's business (netfabric turns it on).
//
// The server runs where Spec.Server.Namespace says: "" is the root
// namespace (ServerIP = HostIP; simplest for a kubeconfig on the host),
// "server" a namespace of its own at .1, or a node's name to share that node.
//
// # Processes
//
// Every process is started detached (new session, stdin /dev/null, output
// appended to Dir/logs/<name>.log) through `nsenter --net=<netns> -- argv…`,
// and its pid and start time are written to Dir/lab.json at once. A node's
// processes are: whatever runs in the node's namespace or in a namespace
// named "<Name>-<node>-…" (Node.NetNSPrefix, for the agent's pods), every
// descendant of those (conmon's containers), and whatever remains in a
// recorded process's session. Kill SIGKILLs them all at once; Down does the
// same for the whole lab after a SIGTERM round.
//
// # Files
//
// Dir/lab.json (state), Dir/lab.lock, Dir/logs/, Dir/nodes/<node>/ (a
// node's DataDir; its Podman storage in podman/root), Dir/images/, and the
// short Podman run roots /run/flotilla-lab/<Name>/<node>/ (Podman refuses a
// run root longer than 50 bytes).
package lab

import (
	"context"
	"errors"
	"fmt"
	flopodman "github.com/flotilla-dev/flotilla/node/podman"
	"log/slog"
	"maps"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"time"
)

// Config says where the lab lives and how big it is.
type Config struct {
	// Dir holds every lab file: state, per-node data dirs, logs. Required.
	Dir string
	// Name prefixes every kernel object; 1–10 lowercase letters or digits
	// (interface names are at most 15 bytes). Default "flab".
	Name string
	// Nodes is the number of nodes, at least 1.
	Nodes int
	// Subnet is the lab network, IPv4, at most a /27. Default 10.98.0.0/24.
	Subnet *net.IPNet
	// StartGrace is how long Up waits after starting the processes to see
	// that none exits at once. Default 500ms.
	StartGrace time.Duration
	// Logger receives progress. Default: discard.
	Logger *slog.Logger
}

// ProcessSpec is one process to run.
type ProcessSpec struct {
	// Args is the argv; Args[0] is an absolute path.
	Args []string `json:"args"`
	// Env is added to the environment of the lab command.
	Env []string `json:"env,omitempty"`
	// Namespace is where it runs: "" the root namespace, "server" a
	// namespace of its own, or a node's name ("node1") or netns name.
	// An agent always runs in its node's namespace.
	Namespace string `json:"namespace,omitempty"`
}

// Spec is what the lab runs.
type Spec struct {
	Server ProcessSpec
	Agent  func(node Node) ProcessSpec
}

// Node is one simulated machine.
type Node struct {
	Name        string `json:"name"`      // "node1", …
	NetNS       string `json:"netns"`     // "<Name>-node1", under /run/netns
	NetNSPath   string `json:"netnsPath"` // "/run/netns/<Name>-node1"
	IP          net.IP `json:"ip"`
	PrefixLen   int    `json:"prefixLen"`
	Interface   string `json:"interface"`   // "eth0", inside NetNS
	DataDir     string `json:"dataDir"`     // Dir/nodes/node1
	NetNSPrefix string `json:"netnsPrefix"` // "<Name>-node1-": name the node's pod namespaces with it so Down finds them
	PodmanRoot  string `json:"podmanRoot"`  // DataDir/podman/root
	RunRoot     string `json:"runRoot"`     // /run/flotilla-lab/<Name>/node1
}

// PodmanArgs are the global Podman flags that select the node's storage.
// Every Podman of the node (its service, LoadImage) must pass the same
// ones: Podman refuses a database opened with other paths.
func (n Node) PodmanArgs() []string {
	return []string{"--root", n.PodmanRoot, "--runroot", n.RunRoot, "--tmpdir", flopodman.TmpDir(n.RunRoot)}
}

// Lab is a running lab.
type Lab struct {
	dir string
	log *slog.Logger
	st  *state
	w   *waiter
}

const (
	stateFile = "lab.json"
	// ServerDir is Dir/server: the data dir for the caller's server
	// process (its store, kubeconfig, join token), removed by Down.
	ServerDir = "server"
	// ServersDir is Dir/servers: the data dirs of the servers started with
	// Run (servers/server2, …), removed by Down.
	ServersDir = "servers"
	// RepoDir is Dir/repo: the example repository every server of a
	// multi-server lab syncs, removed by Down.
	RepoDir = "repo"
	// ServerTokenFile is Dir/server-join-token: the token the further
	// servers join with, removed by Down.
	ServerTokenFile = "server-join-token"
	// KubeconfigFile is Dir/kubeconfig.yaml, the caller's copy of the
	// cluster's kubeconfig for the user, removed by Down.
	KubeconfigFile = "kubeconfig.yaml"
	lockFile       = "lab.lock"
	runBase        = "/run/flotilla-lab"
	switchPort     = "br0"
	nodeIf         = "eth0"
	serverNS       = "server"
	clientNS       = "client"
)

var (
	nameRE        = regexp.MustCompile(`^[a-z0-9]{1,10}$`)
	defaultSubnet = &net.IPNet{IP: net.IPv4(10, 98, 0, 0).To4(), Mask: net.CIDRMask(24, 32)}
	// ErrExists is returned by Up when a lab or its kernel objects exist.
	ErrExists = errors.New("lab already exists")
)

func (c *Config) defaults() error {
	if c.Dir == "" {
		return errors.New("lab: Config.Dir is required")
	}
	abs, err := filepath.Abs(c.Dir)
	if err != nil {
		return fmt.Errorf("resolving lab dir %s: %w", c.Dir, err)
	}
	c.Dir = abs
	if c.Name == "" {
		c.Name = "flab"
	}
	if !nameRE.MatchString(c.Name) {
		return fmt.Errorf("lab name %q: want 1-10 lowercase letters or digits", c.Name)
	}
	if c.Nodes < 1 {
		return fmt.Errorf("lab needs at least one node, got %d", c.Nodes)
	}
	if c.Subnet == nil {
		c.Subnet = defaultSubnet
	}
	if c.StartGrace == 0 {
		c.StartGrace = 500 * time.Millisecond
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// Open returns the lab whose state is in dir. An error satisfying
// errors.Is(err, fs.ErrNotExist) means there is no lab there.
func Open(dir string) (*Lab, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("resolving lab dir %s: %w", dir, err)
	}
	st, err := loadState(abs)
	if err != nil {
		return nil, err
	}
	return &Lab{dir: abs, st: st, log: slog.New(slog.DiscardHandler), w: newWaiter()}, nil
}

// SetLogger sets where the lab's methods log.
func (l *Lab) SetLogger(log *slog.Logger) { l.log = log }

// Dir is the lab's directory.
func (l *Lab) Dir() string { return l.dir }

// Name is the prefix of the lab's kernel objects.
func (l *Lab) Name() string { return l.st.Name }

// Nodes are the lab's nodes, in order.
func (l *Lab) Nodes() []Node { return append([]Node(nil), l.st.Nodes...) }

// Node returns the named node.
func (l *Lab) Node(name string) (Node, error) {
	for _, n := range l.st.Nodes {
		if n.Name == name || n.NetNS == name {
			return n, nil
		}
	}
	return Node{}, fmt.Errorf("lab %s has no node %q", l.st.Name, name)
}

// HostIP is the root namespace's address on the lab network.
func (l *Lab) HostIP() net.IP { return l.st.HostIP }

// ServerIP is the address of the namespace the server runs in.
func (l *Lab) ServerIP() net.IP { return l.st.ServerIP }

// ClientIP is the address of the client namespace (Exec "client").
func (l *Lab) ClientIP() net.IP { return l.st.ClientIP }

// LBPool is the range of load balancer addresses, "first-last".
func (l *Lab) LBPool() string { return l.st.LBPool }

// Subnet is the lab network.
func (l *Lab) Subnet() *net.IPNet {
	_, n, _ := net.ParseCIDR(l.st.Subnet)
	return n
}

// Processes are the recorded processes, with whether each still runs.
func (l *Lab) Processes() []Process {
	st, err := loadState(l.dir)
	if err != nil {
		st = l.st
	}
	out := append([]Process(nil), st.Procs...)
	for i := range out {
		out[i].Running = out[i].alive()
	}
	return out
}

// Up builds the lab and starts its processes. On any error it removes
// whatever it made and returns the error.
func Up(ctx context.Context, cfg Config, spec Spec) (_ *Lab, err error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	if spec.Agent == nil || len(spec.Server.Args) == 0 {
		return nil, errors.New("lab: Spec needs a server and an agent")
	}
	st, err := plan(cfg, spec)
	if err != nil {
		return nil, err
	}
	if err := checkFree(cfg, st); err != nil {
		return nil, err
	}
	l := &Lab{dir: cfg.Dir, log: cfg.Logger, st: st, w: newWaiter()}
	if err := os.MkdirAll(filepath.Join(cfg.Dir, "logs"), 0o755); err != nil {
		return nil, fmt.Errorf("creating lab dir: %w", err)
	}
	defer func() {
		if err != nil {
			l.log.Warn("lab up failed; removing what it made", "err", err)
			if derr := l.Down(context.WithoutCancel(ctx)); derr != nil {
				err = errors.Join(err, fmt.Errorf("cleaning up the failed lab: %w", derr))
			}
		}
	}()
	// The state (with every name Up will use) is on disk before anything
	// is made, so a crash at any point leaves Down enough to go on.
	if err := saveState(cfg.Dir, st); err != nil {
		return nil, err
	}
	if err := buildNetwork(ctx, l.log, st); err != nil {
		return nil, err
	}
	for _, n := range st.Nodes {
		for _, d := range []string{n.PodmanRoot, n.RunRoot} {
			if err := os.MkdirAll(d, 0o755); err != nil {
				return nil, fmt.Errorf("creating %s for %s: %w", d, n.Name, err)
			}
		}
	}
	if err := l.start(ctx, "server", st.Server); err != nil {
		return nil, err
	}
	for _, n := range st.Nodes {
		if err := l.start(ctx, n.Name, st.Agents[n.Name]); err != nil {
			return nil, err
		}
	}
	select {
	case <-time.After(cfg.StartGrace):
	case <-ctx.Done():
		return nil, fmt.Errorf("starting the lab: %w", ctx.Err())
	}
	for _, p := range l.Processes() {
		if !p.Running {
			return nil, fmt.Errorf("%s exited right after starting: %s", p.Name, tail(p.Log))
		}
	}
	l.log.Info("lab up", "name", st.Name, "dir", st.Dir, "nodes", len(st.Nodes), "server", st.ServerIP)
	return l, nil
}

// Start starts a node again: the servers that run on it (that do not run
// already), then its agent, with the specs they were started with.
// It is an error if the agent still runs.
func (l *Lab) Start(ctx context.Context, node string) error {
	n, err := l.Node(node)
	if err != nil {
		return err
	}
	for _, p := range l.Processes() {
		if p.Name == n.Name && p.Running {
			return fmt.Errorf("starting %s: its agent still runs (pid %d)", n.Name, p.PID)
		}
	}
	if err := os.MkdirAll(n.RunRoot, 0o755); err != nil {
		return fmt.Errorf("creating %s: %w", n.RunRoot, err)
	}
	if err := setSwitchPort(l.st, n.Name, true); err != nil {
		return fmt.Errorf("starting %s: %w", n.Name, err)
	}
	// The servers that run on the node first, as a machine boots.
	inNode := func(ps ProcessSpec) bool { return ps.Namespace == n.Name || ps.Namespace == n.NetNS }
	running := l.running()
	if inNode(l.st.Server) && !running[serverProc] {
		if err := l.start(ctx, serverProc, l.st.Server); err != nil {
			return err
		}
	}
	for _, name := range slices.Sorted(maps.Keys(l.st.Extra)) {
		if ps := l.st.Extra[name]; inNode(ps) && !running[name] {
			if err := l.start(ctx, name, ps); err != nil {
				return err
			}
		}
	}
	return l.start(ctx, n.Name, l.st.Agents[n.Name])
}

// Run starts one more process under name (a further server) and records
// its spec, so that Start starts it again with its node and Down stops it.
func (l *Lab) Run(ctx context.Context, name string, ps ProcessSpec) error {
	if name == serverProc || l.st.Agents[name].Args != nil {
		return fmt.Errorf("lab: %q names the server or a node", name)
	}
	if _, err := l.st.nsPath(ps.Namespace); err != nil {
		return err
	}
	if err := checkArgs(name, ps); err != nil {
		return err
	}
	if err := l.update(func(st *state) error {
		if st.Extra == nil {
			st.Extra = map[string]ProcessSpec{}
		}
		st.Extra[name] = ps
		return nil
	}); err != nil {
		return err
	}
	return l.start(ctx, name, ps)
}

// running is the names of the recorded processes that run.
func (l *Lab) running() map[string]bool {
	m := map[string]bool{}
	for _, p := range l.Processes() {
		m[p.Name] = m[p.Name] || p.Running
	}
	return m
}

// serverProc is the name the server process is recorded under.
const serverProc = "server"

// StopServer stops the server processes — the server and every process
// Run started (the further servers) — with SIGTERM, then SIGKILL after
// 10 s: an outage of the control plane; the nodes, their agents and pods
// stay.
func (l *Lab) StopServer(ctx context.Context) error {
	var procs []Process
	for _, p := range l.Processes() {
		if _, extra := l.st.Extra[p.Name]; (p.Name == serverProc || extra) && p.Running {
			procs = append(procs, p)
		}
	}
	if len(procs) == 0 {
		return nil
	}
	if err := newSelector(nil, procs).kill(ctx, 10*time.Second, 10*time.Second); err != nil {
		return fmt.Errorf("stopping the servers: %w", err)
	}
	l.log.Info("lab servers stopped", "count", len(procs))
	return nil
}

// StartServer starts the server processes that do not run (the server
// and those Run started) again with the specs recorded. It is an error if
// none was stopped.
func (l *Lab) StartServer(ctx context.Context) error {
	running := l.running()
	started := 0
	if !running[serverProc] {
		if err := l.start(ctx, serverProc, l.st.Server); err != nil {
			return err
		}
		started++
	}
	for _, name := range slices.Sorted(maps.Keys(l.st.Extra)) {
		if !running[name] {
			if err := l.start(ctx, name, l.st.Extra[name]); err != nil {
				return err
			}
			started++
		}
	}
	if started == 0 {
		return errors.New("starting the servers: they all still run")
	}
	return nil
}
