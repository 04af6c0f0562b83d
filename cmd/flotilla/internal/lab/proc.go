package lab

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/flotilla-dev/flotilla/internal/mounts"

	"golang.org/x/sys/unix"
)

// Process is one process the lab started.
type Process struct {
	Name      string   `json:"name"` // "server" or the node's name
	PID       int      `json:"pid"`
	StartTime uint64   `json:"startTime"` // /proc/PID/stat field 22: tells a recycled pid apart
	Args      []string `json:"args"`
	NetNS     string   `json:"netnsPath,omitempty"`
	Log       string   `json:"log"`
	Running   bool     `json:"-"` // filled by Processes
}

// alive reports whether the recorded process still runs (not a zombie,
// not a recycled pid).
func (p Process) alive() bool {
	pi, ok := readProc(p.PID)
	return ok && pi.start == p.StartTime && pi.state != 'Z'
}

// waiter reaps the children this process started, so a killed one does
// not linger as a zombie that looks alive.
type waiter struct{ wg sync.WaitGroup }

func newWaiter() *waiter { return &waiter{} }

// start runs ps detached under name and records it in the state before
// returning. A process of the same name already recorded is replaced.
func (l *Lab) start(ctx context.Context, name string, ps ProcessSpec) error {
	nsPath, err := l.st.nsPath(ps.Namespace)
	if err != nil {
		return fmt.Errorf("starting %s: %w", name, err)
	}
	if err := checkArgs(name, ps); err != nil {
		return fmt.Errorf("starting %s: %w", name, err)
	}
	argv := ps.Args
	if nsPath != "" {
		argv = append([]string{"--net=" + nsPath, "--"}, ps.Args...)
		nsenter, err := exec.LookPath("nsenter")
		if err != nil {
			return fmt.Errorf("starting %s: %w", name, err)
		}
		argv = append([]string{nsenter}, argv...)
	}
	logPath := filepath.Join(l.dir, "logs", name+".log")
	logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("starting %s: opening its log: %w", name, err)
	}
	defer logf.Close()
	fmt.Fprintf(logf, "--- lab: starting %s at %s: %s\n", name, time.Now().Format(time.RFC3339), strings.Join(argv, " "))
	// Not CommandContext: the process outlives ctx and this program.
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), ps.Env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", name, err)
	}
	p := Process{Name: name, PID: cmd.Process.Pid, Args: ps.Args, NetNS: nsPath, Log: logPath}
	if pi, ok := readProc(p.PID); ok {
		p.StartTime = pi.start
	}
	l.w.wg.Add(1)
	go func() { defer l.w.wg.Done(); cmd.Wait() }()
	err = l.update(func(st *state) error {
		kept := st.Procs[:0]
		for _, q := range st.Procs {
			if q.Name != name {
				kept = append(kept, q)
			}
		}
		st.Procs = append(kept, p)
		return nil
	})
	if err != nil {
		// Unrecorded, it would escape Down: stop it now.
		syscall.Kill(p.PID, syscall.SIGKILL)
		return fmt.Errorf("recording %s (pid %d): %w", name, p.PID, err)
	}
	l.log.Info("lab process started", "name", name, "pid", p.PID, "netns", nsPath, "log", logPath)
	return nil
}

type procInfo struct {
	pid, ppid, sid int
	state          byte
	start          uint64
	netns          uint64
}

// readProc parses /proc/PID/stat (after the command name, which may hold
// spaces and parentheses) and the process's network namespace.
func readProc(pid int) (procInfo, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procInfo{}, false
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procInfo{}, false
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); field N is f[N-3].
	if len(f) < 20 {
		return procInfo{}, false
	}
	pi := procInfo{pid: pid, state: f[0][0]}
	pi.ppid, _ = strconv.Atoi(f[1])
	pi.sid, _ = strconv.Atoi(f[3])
	pi.start, _ = strconv.ParseUint(f[19], 10, 64)
	if l, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", pid)); err == nil {
		// "net:[4026532000]"
		l = strings.TrimSuffix(strings.TrimPrefix(l, "net:["), "]")
		pi.netns, _ = strconv.ParseUint(l, 10, 64)
	}
	return pi, true
}

func listProcs() map[int]procInfo {
	ents, _ := os.ReadDir("/proc")
	out := make(map[int]procInfo, len(ents))
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if pi, ok := readProc(pid); ok && pi.state != 'Z' {
			out[pid] = pi
		}
	}
	return out
}

// selector says which processes belong to (part of) the lab.
type selector struct {
	netns    map[uint64]bool // namespace inodes
	sessions map[int]bool    // sids of recorded processes
}

// newSelector covers the given netns paths and the sessions of procs. A
// recorded leader whose pid now runs something else means its session is
// gone (Linux does not reuse a pid still used as a session id).
func newSelector(nsPaths []string, procs []Process) selector {
	s := selector{netns: map[uint64]bool{}, sessions: map[int]bool{}}
	for _, p := range nsPaths {
		if ino := netnsInode(p); ino != 0 {
			s.netns[ino] = true
		}
	}
	for _, p := range procs {
		pi, ok := readProc(p.PID)
		if !ok || pi.start == p.StartTime {
			s.sessions[p.PID] = true
		}
	}
	return s
}

// match returns the matching processes and all their descendants
// (conmon's containers live in the pods' namespaces, below conmon).
func (s selector) match() map[int]procInfo {
	all := listProcs()
	self := os.Getpid()
	out := map[int]procInfo{}
	for pid, pi := range all {
		if pid == 1 || pid == self {
			continue
		}
		if s.netns[pi.netns] || s.sessions[pi.sid] {
			out[pid] = pi
		}
	}
	children := map[int][]int{}
	for pid, pi := range all {
		children[pi.ppid] = append(children[pi.ppid], pid)
	}
	queue := make([]int, 0, len(out))
	for pid := range out {
		queue = append(queue, pid)
	}
	for len(queue) > 0 {
		pid := queue[0]
		queue = queue[1:]
		for _, c := range children[pid] {
			if _, ok := out[c]; !ok && c != self {
				out[c] = all[c]
				queue = append(queue, c)
			}
		}
	}
	return out
}

// kill signals every process the selector matches; with grace > 0 it
// sends SIGTERM first and waits up to grace. It then SIGKILLs what is
// left, rescanning (new forks, reparented children) until nothing
// matches or timeout.
func (s selector) kill(ctx context.Context, grace, timeout time.Duration) error {
	signal := func(sig syscall.Signal) int {
		procs := s.match()
		for pid, pi := range procs {
			// Recheck identity right before signalling: the pid may be new.
			if now, ok := readProc(pid); ok && now.start == pi.start {
				unix.Kill(pid, sig)
			}
		}
		return len(procs)
	}
	if grace > 0 && signal(syscall.SIGTERM) > 0 {
		deadline := time.Now().Add(grace)
		for time.Now().Before(deadline) && len(s.match()) > 0 {
			sleep(ctx, 100*time.Millisecond)
		}
	}
	deadline := time.Now().Add(timeout)
	for {
		n := signal(syscall.SIGKILL)
		if n == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d lab processes still alive after SIGKILL: %v", n, pidList(s.match()))
		}
		sleep(ctx, 50*time.Millisecond)
	}
}

func pidList(m map[int]procInfo) []int {
	var out []int
	for pid := range m {
		out = append(out, pid)
	}
	return out
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-time.After(d):
	case <-ctx.Done():
	}
}

// Kill makes a node fail at once, like a machine losing power: every
// process of the node (agent, its Podman service, conmons, containers) is
// SIGKILLed, its port on the switch goes down, and its run root (the
// node's /run, a tmpfs that a reboot empties) is wiped, so that its
// Podman starts again as after a reboot, its containers stopped. Its
// namespace, storage and pod namespaces stay; Start plugs it in again.
func (l *Lab) Kill(ctx context.Context, node string) error {
	n, err := l.Node(node)
	if err != nil {
		return err
	}
	st, err := loadState(l.dir)
	if err != nil {
		return fmt.Errorf("killing %s: %w", n.Name, err)
	}
	var procs []Process
	for _, p := range st.Procs {
		if p.Name == n.Name || p.NetNS == n.NetNSPath {
			procs = append(procs, p)
		}
	}
	paths := []string{n.NetNSPath}
	for _, name := range leftoverNetNS(n.NetNSPrefix[:len(n.NetNSPrefix)-1]) {
		paths = append(paths, filepath.Join(netnsDir, name))
	}
	if err := newSelector(paths, procs).kill(ctx, 0, 10*time.Second); err != nil {
		return fmt.Errorf("killing %s: %w", n.Name, err)
	}
	if err := mounts.UnmountUnder(n.RunRoot); err != nil {
		return fmt.Errorf("killing %s: %w", n.Name, err)
	}
	if err := os.RemoveAll(n.RunRoot); err != nil {
		return fmt.Errorf("killing %s: empty its run root: %w", n.Name, err)
	}
	// runc keeps its containers' state in the host's /run too, which the
	// node's reboot would empty as well: left, the next start of each
	// container fails ("container with given ID already exists").
	if err := removeRuncState(runcRoot, n.PodmanRoot); err != nil {
		return fmt.Errorf("killing %s: %w", n.Name, err)
	}
	// Unplug it too: a machine without power answers nothing, not even
	// ARP for the addresses its kernel (the namespace) still holds.
	if err := setSwitchPort(st, n.Name, false); err != nil {
		return fmt.Errorf("killing %s: %w", n.Name, err)
	}
	l.log.Info("lab node killed", "node", n.Name)
	return nil
}

// runcRoot is where runc keeps its containers' state when Podman runs it
// as root without a --root of its own.
const runcRoot = "/run/runc"

// removeRuncState removes runc's state (root/ID/state.json) of every
// container whose root file system is under storage: one node's, killed.
func removeRuncState(root, storage string) error {
	entries, err := os.ReadDir(root)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read runc's state: %w", err)
	}
	for _, e := range entries {
		dir := filepath.Join(root, e.Name())
		data, err := os.ReadFile(filepath.Join(dir, "state.json"))
		if err != nil {
			continue // not a container's, or removed meanwhile
		}
		var st struct {
			Config struct {
				Rootfs string `json:"rootfs"`
			} `json:"config"`
		}
		if json.Unmarshal(data, &st) != nil || !strings.HasPrefix(st.Config.Rootfs, storage+string(filepath.Separator)) {
			continue
		}
		if err := os.RemoveAll(dir); err != nil {
			return fmt.Errorf("remove runc's state of container %s: %w", e.Name(), err)
		}
	}
	return nil
}

// Cut unplugs a node from the switch, its processes left running: a
// network partition that isolates it from every other node, the host and
// the client. Heal plugs it in again.
func (l *Lab) Cut(node string) error {
	n, err := l.Node(node)
	if err != nil {
		return err
	}
	if err := setSwitchPort(l.st, n.Name, false); err != nil {
		return fmt.Errorf("cutting %s off: %w", n.Name, err)
	}
	l.log.Info("lab node cut off", "node", n.Name)
	return nil
}

// Heal plugs a node that Cut unplugged in again.
func (l *Lab) Heal(node string) error {
	n, err := l.Node(node)
	if err != nil {
		return err
	}
	if err := setSwitchPort(l.st, n.Name, true); err != nil {
		return fmt.Errorf("healing %s: %w", n.Name, err)
	}
	l.log.Info("lab node plugged in again", "node", n.Name)
	return nil
}

// Stdio are the streams of a command run by Exec; nil means /dev/null.
type Stdio struct {
	In       io.Reader
	Out, Err io.Writer
}

// Exec runs argv inside the network namespace of node (a node's name,
// "server", or "client": the machine outside the cluster) and waits for it. argv[0] is looked up in PATH.
func (l *Lab) Exec(ctx context.Context, node string, argv []string, stdio Stdio) error {
	if len(argv) == 0 {
		return errors.New("lab exec: no command")
	}
	path, err := l.st.nsPath(node)
	if err != nil || path == "" {
		return fmt.Errorf("lab exec in %q: no such node", node)
	}
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + path, "--"}, argv...)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdio.In, stdio.Out, stdio.Err
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("running %s in %s: %w", strings.Join(argv, " "), node, err)
	}
	return nil
}
