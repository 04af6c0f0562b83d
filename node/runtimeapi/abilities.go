package runtimeapi

import (
	"context"
	"fmt"
	"io"
)

// The optional abilities of a Runtime and the types they share. The agent
// finds each by type assertion and does without when it is missing.

// Security is a container's security context as the runtime applies it:
// the pod's securityContext and the container's merged, the container's
// winning, as the kubelet merges them
// (pkg/securitycontext.DetermineEffectiveSecurityContext).
type Security struct {
	// User and Group run the container's process; nil keeps the image's.
	User, Group *int64
	// SupplementalGroups are added to the process's groups: the pod's
	// supplementalGroups and its fsGroup.
	SupplementalGroups []int64
	// ReadOnlyRootFilesystem mounts the image's filesystem read-only.
	ReadOnlyRootFilesystem bool
	// CapAdd and CapDrop change the runtime's default capabilities, in
	// Kubernetes' names ("NET_ADMIN", "ALL").
	CapAdd, CapDrop []string
	// NoNewPrivileges sets no_new_privs (allowPrivilegeEscalation: false).
	NoNewPrivileges bool
	// Privileged gives every capability and device and no confinement:
	// admission allows it only in privileged namespaces.
	Privileged bool
	// SeccompUnconfined runs without a seccomp filter; otherwise the
	// runtime's default profile (RuntimeDefault) applies, also when the
	// pod names none.
	SeccompUnconfined bool
}

// ImageUserReader is an optional ability of a Runtime: the user an image
// runs as (its config's User: "", "0", "1000", "1000:100", "nobody"),
// which runAsNonRoot and runAsGroup need. A runtime without it cannot
// verify runAsNonRoot: such containers are refused.
type ImageUserReader interface {
	ImageUser(ctx context.Context, image string) (string, error)
}

// RuntimeVersioner is an optional ability of a Runtime: its name and
// version as the kubelet reports them in nodeInfo.containerRuntimeVersion
// ("podman://4.9.5").
type RuntimeVersioner interface {
	RuntimeVersion(ctx context.Context) (string, error)
}

// Execer is an optional ability of a Runtime (found by type assertion): run
// a command in a container and return its exit code, for exec probes.
type Execer interface {
	Exec(ctx context.Context, containerID string, cmd []string) (int, error)
}

// ContainerStats is the resource usage of one running container, as a
// StatsReader measures it: cumulative counters and current gauges.
type ContainerStats struct {
	ContainerID string
	// PodUID, Namespace, Pod and Container come from the container's
	// labels (LabelPodUID …).
	PodUID, Namespace, Pod, Container string
	// CPUNanos is the CPU time the container used since it started.
	CPUNanos uint64
	// MemoryWorkingSetBytes is its memory in use, less inactive file
	// cache where the runtime tells them apart.
	MemoryWorkingSetBytes uint64
	// RxBytes and TxBytes are the bytes its network namespace received
	// and sent (the pod's, shared by its containers); 0 when unknown.
	RxBytes, TxBytes uint64
}

// StatsReader is an optional ability of a Runtime: the usage of every
// running container that carries LabelPodUID, in one call (the agent
// calls it every node.Config.StatsInterval from one goroutine). Containers
// without the labels are left out.
type StatsReader interface {
	ContainerStats(ctx context.Context) ([]ContainerStats, error)
}

// StreamIO is one exec or attach session's streams, as kubectl asked for
// them: Stdin, Stdout and Stderr are nil when not asked for; with TTY,
// Stderr is nil (a terminal has one output) and Resize carries the
// terminal's size changes.
type StreamIO struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	TTY            bool
	Resize         <-chan TerminalSize
}

// TerminalSize is a terminal's size in characters.
type TerminalSize struct{ Width, Height uint16 }

// Streamer is an optional ability of a Runtime: interactive sessions in a
// running container (kubectl exec and attach).
type Streamer interface {
	// ExecStream runs cmd in the container with io's streams. It returns
	// when the command has exited: nil for exit code 0, an ExitCodeError
	// otherwise.
	ExecStream(ctx context.Context, containerID string, cmd []string, io StreamIO) error
	// AttachStream attaches io to the container's main process until it
	// exits or ctx ends.
	AttachStream(ctx context.Context, containerID string, io StreamIO) error
}

// ExitCodeError is a command that exited with a non-zero code. It is
// k8s.io/utils/exec's ExitError, so the stream server reports the code to
// kubectl (which exits with it).
type ExitCodeError struct{ Code int }

func (e ExitCodeError) Error() string {
	return fmt.Sprintf("command terminated with exit code %d", e.Code)
}
func (e ExitCodeError) String() string  { return e.Error() }
func (e ExitCodeError) Exited() bool    { return true }
func (e ExitCodeError) ExitStatus() int { return e.Code }
