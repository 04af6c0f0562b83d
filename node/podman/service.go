//go:build linux

package podman

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ServiceConfig configures StartService. Zero values mean the default.
type ServiceConfig struct {
	// DataDir holds the socket (podman.sock), the generated containers.conf
	// and the service's log (podman.log). Required.
	DataDir string
	// Root and RunRoot are Podman's storage directories (--root,
	// --runroot). Empty: the machine's default storage, so that a plain
	// `podman ps` shows the agent's containers. Give both to isolate a
	// simulated node or a test; then the libpod temp dir goes under RunRoot.
	Root, RunRoot string
	// StorageDriver overrides the storage driver ("vfs", "overlay"); empty:
	// Podman's default.
	StorageDriver string
	// PodmanPath is the podman binary; default "podman" from PATH.
	PodmanPath string
	// StartTimeout bounds the wait for the socket to answer; default 30s.
	StartTimeout time.Duration
	// Logger; default slog.Default().
	Logger *slog.Logger
}

// TmpDir is the libpod temp dir of a service with its own RunRoot. Podman
// records it in the storage's database and refuses a later `podman` command
// on the same storage with another one: give it as --tmpdir.
func TmpDir(runRoot string) string { return filepath.Join(runRoot, "libpod-tmp") }

// maxRunRoot is the longest --runroot Podman accepts.
const maxRunRoot = 50

// Service is a `podman system service` child process.
type Service struct {
	// Socket is the path of the API socket.
	Socket string
	// Runtime is connected to the service.
	Runtime *Runtime

	cmd  *exec.Cmd
	done chan struct{}
	log  *slog.Logger
	// pidFile records the service's pid, so that the next start can end a
	// service left behind by an agent that was killed.
	pidFile string
}

// containersConf is the configuration that makes Podman work on the
// project's machines (see ENVIRONMENT.md): runc (crun fails on hybrid
// cgroups), ulimits that an unprivileged setrlimit accepts, cgroupfs and
// file events (no systemd), and k8s-file logs that `flotilla logs` reads.
const containersConf = `[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
log_driver = "k8s-file"

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
`

// StartService writes <DataDir>/containers.conf, starts `podman system
// service --time=0 unix://<DataDir>/podman.sock` with CONTAINERS_CONF
// pointing at it, and waits until the socket answers. The service outlives
// ctx (ctx bounds only the start); Stop ends it. Containers keep running
// when the service stops (conmon supervises them).
func StartService(ctx context.Context, cfg ServiceConfig) (*Service, error) {
	if cfg.DataDir == "" {
		return nil, errors.New("podman service: DataDir is required")
	}
	if (cfg.Root == "") != (cfg.RunRoot == "") {
		return nil, errors.New("podman service: give both Root and RunRoot, or neither")
	}
	if len(cfg.RunRoot) > maxRunRoot {
		return nil, fmt.Errorf("podman service: run root %q is longer than Podman's limit of %d characters: choose a shorter path", cfg.RunRoot, maxRunRoot)
	}
	if cfg.PodmanPath == "" {
		cfg.PodmanPath = "podman"
	}
	if cfg.StartTimeout <= 0 {
		cfg.StartTimeout = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	dataDir, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return nil, fmt.Errorf("podman service: data dir: %w", err)
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("podman service: create data dir: %w", err)
	}
	conf := containersConf
	var args []string
	if cfg.Root != "" {
		tmp := TmpDir(cfg.RunRoot)
		conf += fmt.Sprintf("tmp_dir = %q\nvolume_path = %q\n", tmp, filepath.Join(cfg.Root, "volumes"))
		args = append(args, "--root", cfg.Root, "--runroot", cfg.RunRoot)
	}
	if cfg.StorageDriver != "" {
		args = append(args, "--storage-driver", cfg.StorageDriver)
	}
	confPath := filepath.Join(dataDir, "containers.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		return nil, fmt.Errorf("podman service: write %s: %w", confPath, err)
	}
	sock := filepath.Join(dataDir, "podman.sock")
	pidFile := filepath.Join(dataDir, "podman.pid")
	stopStale(pidFile, sock, cfg.Logger)
	_ = os.Remove(sock)
	logf, err := os.OpenFile(filepath.Join(dataDir, "podman.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("podman service: open log: %w", err)
	}
	defer logf.Close() // the child keeps its own descriptor

	args = append(args, "system", "service", "--time=0", "unix://"+sock)
	cmd := exec.Command(cfg.PodmanPath, args...)
	cmd.Env = append(filterEnv(os.Environ(), "CONTAINERS_CONF="), "CONTAINERS_CONF="+confPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid:   true,            // a terminal's ^C goes to the agent, not the service
		Pdeathsig: syscall.SIGTERM, // and a killed agent takes its service along
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("podman service: start %s: %w", cfg.PodmanPath, err)
	}
	if err := os.WriteFile(pidFile, []byte(strconv.Itoa(cmd.Process.Pid)), 0o644); err != nil {
		cfg.Logger.Warn("podman service: cannot record its pid", "file", pidFile, "err", err)
	}
	s := &Service{Socket: sock, cmd: cmd, done: make(chan struct{}), log: cfg.Logger, pidFile: pidFile}
	go func() { _ = cmd.Wait(); close(s.done) }()
	cfg.Logger.Info("podman service starting", "socket", sock, "root", cfg.Root, "pid", cmd.Process.Pid)

	deadline := time.Now().Add(cfg.StartTimeout)
	for {
		if _, err := os.Stat(sock); err == nil {
			rt, err := Connect(ctx, sock)
			if err == nil {
				s.Runtime = rt
				return s, nil
			}
		}
		select {
		case <-s.done:
			return nil, fmt.Errorf("podman service exited during start (see %s)", filepath.Join(dataDir, "podman.log"))
		case <-ctx.Done():
			s.Stop()
			return nil, fmt.Errorf("podman service: waiting for socket: %w", ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.Stop()
			return nil, fmt.Errorf("podman service: socket %s did not answer within %s (see podman.log)", sock, cfg.StartTimeout)
		}
	}
}

// Stop ends the service (SIGTERM, then SIGKILL after 10s) and waits for it.
// Containers keep running.
func (s *Service) Stop() {
	if s == nil || s.cmd.Process == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
	_ = os.Remove(s.pidFile)
	s.log.Info("podman service stopped", "socket", s.Socket)
}

// stopStale ends a service that a previous agent started on the same socket
// and left behind (the agent was killed before it could stop it). Only a
// process whose command line names that socket is touched.
func stopStale(pidFile, sock string, log *slog.Logger) {
	data, err := os.ReadFile(pidFile)
	if err != nil {
		return
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid <= 1 {
		return
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || !strings.Contains(string(cmdline), "unix://"+sock) {
		return
	}
	log.Info("stopping a podman service left by a previous run", "pid", pid, "socket", sock)
	_ = syscall.Kill(pid, syscall.SIGTERM)
	for i := 0; i < 100; i++ {
		if syscall.Kill(pid, 0) != nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
}

func filterEnv(env []string, prefix string) []string {
	out := env[:0:0]
	for _, e := range env {
		if !strings.HasPrefix(e, prefix) {
			out = append(out, e)
		}
	}
	return out
}
