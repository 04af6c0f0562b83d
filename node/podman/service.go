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
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/flotilla-dev/flotilla/internal/atomicfile"
)

// ServiceConfig configures StartService. Zero values mean the default.
type ServiceConfig struct {
	// DataDir holds the socket (podman.sock), the generated containers.conf,
	// the service's pid (podman.pid) and its log (podman.log). Required.
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
	// LogSizeMax caps each container's log file, as RuntimeConfig's (the
	// Runtime's containers) and in containers.conf (containers made by hand
	// on this storage). Default DefaultLogSizeMax (10 MiB); negative: none.
	LogSizeMax int64
	// RestartBackoff is the first wait before the service is started again
	// after it exited; it doubles at each exit up to 30s, and starts over
	// once the service ran a minute. Default 1s.
	RestartBackoff time.Duration
	// Logger; default slog.Default().
	Logger *slog.Logger
}

// TmpDir is the libpod temp dir of a service with its own RunRoot. Podman
// records it in the storage's database and refuses a later `podman` command
// on the same storage with another one: give it as --tmpdir.
func TmpDir(runRoot string) string { return filepath.Join(runRoot, "libpod-tmp") }

// maxRunRoot is the longest --runroot Podman accepts.
const maxRunRoot = 50

// Restart pacing of a supervised service.
const (
	maxRestartBackoff = 30 * time.Second
	restartResetAfter = time.Minute // a run this long resets the back-off
)

// Service is a `podman system service` child process, supervised: when it
// exits (crashed, killed) it is started again on the same socket, after a
// back-off, until Stop. Containers keep running meanwhile (conmon
// supervises them), and Runtime reaches the new process by itself.
type Service struct {
	// Socket is the path of the API socket.
	Socket string
	// Runtime is connected to the service.
	Runtime *Runtime

	cfg     ServiceConfig
	args    []string
	env     []string
	logPath string
	log     *slog.Logger
	// pidFile records the service's pid, so that the next start can end a
	// service left behind by an agent that was killed.
	pidFile string

	mu       sync.Mutex
	cmd      *exec.Cmd     // the current process
	done     chan struct{} // closed when it exited
	started  time.Time
	restarts int

	quit     chan struct{} // closed by Stop
	stopOnce sync.Once
	superv   chan struct{}   // closed when the supervisor returned
	launch   chan chan error // requests to the launcher thread
}

// containersConf is the configuration that makes Podman work on the
// project's machines (see ENVIRONMENT.md): runc (crun fails on hybrid
// cgroups), ulimits that an unprivileged setrlimit accepts, cgroupfs and
// file events (no systemd), and k8s-file logs that `flotilla logs` reads.
//
// exit_command_delay is how long the conmon of an API exec session waits,
// after the command exited, before it removes the session: Podman's default
// of 300 s (Docker's, so that a client may inspect the exit code later)
// keeps two conmon processes alive for five minutes per exec, probes and
// `kubectl exec` alike. The agent inspects the exit code at once (see
// ExecStream), so execExitDelay is enough.
const containersConf = `[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
log_driver = "k8s-file"

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
exit_command_delay = ` + execExitDelay + `
`

// execExitDelay is exit_command_delay in containers.conf, in seconds.
const execExitDelay = "10"

// StartService writes <DataDir>/containers.conf, starts `podman system
// service --time=0 unix://<DataDir>/podman.sock` with CONTAINERS_CONF
// pointing at it, waits until the socket answers, and supervises it (see
// Service). The service outlives ctx (ctx bounds only the start); Stop ends
// it. Containers keep running when the service stops.
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
	if cfg.LogSizeMax == 0 {
		cfg.LogSizeMax = DefaultLogSizeMax
	}
	if cfg.LogSizeMax > 0 && cfg.LogSizeMax < minLogSizeMax {
		return nil, fmt.Errorf("podman service: a container log cap of %d bytes is under Podman's minimum of %d", cfg.LogSizeMax, minLogSizeMax)
	}
	if cfg.RestartBackoff <= 0 {
		cfg.RestartBackoff = time.Second
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
	if cfg.LogSizeMax > 0 {
		conf = strings.Replace(conf, "log_driver = \"k8s-file\"\n", fmt.Sprintf("log_driver = \"k8s-file\"\nlog_size_max = %d\n", cfg.LogSizeMax), 1)
	}
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
	if err := atomicfile.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		return nil, fmt.Errorf("podman service: write %s: %w", confPath, err)
	}
	sock := filepath.Join(dataDir, "podman.sock")
	s := &Service{
		Socket: sock, cfg: cfg, log: cfg.Logger,
		args:    append(args, "system", "service", "--time=0", "unix://"+sock),
		env:     append(filterEnv(os.Environ(), "CONTAINERS_CONF="), "CONTAINERS_CONF="+confPath),
		logPath: filepath.Join(dataDir, "podman.log"),
		pidFile: filepath.Join(dataDir, "podman.pid"),
		quit:    make(chan struct{}),
		superv:  make(chan struct{}),
		launch:  make(chan chan error),
	}
	go s.launcher()
	stopStale(s.pidFile, sock, cfg.Logger)
	if err := s.spawn(); err != nil {
		return nil, err
	}
	cfg.Logger.Info("podman service starting", "socket", sock, "root", cfg.Root, "pid", s.pid())

	if err := s.waitAnswer(ctx, func(ctx context.Context) error {
		rt, err := New(ctx, RuntimeConfig{Socket: sock, LogSizeMax: cfg.LogSizeMax})
		if err == nil {
			s.Runtime = rt
		}
		return err
	}); err != nil {
		s.Stop()
		return nil, err
	}
	go s.supervise()
	return s, nil
}

// launcher starts every service process from one OS thread that lives as
// long as the Service: a child's Pdeathsig fires when the thread that
// started it ends, and Go ends a thread that a goroutine left locked (as
// netfabric does with one whose network namespace it could not restore).
func (s *Service) launcher() {
	runtime.LockOSThread() // never unlocked: the thread ends with the Service
	for {
		select {
		case <-s.quit:
			return
		case reply := <-s.launch:
			reply <- s.spawnHere()
		}
	}
}

// spawn starts a service process (on the launcher's thread).
func (s *Service) spawn() error {
	reply := make(chan error, 1)
	select {
	case s.launch <- reply:
		return <-reply
	case <-s.quit:
		return errors.New("podman service: stopped")
	}
}

// spawnHere starts a service process on the socket (removing a stale
// socket file) and records its pid.
func (s *Service) spawnHere() error {
	_ = os.Remove(s.Socket)
	logf, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("podman service: open log: %w", err)
	}
	defer logf.Close() // the child keeps its own descriptor
	cmd := exec.Command(s.cfg.PodmanPath, s.args...)
	cmd.Env = s.env
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid:   true,            // a terminal's ^C goes to the agent, not the service
		Pdeathsig: syscall.SIGTERM, // and a killed agent takes its service along
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("podman service: start %s: %w", s.cfg.PodmanPath, err)
	}
	if err := atomicfile.WriteFile(s.pidFile, []byte(strconv.Itoa(cmd.Process.Pid)), 0o644); err != nil {
		s.log.Warn("podman service: cannot record its pid", "file", s.pidFile, "err", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	s.mu.Lock()
	s.cmd, s.done, s.started = cmd, done, time.Now()
	s.mu.Unlock()
	return nil
}

func (s *Service) pid() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cmd.Process.Pid
}

// waitAnswer waits until try succeeds against the socket, the process
// exits, ctx ends or StartTimeout passes.
func (s *Service) waitAnswer(ctx context.Context, try func(context.Context) error) error {
	s.mu.Lock()
	done := s.done
	s.mu.Unlock()
	deadline := time.Now().Add(s.cfg.StartTimeout)
	for {
		if _, err := os.Stat(s.Socket); err == nil {
			if err := try(ctx); err == nil {
				return nil
			}
		}
		select {
		case <-done:
			return fmt.Errorf("podman service exited during start (see %s)", s.logPath)
		case <-ctx.Done():
			return fmt.Errorf("podman service: waiting for socket: %w", ctx.Err())
		case <-s.quit:
			return errors.New("podman service: stopped during start")
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("podman service: socket %s did not answer within %s (see %s)", s.Socket, s.cfg.StartTimeout, s.logPath)
		}
	}
}

// supervise starts the service again each time it exits, until Stop.
func (s *Service) supervise() {
	defer close(s.superv)
	backoff := s.cfg.RestartBackoff
	for {
		s.mu.Lock()
		cmd, done, started := s.cmd, s.done, s.started
		s.mu.Unlock()
		select {
		case <-s.quit:
			return
		case <-done:
		}
		select {
		case <-s.quit: // Stop ended it
			return
		default:
		}
		if time.Since(started) >= restartResetAfter {
			backoff = s.cfg.RestartBackoff
		}
		exit := cmd.ProcessState.String()
		s.Runtime.setNote(fmt.Sprintf("the podman service (pid %d) exited: %s; restarting it", cmd.Process.Pid, exit))
		for {
			s.log.Warn("podman service exited; restarting it", "socket", s.Socket, "pid", cmd.Process.Pid, "exit", exit, "in", backoff)
			select {
			case <-s.quit:
				return
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, maxRestartBackoff)
			err := s.spawn()
			if err == nil {
				if err = s.waitAnswer(context.Background(), s.Runtime.Ping); err != nil {
					s.kill() // started but does not answer: never two on one socket
				}
			}
			if err == nil {
				break
			}
			select {
			case <-s.quit:
				return
			default:
			}
			exit = err.Error()
			s.log.Error("podman service did not start again", "socket", s.Socket, "err", err)
		}
		s.mu.Lock()
		s.restarts++
		n := s.restarts
		s.mu.Unlock()
		s.Runtime.setNote("")
		s.log.Info("podman service restarted", "socket", s.Socket, "pid", s.pid(), "restarts", n)
	}
}

// kill ends the current process at once and waits for it.
func (s *Service) kill() {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.mu.Unlock()
	if cmd != nil && cmd.Process != nil {
		_ = cmd.Process.Kill()
		<-done
	}
}

// Restarts is how often the service was started again after it exited.
func (s *Service) Restarts() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.restarts
}

// Pid is the current service process's pid.
func (s *Service) Pid() int { return s.pid() }

// Stop ends the supervision and the service (SIGTERM, then SIGKILL after
// 10s) and waits for it. Containers keep running.
func (s *Service) Stop() {
	if s == nil {
		return
	}
	first := false
	s.stopOnce.Do(func() { first = true; close(s.quit) })
	if !first {
		return
	}
	if s.Runtime != nil { // supervised: wait until it cannot spawn any more
		select {
		case <-s.superv:
		case <-time.After(time.Minute):
		}
	}
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-done
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
