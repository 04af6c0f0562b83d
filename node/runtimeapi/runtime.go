// Package runtimeapi is the contract between the node agent and a
// container runtime (as the kubelet's CRI): the pods and containers the
// agent asks for, what the runtime reports back, the core Runtime
// interface and its optional abilities, found by type assertion. Package
// node uses it; node/podman implements it (node.FakeRuntime is the test
// double). Neither imports the other.
package runtimeapi

import (
	"context"
	"errors"
	"io"
	"time"
)

// Labels the runtime puts on every pod and container it creates for the
// agent. They are the only state the agent needs after a restart: the pod UID
// says which store object a runtime pod belongs to.
const (
	LabelPodUID       = "flotilla.dev/pod-uid"
	LabelPodNamespace = "flotilla.dev/pod-namespace"
	LabelPodName      = "flotilla.dev/pod-name"
	LabelContainer    = "flotilla.dev/container"
)

// Sentinel errors of a Runtime. Callers branch on them with errors.Is.
var (
	// ErrNotFound: the pod, container or image does not exist (any more).
	ErrNotFound = errors.New("not found")
	// ErrImageNotPresent: the image is not in local storage and may not be
	// pulled (pull policy Never, or an image under localhost/).
	ErrImageNotPresent = errors.New("image not present and never pulled")
	// ErrTimeout: the runtime did not answer within the call's deadline
	// (node.Config.RuntimeTimeout, node.Config.PullTimeout); the error names the
	// operation. The agent wraps it; a Runtime need not return it.
	ErrTimeout = errors.New("the container runtime did not answer in time")
	// ErrEventsUnsupported: EventWatcher.WatchEvents cannot watch this
	// runtime; the agent then polls it every node.Config.SyncInterval.
	ErrEventsUnsupported = errors.New("the container runtime cannot stream its events")
)

// PodSandbox is what the agent asks the runtime to run: one pod with its
// network namespace and its containers, env already resolved.
type PodSandbox struct {
	UID       string
	Namespace string
	Name      string
	// Hostname of every container: the pod's spec.hostname, else its name.
	Hostname string
	// DNS is the pod's resolver configuration; nil keeps the runtime's
	// default (the node's own resolv.conf).
	DNS *DNSConfig
	// NetNSPath is the network namespace (from podnet.Network.Setup) every
	// container joins. "" runs the containers in a private namespace with no
	// network (only for tests).
	NetNSPath string
	// Containers in spec order; RunPod creates and starts them in this
	// order. Empty for a pod with init containers: RunPod then creates the
	// pod alone, and the agent adds each container with CreateContainer
	// when its turn comes.
	Containers []ContainerSpec
}

// DNSConfig is a pod's /etc/resolv.conf.
type DNSConfig struct {
	Nameservers []string
	Searches    []string
	Options     []string // "ndots:5"
}

// ContainerSpec is one container, as the runtime needs it: the Kubernetes
// container with env resolved to values and limits in runtime units.
type ContainerSpec struct {
	Name  string
	Image string
	// Command replaces the image's entrypoint when set (k8s command).
	Command []string
	// Args replace the image's cmd when set (k8s args).
	Args       []string
	Env        map[string]string
	WorkingDir string
	// CPUMillis is the CPU limit in millicores; 0 means none.
	CPUMillis int64
	// MemoryBytes is the memory limit; 0 means none.
	MemoryBytes int64
	// Mounts are the container's volumes, in volumeMounts order.
	Mounts []Mount
	// Security is the container's security context, to apply as is.
	Security Security
}

// Mount is one volume of a container: a host file or directory
// bind-mounted (recursively) into it. The agent prepares the source
// (volumes.Manager); a memory-backed volume is a tmpfs the agent mounted
// on the host, so that every container of the pod shares it.
type Mount struct {
	// Source is the host path; it exists when the container is created.
	Source string
	// Destination is the absolute path in the container.
	Destination string
	// ReadOnly mounts it read-only.
	ReadOnly bool
}

// PodSummary is one runtime pod as ListPods reports it.
type PodSummary struct {
	ID        string // runtime pod ID
	UID       string // store pod UID, from LabelPodUID
	Namespace string
	Name      string
}

// ContainerStateKind is the runtime state of a container.
type ContainerStateKind string

const (
	ContainerCreated ContainerStateKind = "created" // created, never started
	ContainerRunning ContainerStateKind = "running"
	ContainerExited  ContainerStateKind = "exited" // ran and stopped; ExitCode is valid
	ContainerUnknown ContainerStateKind = "unknown"
)

// ContainerStatus is one container as the runtime sees it now.
type ContainerStatus struct {
	Name       string // the k8s container name (LabelContainer)
	ID         string // runtime container ID
	Image      string // the image reference it was created from
	ImageID    string
	State      ContainerStateKind
	ExitCode   int32
	OOMKilled  bool
	StartedAt  time.Time // zero if never started
	FinishedAt time.Time // zero if never exited
	// Error is the runtime's error of the last start, if any.
	Error string
}

// PodStatus is a runtime pod with its containers.
type PodStatus struct {
	PodSummary
	Containers []ContainerStatus
}

// Clone is a copy that shares nothing with p.
func (p PodStatus) Clone() PodStatus {
	p.Containers = append([]ContainerStatus(nil), p.Containers...)
	return p
}

// Container returns the status of the named container, or nil.
func (p *PodStatus) Container(name string) *ContainerStatus {
	for i := range p.Containers {
		if p.Containers[i].Name == name {
			return &p.Containers[i]
		}
	}
	return nil
}

// LogRequest selects the logs of one container.
type LogRequest struct {
	Follow bool
	// TailLines, when not nil, returns only that many last lines.
	TailLines *int64
	// Since and Until, when not zero, bound the lines by the time they
	// were written.
	Since, Until time.Time
	// Timestamps prefixes each line with the time it was written
	// (RFC 3339 with nanoseconds), as kubectl logs --timestamps shows.
	Timestamps bool
}

// Runtime runs pods for the agent (Podman implements it; FakeRuntime is the
// test double). The agent owns this seam.
//
// All methods are safe for concurrent use; the agent calls them from one
// worker goroutine per pod (so calls for one pod never overlap), and from its
// main loop for ListPods and orphan removal. Every method may block on the
// runtime, and must return soon after ctx ends: the agent gives every call a
// deadline (node.Config.RuntimeTimeout, 2 min by default; PullImage
// node.Config.PullTimeout, 10 min; StopPod and RestartContainer their grace period
// on top; a ContainerLogs with Follow only the caller's ctx), so a hung
// runtime never hangs a pod worker. None keeps running after it returns
// except what it documents. Returned values belong to the caller. Restart
// counts and back-off are the agent's bookkeeping, not the runtime's: the
// runtime never restarts a container by itself.
//
// Optional abilities, found by type assertion: EventWatcher (react to
// container events instead of polling), Pinger (health of the runtime for
// the node's Ready condition), Execer (exec probes).
type Runtime interface {
	// RunPod creates the pod (hostname, labels, network namespace) and its
	// containers, and starts the containers in order. It returns the runtime
	// pod ID. If any step fails the partially created pod is removed before
	// the error is returned, so a retry starts clean. A container that
	// starts and exits at once is not an error (PodStatus shows it).
	RunPod(ctx context.Context, spec PodSandbox) (string, error)

	// CreateContainer creates one more container in the existing pod podID,
	// with the pod-level settings of sb (labels, hostname, DNS, network
	// namespace; sb.Containers is ignored), and returns its ID. It does not
	// start it: StartContainer does. The agent runs init containers this
	// way, one at a time, and then creates the app containers. ErrNotFound
	// if the pod is gone.
	CreateContainer(ctx context.Context, podID string, sb PodSandbox, c ContainerSpec) (string, error)

	// ListPods returns every runtime pod that carries Flotilla labels,
	// running or not, so the agent can adopt or remove them after a restart.
	ListPods(ctx context.Context) ([]PodSummary, error)

	// PodStatus returns the pod's containers and their states. ErrNotFound
	// if the pod is gone.
	PodStatus(ctx context.Context, podID string) (PodStatus, error)

	// StartContainer starts a created or exited container again (same ID).
	// ErrNotFound if it is gone.
	StartContainer(ctx context.Context, containerID string) error

	// RestartContainer stops a running container (SIGTERM, then SIGKILL
	// after grace) and starts it again. Blocks up to grace plus the start.
	RestartContainer(ctx context.Context, containerID string, grace time.Duration) error

	// StopPod sends SIGTERM to every container, waits up to grace, then kills
	// what is left. Blocks until all are stopped. Stopping a stopped pod is
	// not an error; ErrNotFound if the pod is gone.
	StopPod(ctx context.Context, podID string, grace time.Duration) error

	// RemovePod removes the pod and its containers (killing any still
	// running). Removing a missing pod is not an error.
	RemovePod(ctx context.Context, podID string) error

	// ContainerLogs copies the container's output to w. With Follow it blocks
	// until ctx ends or the container stops. ErrNotFound if it is gone.
	ContainerLogs(ctx context.Context, containerID string, req LogRequest, w io.Writer) error

	// ImageExists reports whether the image is in local storage.
	ImageExists(ctx context.Context, image string) (bool, error)

	// PullImage pulls the image into local storage.
	PullImage(ctx context.Context, image string) error
}

// RuntimeEvent is something that happened to a container of one of the
// agent's pods: the pod's worker looks at its pod again.
type RuntimeEvent struct {
	// Action as the runtime names it: "start", "died", "oom", "remove",
	// "pause", "unpause", "restart".
	Action      string
	PodUID      string // LabelPodUID of the container
	ContainerID string
}

// EventWatcher is an optional ability of a Runtime: a stream of container
// events, so that the agent reacts to exits at once and re-lists the
// runtime only every node.Config.RuntimeResyncInterval instead of polling every
// pod every node.Config.SyncInterval (the kubelet's event-driven pod lifecycle).
type EventWatcher interface {
	// WatchEvents follows the events of containers that carry
	// LabelPodUID. It calls subscribed once the stream is live (every event
	// after that call is delivered), then onEvent for each event, in order,
	// from the calling goroutine; neither may block for long. Events may be
	// repeated. It blocks until ctx ends (nil) or the stream ends (an error
	// naming where the runtime was reached: it went away, or broke the
	// stream), and returns ErrEventsUnsupported at once when it cannot
	// watch.
	WatchEvents(ctx context.Context, subscribed func(), onEvent func(RuntimeEvent)) error
}

// Pinger is an optional ability of a Runtime: a cheap check that it
// answers. The agent pings every node.Config.RuntimeCheckInterval and reports
// the node NotReady (reason ContainerRuntimeDown, the error as message)
// while it fails, so the error names where the runtime was reached.
type Pinger interface {
	Ping(ctx context.Context) error
}
