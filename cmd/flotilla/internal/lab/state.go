package lab

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/flotilla-dev/flotilla/netfabric"

	"github.com/flotilla-dev/flotilla/internal/atomicfile"

	"github.com/vishvananda/netlink"
)

// state is Dir/lab.json: everything Down, Kill, Start and Exec need, so
// they work from another process than the one that ran Up.
type state struct {
	Version  int                    `json:"version"`
	Name     string                 `json:"name"`
	Dir      string                 `json:"dir"`
	Subnet   string                 `json:"subnet"`
	HostIP   net.IP                 `json:"hostIP"`
	ServerIP net.IP                 `json:"serverIP"`
	HostLink string                 `json:"hostLink"` // in the root namespace
	SwitchNS string                 `json:"switchNetns"`
	ServerNS string                 `json:"serverNetns,omitempty"` // only when the server has its own
	ClientNS string                 `json:"clientNetns,omitempty"` // a machine outside the cluster, on the node network
	ClientIP net.IP                 `json:"clientIP,omitempty"`
	LBPool   string                 `json:"lbPool,omitempty"` // "first-last": addresses for LoadBalancer services
	Nodes    []Node                 `json:"nodes"`
	Server   ProcessSpec            `json:"server"`
	Agents   map[string]ProcessSpec `json:"agents"`
	// Extra are processes Run started after Up (more servers), by name.
	Extra map[string]ProcessSpec `json:"extra,omitempty"`
	Procs []Process              `json:"processes"`
}

// netnsNames are every namespace name the lab uses.
func (s *state) netnsNames() []string {
	names := []string{s.SwitchNS}
	if s.ServerNS != "" {
		names = append(names, s.ServerNS)
	}
	if s.ClientNS != "" {
		names = append(names, s.ClientNS)
	}
	for _, n := range s.Nodes {
		names = append(names, n.NetNS)
	}
	return names
}

func (s *state) runDir() string { return filepath.Join(runBase, s.Name) }

// nsPath resolves a ProcessSpec.Namespace to a netns path ("" = root).
func (s *state) nsPath(ns string) (string, error) {
	switch ns {
	case "":
		return "", nil
	case serverNS, s.ServerNS:
		if s.ServerNS == "" {
			return "", fmt.Errorf("lab %s has no server namespace", s.Name)
		}
		return filepath.Join(netnsDir, s.ServerNS), nil
	case clientNS, s.ClientNS:
		if s.ClientNS == "" {
			return "", fmt.Errorf("lab %s has no client namespace", s.Name)
		}
		return filepath.Join(netnsDir, s.ClientNS), nil
	}
	for _, n := range s.Nodes {
		if ns == n.Name || ns == n.NetNS {
			return n.NetNSPath, nil
		}
	}
	return "", fmt.Errorf("lab %s has no namespace %q", s.Name, ns)
}

// plan decides every name and address of the lab.
func plan(cfg Config, spec Spec) (*state, error) {
	sub := &net.IPNet{IP: cfg.Subnet.IP.Mask(cfg.Subnet.Mask).To4(), Mask: cfg.Subnet.Mask}
	ones, bits := sub.Mask.Size()
	if sub.IP == nil || bits != 32 || ones > 27 {
		return nil, fmt.Errorf("lab subnet %s: want an IPv4 network of at most /27", cfg.Subnet)
	}
	size := 1 << (32 - ones)
	// Nodes from .11, the load balancer pool in the last quarter, then
	// the client and the host at the top.
	poolFirst, _ := poolBounds(size)
	if 10+cfg.Nodes >= poolFirst {
		return nil, fmt.Errorf("lab subnet %s has room for %d nodes, not %d", sub, poolFirst-11, cfg.Nodes)
	}
	st := &state{
		Version:  1,
		Name:     cfg.Name,
		Dir:      cfg.Dir,
		Subnet:   sub.String(),
		HostIP:   nthIP(sub, size-2),
		HostLink: cfg.Name + "-host",
		SwitchNS: cfg.Name + "-switch",
		ClientNS: cfg.Name + "-" + clientNS,
		ClientIP: nthIP(sub, size-3),
		Agents:   map[string]ProcessSpec{},
	}
	st.LBPool = LBPool(sub)
	for i := 1; i <= cfg.Nodes; i++ {
		name := fmt.Sprintf("node%d", i)
		ns := cfg.Name + "-" + name
		data := filepath.Join(cfg.Dir, "nodes", name)
		st.Nodes = append(st.Nodes, Node{
			Name: name, NetNS: ns, NetNSPath: filepath.Join(netnsDir, ns),
			IP: nthIP(sub, 10+i), PrefixLen: ones, Interface: nodeIf,
			DataDir: data, NetNSPrefix: ns + "-",
			PodmanRoot: filepath.Join(data, "podman", "root"),
			RunRoot:    filepath.Join(runBase, cfg.Name, name),
		})
	}
	switch ns := spec.Server.Namespace; ns {
	case "":
		st.ServerIP = st.HostIP
	case serverNS:
		st.ServerNS = cfg.Name + "-" + serverNS
		st.ServerIP = nthIP(sub, 1)
	default:
		for _, n := range st.Nodes {
			if ns == n.Name || ns == n.NetNS {
				st.ServerIP = n.IP
			}
		}
		if st.ServerIP == nil {
			return nil, fmt.Errorf("server namespace %q: want \"\", %q or a node name", ns, serverNS)
		}
	}
	st.Server = spec.Server
	if err := checkArgs("server", st.Server); err != nil {
		return nil, err
	}
	for _, n := range st.Nodes {
		ps := spec.Agent(n)
		if ps.Namespace != "" && ps.Namespace != n.Name && ps.Namespace != n.NetNS {
			return nil, fmt.Errorf("agent of %s: namespace %q, but an agent runs in its node's", n.Name, ps.Namespace)
		}
		ps.Namespace = n.Name
		if err := checkArgs("agent of "+n.Name, ps); err != nil {
			return nil, err
		}
		st.Agents[n.Name] = ps
	}
	return st, nil
}

func checkArgs(what string, ps ProcessSpec) error {
	if len(ps.Args) == 0 || !filepath.IsAbs(ps.Args[0]) {
		return fmt.Errorf("%s: want an absolute path as argv[0], got %q", what, ps.Args)
	}
	fi, err := os.Stat(ps.Args[0])
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if fi.IsDir() || fi.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("%s: %s is not an executable file", what, ps.Args[0])
	}
	return nil
}

// LBPool is the load balancer pool of a lab on subnet, "first-last": the
// server's --lb-pool.
func LBPool(subnet *net.IPNet) string {
	sub := &net.IPNet{IP: subnet.IP.Mask(subnet.Mask).To4(), Mask: subnet.Mask}
	ones, _ := sub.Mask.Size()
	first, last := poolBounds(1 << (32 - ones))
	return nthIP(sub, first).String() + "-" + nthIP(sub, last).String()
}

// poolBounds are the first and last host numbers of the pool in a subnet
// of size addresses: its last quarter, below the client and the host.
func poolBounds(size int) (first, last int) { return size * 3 / 4, size - 4 }

func nthIP(n *net.IPNet, i int) net.IP {
	ip := make(net.IP, 4)
	copy(ip, n.IP.To4())
	v := uint32(ip[0])<<24 | uint32(ip[1])<<16 | uint32(ip[2])<<8 | uint32(ip[3])
	v += uint32(i)
	return net.IPv4(byte(v>>24), byte(v>>16), byte(v>>8), byte(v)).To4()
}

// checkFree refuses an Up over an existing lab, leftover kernel objects of
// the same name, or a subnet some root-namespace address already uses.
// It runs before Up makes anything, so its errors clean nothing up.
func checkFree(cfg Config, st *state) error {
	if _, err := os.Stat(filepath.Join(cfg.Dir, stateFile)); err == nil {
		return fmt.Errorf("%w in %s: run lab down first", ErrExists, cfg.Dir)
	}
	// Down removes Dir: never let it be a directory with other things in it.
	if ents, err := os.ReadDir(cfg.Dir); err == nil && len(ents) > 0 {
		return fmt.Errorf("lab dir %s is not empty: pick a new or empty directory", cfg.Dir)
	}
	if left := leftoverNetNS(cfg.Name); len(left) > 0 {
		return fmt.Errorf("%w: namespaces %s are left from lab %q: run lab down", ErrExists, strings.Join(left, ", "), cfg.Name)
	}
	if _, err := netlink.LinkByName(st.HostLink); err == nil {
		return fmt.Errorf("%w: link %s is left from lab %q: run lab down", ErrExists, st.HostLink, cfg.Name)
	}
	_, sub, _ := net.ParseCIDR(st.Subnet)
	addrs, err := netfabric.Dump(func() ([]netlink.Addr, error) { return netlink.AddrList(nil, netlink.FAMILY_V4) })
	if err != nil {
		return fmt.Errorf("listing host addresses: %w", err)
	}
	for _, a := range addrs {
		if sub.Contains(a.IP) || a.IPNet.Contains(sub.IP) {
			return fmt.Errorf("lab subnet %s clashes with host address %s (%s): pick another subnet", sub, a.IPNet, a.Label)
		}
	}
	return nil
}

func loadState(dir string) (*state, error) {
	b, err := os.ReadFile(filepath.Join(dir, stateFile))
	if err != nil {
		return nil, fmt.Errorf("reading lab state: %w", err)
	}
	st := &state{}
	if err := json.Unmarshal(b, st); err != nil {
		return nil, fmt.Errorf("decoding lab state %s: %w", filepath.Join(dir, stateFile), err)
	}
	return st, nil
}

// saveState writes the state atomically (temp file, fsync, rename).
func saveState(dir string, st *state) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding lab state: %w", err)
	}
	if err := atomicfile.WriteFile(filepath.Join(dir, stateFile), append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("writing lab state: %w", err)
	}
	return nil
}

// update applies fn to the state on disk under the lab's lock and saves
// it, so two lab commands never lose each other's processes.
func (l *Lab) update(fn func(*state) error) error {
	unlock, err := lock(l.dir)
	if err != nil {
		return err
	}
	defer unlock()
	st, err := loadState(l.dir)
	if err != nil {
		return err
	}
	if err := fn(st); err != nil {
		return err
	}
	if err := saveState(l.dir, st); err != nil {
		return err
	}
	l.st = st
	return nil
}

// lock takes Dir/lab.lock exclusively. A missing Dir is fs.ErrNotExist.
func lock(dir string) (func(), error) {
	f, err := os.OpenFile(filepath.Join(dir, lockFile), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("locking lab state: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("locking lab state: %w", err)
	}
	return func() { f.Close() }, nil
}
