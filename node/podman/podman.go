//go:build linux

// Package podman is the node agent's container runtime: it implements
// runtimeapi.Runtime on a Podman service through the Podman Go bindings (with
// its events, runtimeapi.EventWatcher, and health, runtimeapi.Pinger), starts that
// service for the agent and starts it again whenever it dies
// (StartService), caps each container's log (RuntimeConfig.LogSizeMax), and
// makes the local busybox image that examples and tests run
// (EnsureBusyboxImage).
package podman

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/containers/podman/v4/pkg/bindings"
	"github.com/containers/podman/v4/pkg/bindings/containers"
	"github.com/containers/podman/v4/pkg/bindings/images"
	"github.com/containers/podman/v4/pkg/bindings/pods"
	"github.com/containers/podman/v4/pkg/bindings/system"
	"github.com/containers/podman/v4/pkg/domain/entities"
	"github.com/containers/podman/v4/pkg/errorhandling"
	"github.com/containers/podman/v4/pkg/specgen"
	spec "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/flotilla-dev/flotilla/node/runtimeapi"
)

// Runtime is runtimeapi.Runtime on one Podman service. Safe for concurrent use.
//
// The connection outlives the service: when the service restarts on the
// same socket (Service supervises it), the next call dials it again.
type Runtime struct {
	conn       context.Context // bindings connection; per call it is combined with the caller's ctx
	uri        string          // the service, for connections of their own (Exec)
	logSizeMax int64           // cap of each container's log file; <= 0 none
	// note, when set, says why the service does not answer (Service: it
	// exited and is being restarted); errors of Ping and WatchEvents carry it.
	note atomic.Pointer[string]
}

// Interface guards.
var (
	_ runtimeapi.Runtime      = (*Runtime)(nil)
	_ runtimeapi.Execer       = (*Runtime)(nil)
	_ runtimeapi.EventWatcher = (*Runtime)(nil)
	_ runtimeapi.Pinger       = (*Runtime)(nil)
)

// DefaultLogSizeMax is the default cap of a container's log file: 10 MiB,
// the kubelet's containerLogMaxSize.
const DefaultLogSizeMax = 10 << 20

// minLogSizeMax is the smallest cap Podman accepts.
const minLogSizeMax = 8192

// RuntimeConfig configures New. Zero values mean the default.
type RuntimeConfig struct {
	// Socket is the Podman API socket, a path or a unix:// URI (required).
	Socket string
	// LogSizeMax caps the log file of every container the runtime creates
	// (Podman's k8s-file driver; conmon enforces it). When a write would
	// pass the cap, conmon replaces the file with an empty one: a container
	// keeps between 0 and LogSizeMax bytes of its latest output, and
	// `flotilla logs` shows what the file holds (a follow goes on across the
	// cut; the lines written while the follower reopens the file may be
	// missed). This Podman (4.3, conmon 2.1.6) keeps no rotated files: the
	// kubelet's 10 MiB × 5 files is not available. Default
	// DefaultLogSizeMax (10 MiB); negative: no cap (the file grows without
	// bound); Podman refuses caps under 8 KiB.
	LogSizeMax int64
}

// New opens a connection to the Podman service at cfg.Socket and checks
// that it answers.
func New(ctx context.Context, cfg RuntimeConfig) (*Runtime, error) {
	switch {
	case cfg.Socket == "":
		return nil, errors.New("podman runtime: Socket is required")
	case cfg.LogSizeMax == 0:
		cfg.LogSizeMax = DefaultLogSizeMax
	case cfg.LogSizeMax > 0 && cfg.LogSizeMax < minLogSizeMax:
		return nil, fmt.Errorf("podman runtime: a container log cap of %d bytes is under Podman's minimum of %d", cfg.LogSizeMax, minLogSizeMax)
	}
	conn, err := connect(ctx, cfg.Socket)
	if err != nil {
		return nil, err
	}
	return &Runtime{conn: conn, uri: socketURI(cfg.Socket), logSizeMax: cfg.LogSizeMax}, nil
}

// Connect is New with the defaults: a connection to the Podman service at
// socket (a path or a unix:// URI), checked to answer.
func Connect(ctx context.Context, socket string) (*Runtime, error) {
	return New(ctx, RuntimeConfig{Socket: socket})
}

// setNote sets (or, with "", clears) why the service does not answer.
func (r *Runtime) setNote(s string) {
	if s == "" {
		r.note.Store(nil)
		return
	}
	r.note.Store(&s)
}

// noted appends the note to err, if there is one.
func (r *Runtime) noted(err error) error {
	if n := r.note.Load(); n != nil {
		return fmt.Errorf("%w (%s)", err, *n)
	}
	return err
}

func socketURI(socket string) string {
	if !strings.Contains(socket, "://") {
		return "unix://" + socket
	}
	return socket
}

func connect(ctx context.Context, socket string) (context.Context, error) {
	uri := socketURI(socket)
	// the connection context lives as long as the Runtime: not the caller's ctx
	conn, err := bindings.NewConnection(context.WithoutCancel(ctx), uri)
	if err != nil {
		return nil, fmt.Errorf("connect to podman at %s: %w", uri, err)
	}
	return conn, nil
}

// Conn returns the bindings connection context (for callers that use the
// bindings directly, such as EnsureBusyboxImage).
func (r *Runtime) Conn() context.Context { return r.conn }

// with returns a context carrying the connection that ends with ctx.
func (r *Runtime) with(ctx context.Context) (context.Context, context.CancelFunc) {
	c, cancel := context.WithCancel(r.conn)
	stop := context.AfterFunc(ctx, cancel)
	return c, func() { stop(); cancel() }
}

// notFound maps Podman's 404 to runtimeapi.ErrNotFound.
func notFound(err error) error {
	var em *errorhandling.ErrorModel
	if errors.As(err, &em) && em.ResponseCode == http.StatusNotFound {
		return fmt.Errorf("%s: %w", em.Error(), runtimeapi.ErrNotFound)
	}
	return err
}

// Names of Podman objects: unique per pod UID, readable in `podman ps`.
func podName(s runtimeapi.PodSandbox) string {
	uid := s.UID
	if len(uid) > 8 {
		uid = uid[:8]
	}
	return fmt.Sprintf("flo_%s_%s_%s", s.Namespace, s.Name, uid)
}

func labels(s runtimeapi.PodSandbox) map[string]string {
	return map[string]string{runtimeapi.LabelPodUID: s.UID, runtimeapi.LabelPodNamespace: s.Namespace, runtimeapi.LabelPodName: s.Name}
}

// RunPod implements runtimeapi.Runtime. The Podman pod has no infra container:
// each container joins the pod's network namespace by path and gets the
// pod's hostname. Volumes are bind mounts of host paths ("rbind", plus
// "ro" for read-only ones).
func (r *Runtime) RunPod(ctx context.Context, s runtimeapi.PodSandbox) (id string, err error) {
	c, cancel := r.with(ctx)
	defer cancel()
	name := podName(s)
	psg := specgen.NewPodSpecGenerator()
	psg.Name = name
	psg.Labels = labels(s)
	psg.NoInfra = true
	rep, err := pods.CreatePodFromSpec(c, &entities.PodSpec{PodSpecGen: *psg})
	if err != nil {
		return "", fmt.Errorf("create podman pod %s: %w", name, err)
	}
	defer func() {
		if err != nil {
			_ = r.RemovePod(context.WithoutCancel(ctx), rep.Id)
		}
	}()
	for _, cs := range s.Containers {
		if _, err := containers.CreateWithSpec(c, r.specFor(s, rep.Id, cs), nil); err != nil {
			return "", fmt.Errorf("create container %s of pod %s: %w", cs.Name, name, err)
		}
	}
	// start in spec order
	list, err := r.listContainers(c, rep.Id)
	if err != nil {
		return "", err
	}
	for _, cs := range s.Containers {
		for _, lc := range list {
			if lc.Labels[runtimeapi.LabelContainer] == cs.Name {
				if err := containers.Start(c, lc.ID, nil); err != nil {
					return "", fmt.Errorf("start container %s of pod %s: %w", cs.Name, name, err)
				}
			}
		}
	}
	return rep.Id, nil
}

// specFor is the spec of one container of pod podID. Its log is a k8s-file
// (what ContainerLogs reads) capped at the runtime's LogSizeMax.
func (r *Runtime) specFor(s runtimeapi.PodSandbox, podID string, cs runtimeapi.ContainerSpec) *specgen.SpecGenerator {
	sg := specgen.NewSpecGenerator(cs.Image, false)
	sg.LogConfiguration = &specgen.LogConfig{Driver: "k8s-file"}
	if r.logSizeMax > 0 {
		sg.LogConfiguration.Size = r.logSizeMax
	}
	sg.Name = podName(s) + "_" + cs.Name
	sg.Pod = podID
	sg.Labels = labels(s)
	sg.Labels[runtimeapi.LabelContainer] = cs.Name
	sg.Hostname = s.Hostname
	if d := s.DNS; d != nil {
		for _, ns := range d.Nameservers {
			if ip := net.ParseIP(ns); ip != nil {
				sg.DNSServers = append(sg.DNSServers, ip)
			}
		}
		sg.DNSSearch, sg.DNSOptions = d.Searches, d.Options
	}
	sg.Entrypoint = cs.Command
	sg.Command = cs.Args
	sg.Env = cs.Env
	sg.WorkDir = cs.WorkingDir
	if s.NetNSPath != "" {
		sg.NetNS = specgen.Namespace{NSMode: specgen.Path, Value: s.NetNSPath}
	} else {
		sg.NetNS = specgen.Namespace{NSMode: specgen.NoNetwork}
	}
	if cs.CPUMillis > 0 || cs.MemoryBytes > 0 {
		sg.ResourceLimits = &spec.LinuxResources{}
		if cs.MemoryBytes > 0 {
			m := cs.MemoryBytes
			sg.ResourceLimits.Memory = &spec.LinuxMemory{Limit: &m}
		}
		if cs.CPUMillis > 0 {
			period := uint64(100000)
			quota := max(cs.CPUMillis*int64(period)/1000, 1000)
			sg.ResourceLimits.CPU = &spec.LinuxCPU{Period: &period, Quota: &quota}
		}
	}
	applySecurity(sg, cs.Security)
	for _, m := range cs.Mounts {
		opts := []string{"rbind", "rw"}
		if m.ReadOnly {
			opts[1] = "ro"
		}
		sg.Mounts = append(sg.Mounts, spec.Mount{Type: "bind", Source: m.Source, Destination: m.Destination, Options: opts})
	}
	return sg
}

// CreateContainer implements runtimeapi.Runtime.
func (r *Runtime) CreateContainer(ctx context.Context, podID string, s runtimeapi.PodSandbox, cs runtimeapi.ContainerSpec) (string, error) {
	c, cancel := r.with(ctx)
	defer cancel()
	rep, err := containers.CreateWithSpec(c, r.specFor(s, podID, cs), nil)
	if err != nil {
		return "", fmt.Errorf("create container %s of pod %s: %w", cs.Name, podName(s), notFound(err))
	}
	return rep.ID, nil
}

func (r *Runtime) listContainers(c context.Context, podID string) ([]entities.ListContainer, error) {
	all := true
	list, err := containers.List(c, &containers.ListOptions{All: &all, Filters: map[string][]string{"pod": {podID}}})
	if err != nil {
		return nil, fmt.Errorf("list containers of pod %s: %w", podID, notFound(err))
	}
	return list, nil
}

// ListPods implements runtimeapi.Runtime.
func (r *Runtime) ListPods(ctx context.Context) ([]runtimeapi.PodSummary, error) {
	c, cancel := r.with(ctx)
	defer cancel()
	list, err := pods.List(c, &pods.ListOptions{Filters: map[string][]string{"label": {runtimeapi.LabelPodUID}}})
	if err != nil {
		return nil, fmt.Errorf("list podman pods: %w", err)
	}
	out := make([]runtimeapi.PodSummary, 0, len(list))
	for _, p := range list {
		out = append(out, runtimeapi.PodSummary{ID: p.Id, UID: p.Labels[runtimeapi.LabelPodUID],
			Namespace: p.Labels[runtimeapi.LabelPodNamespace], Name: p.Labels[runtimeapi.LabelPodName]})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// PodStatus implements runtimeapi.Runtime.
func (r *Runtime) PodStatus(ctx context.Context, podID string) (runtimeapi.PodStatus, error) {
	c, cancel := r.with(ctx)
	defer cancel()
	rep, err := pods.Inspect(c, podID, nil)
	if err != nil {
		return runtimeapi.PodStatus{}, fmt.Errorf("inspect podman pod %s: %w", podID, notFound(err))
	}
	st := runtimeapi.PodStatus{PodSummary: runtimeapi.PodSummary{ID: rep.ID, UID: rep.Labels[runtimeapi.LabelPodUID],
		Namespace: rep.Labels[runtimeapi.LabelPodNamespace], Name: rep.Labels[runtimeapi.LabelPodName]}}
	list, err := r.listContainers(c, rep.ID)
	if err != nil {
		return runtimeapi.PodStatus{}, err
	}
	for _, lc := range list {
		cs := runtimeapi.ContainerStatus{
			Name: lc.Labels[runtimeapi.LabelContainer], ID: lc.ID, Image: lc.Image, ImageID: lc.ImageID,
			ExitCode: lc.ExitCode,
		}
		switch lc.State {
		case "running", "paused", "stopping":
			cs.State = runtimeapi.ContainerRunning
		case "created", "configured", "initialized":
			cs.State = runtimeapi.ContainerCreated
		case "exited", "stopped":
			cs.State = runtimeapi.ContainerExited
		default:
			cs.State = runtimeapi.ContainerUnknown
		}
		in, err := containers.Inspect(c, lc.ID, nil)
		if err != nil {
			if errors.Is(notFound(err), runtimeapi.ErrNotFound) {
				continue
			}
			return runtimeapi.PodStatus{}, fmt.Errorf("inspect container %s: %w", lc.ID, err)
		}
		if in.State != nil {
			cs.StartedAt, cs.FinishedAt = in.State.StartedAt, in.State.FinishedAt
			cs.OOMKilled = in.State.OOMKilled
			cs.Error = in.State.Error
			cs.ExitCode = in.State.ExitCode
		}
		if cs.State != runtimeapi.ContainerExited {
			cs.FinishedAt = time.Time{}
		}
		if in.ImageName != "" {
			cs.Image = in.ImageName
		}
		st.Containers = append(st.Containers, cs)
	}
	sort.Slice(st.Containers, func(i, j int) bool { return st.Containers[i].Name < st.Containers[j].Name })
	return st, nil
}

// StartContainer implements runtimeapi.Runtime.
func (r *Runtime) StartContainer(ctx context.Context, containerID string) error {
	c, cancel := r.with(ctx)
	defer cancel()
	if err := containers.Start(c, containerID, nil); err != nil {
		return fmt.Errorf("start container %s: %w", containerID, notFound(err))
	}
	return nil
}

// RestartContainer implements runtimeapi.Runtime.
func (r *Runtime) RestartContainer(ctx context.Context, containerID string, grace time.Duration) error {
	c, cancel := r.with(ctx)
	defer cancel()
	t := uint(grace / time.Second)
	if err := containers.Stop(c, containerID, new(containers.StopOptions).WithTimeout(t)); err != nil {
		return fmt.Errorf("stop container %s: %w", containerID, notFound(err))
	}
	if err := containers.Start(c, containerID, nil); err != nil {
		return fmt.Errorf("start container %s: %w", containerID, notFound(err))
	}
	return nil
}

// StopPod implements runtimeapi.Runtime: every running container is stopped in
// parallel with the grace period (Podman sends the stop signal, then
// SIGKILL). Containers are stopped one by one rather than through the pod
// endpoint, whose timeout parameter Podman 4.3 ignores.
func (r *Runtime) StopPod(ctx context.Context, podID string, grace time.Duration) error {
	c, cancel := r.with(ctx)
	defer cancel()
	if ok, err := pods.Exists(c, podID, nil); err == nil && !ok {
		return fmt.Errorf("stop podman pod %s: %w", podID, runtimeapi.ErrNotFound)
	}
	list, err := r.listContainers(c, podID)
	if err != nil {
		return err
	}
	t := uint(grace / time.Second)
	errs := make(chan error, len(list))
	for _, lc := range list {
		go func(id string) {
			err := containers.Stop(c, id, new(containers.StopOptions).WithTimeout(t).WithIgnore(true))
			if err != nil {
				err = fmt.Errorf("stop container %s of pod %s: %w", id, podID, notFound(err))
			}
			errs <- err
		}(lc.ID)
	}
	var all []error
	for range list {
		if err := <-errs; err != nil {
			all = append(all, err)
		}
	}
	return errors.Join(all...)
}

// RemovePod implements runtimeapi.Runtime.
func (r *Runtime) RemovePod(ctx context.Context, podID string) error {
	c, cancel := r.with(ctx)
	defer cancel()
	// A forced `pod rm` skips the kill of a container whose state is
	// "stopping" (Podman 4.3): one that a StopPod, perhaps abandoned by its
	// caller, is still waiting on would keep running with no record left.
	// So whatever still runs is killed first.
	list, err := r.listContainers(c, podID)
	if err != nil && !errors.Is(err, runtimeapi.ErrNotFound) {
		return fmt.Errorf("remove podman pod %s: %w", podID, err)
	}
	for _, lc := range list {
		if lc.State == "running" || lc.State == "stopping" {
			// An error is a container that ended meanwhile.
			_ = containers.Kill(c, lc.ID, new(containers.KillOptions).WithSignal("SIGKILL"))
		}
	}
	if _, err := pods.Remove(c, podID, new(pods.RemoveOptions).WithForce(true).WithTimeout(0)); err != nil {
		if err := notFound(err); errors.Is(err, runtimeapi.ErrNotFound) {
			return nil
		}
		return fmt.Errorf("remove podman pod %s: %w", podID, err)
	}
	return nil
}

// ContainerLogs implements runtimeapi.Runtime; stdout and stderr are interleaved.
func (r *Runtime) ContainerLogs(ctx context.Context, containerID string, req runtimeapi.LogRequest, w io.Writer) error {
	c, cancel := r.with(ctx)
	defer cancel()
	opts := new(containers.LogOptions).WithStdout(true).WithStderr(true).WithFollow(req.Follow)
	if req.TailLines != nil {
		opts = opts.WithTail(strconv.FormatInt(*req.TailLines, 10))
	}
	if !req.Since.IsZero() {
		opts = opts.WithSince(req.Since.UTC().Format(time.RFC3339Nano))
	}
	if !req.Until.IsZero() {
		opts = opts.WithUntil(req.Until.UTC().Format(time.RFC3339Nano))
	}
	if req.Timestamps {
		opts = opts.WithTimestamps(true)
	}
	lines := make(chan string, 64)
	done := make(chan error, 1)
	go func() {
		err := containers.Logs(c, containerID, opts, lines, lines)
		close(lines)
		done <- err
	}()
	var werr error
	for l := range lines {
		if werr == nil {
			_, werr = io.WriteString(w, l)
			if werr != nil {
				cancel()
			}
		}
	}
	if err := <-done; err != nil && ctx.Err() == nil && werr == nil {
		return fmt.Errorf("logs of container %s: %w", containerID, notFound(err))
	}
	return werr
}

// ImageExists implements runtimeapi.Runtime.
func (r *Runtime) ImageExists(ctx context.Context, image string) (bool, error) {
	c, cancel := r.with(ctx)
	defer cancel()
	ok, err := images.Exists(c, image, nil)
	if err != nil {
		return false, fmt.Errorf("check image %s: %w", image, err)
	}
	return ok, nil
}

// RuntimeVersion implements runtimeapi.RuntimeVersioner: "podman://" and the
// service's version, as the kubelet reports a CRI runtime.
func (r *Runtime) RuntimeVersion(ctx context.Context) (string, error) {
	c, cancel := r.with(ctx)
	defer cancel()
	rep, err := system.Version(c, nil)
	if err != nil {
		return "", fmt.Errorf("podman version: %w", err)
	}
	if rep == nil || rep.Server == nil {
		return "", errors.New("podman version: no server version")
	}
	return "podman://" + rep.Server.Version, nil
}

// ImageUser implements runtimeapi.ImageUserReader: the image config's User.
func (r *Runtime) ImageUser(ctx context.Context, image string) (string, error) {
	c, cancel := r.with(ctx)
	defer cancel()
	data, err := images.GetImage(c, image, nil)
	if err != nil {
		return "", fmt.Errorf("inspect image %s: %w", image, notFound(err))
	}
	if data.Config == nil {
		return "", nil
	}
	return data.Config.User, nil
}

// PullImage implements runtimeapi.Runtime.
func (r *Runtime) PullImage(ctx context.Context, image string) error {
	c, cancel := r.with(ctx)
	defer cancel()
	if _, err := images.Pull(c, image, new(images.PullOptions).WithQuiet(true)); err != nil {
		return fmt.Errorf("pull image %s: %w", image, err)
	}
	return nil
}

// Exec implements runtimeapi.Execer (exec probes): it runs cmd in the container
// (an ExecStream with the output discarded) and returns its exit code.
func (r *Runtime) Exec(ctx context.Context, containerID string, cmd []string) (int, error) {
	err := r.ExecStream(ctx, containerID, cmd, runtimeapi.StreamIO{Stdout: io.Discard, Stderr: io.Discard})
	if code, ok := errors.AsType[runtimeapi.ExitCodeError](err); ok {
		return code.Code, nil
	}
	if err != nil {
		return -1, err
	}
	return 0, nil
}

// Ping implements runtimeapi.Pinger: the service answers /_ping.
func (r *Runtime) Ping(ctx context.Context) error {
	c, cancel := r.with(ctx)
	defer cancel()
	conn, err := bindings.GetClient(c)
	if err != nil {
		return err
	}
	resp, err := conn.DoRequest(c, nil, http.MethodGet, "/_ping", nil, nil)
	if err != nil {
		return r.noted(fmt.Errorf("podman at %s does not answer: %w", r.uri, err))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return r.noted(fmt.Errorf("podman at %s answers ping with %s", r.uri, resp.Status))
	}
	return nil
}

// watchedActions are the container events that change what the agent sees
// of a pod (exec probes' exec and exec_died, health checks, mounts… do not).
var watchedActions = map[string]bool{
	"start": true, "died": true, "oom": true, "remove": true,
	"pause": true, "unpause": true, "restart": true, "stop": true,
}

// WatchEvents implements runtimeapi.EventWatcher on Podman's event stream. The
// stream starts a second before the call, so nothing between the call and
// the stream's start is lost; older events in Podman's event file are not
// replayed. Podman 4.3 ignores every event when since is combined with
// filters, so the stream is unfiltered and events are kept here: container
// events of the watched actions on containers with runtimeapi.LabelPodUID.
func (r *Runtime) WatchEvents(ctx context.Context, subscribed func(), onEvent func(runtimeapi.RuntimeEvent)) error {
	c, cancel := r.with(ctx)
	defer cancel()
	conn, err := bindings.GetClient(c)
	if err != nil {
		return err
	}
	params := url.Values{"stream": {"true"}, "since": {strconv.FormatInt(time.Now().Add(-time.Second).Unix(), 10)}}
	resp, err := conn.DoRequest(c, nil, http.MethodGet, "/events", params, nil)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return r.noted(fmt.Errorf("follow the events of podman at %s: %w", r.uri, err))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return r.noted(fmt.Errorf("follow the events of podman at %s: %w", r.uri, resp.Process(nil)))
	}
	subscribed()
	dec := json.NewDecoder(resp.Body)
	for {
		var ev entities.Event
		if err := dec.Decode(&ev); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF // the service never ends a stream by itself
			}
			return r.noted(fmt.Errorf("the event stream of podman at %s broke: %w", r.uri, err))
		}
		uid := ev.Actor.Attributes[runtimeapi.LabelPodUID]
		if ev.Type != "container" || uid == "" || !watchedActions[ev.Action] {
			continue
		}
		onEvent(runtimeapi.RuntimeEvent{Action: ev.Action, PodUID: uid, ContainerID: ev.Actor.ID})
	}
}
