package node

import (
	"github.com/flotilla-dev/flotilla/node/podnet"
	"github.com/flotilla-dev/flotilla/node/runtimeapi"
)

// The agent's seams live in contract packages of their own, so that their
// implementations (node/podman, netfabric) import only the contract:
// node/runtimeapi for the container runtime, node/podnet for the pod
// network. The names below are plain aliases, for the agent's own code.

type (
	Runtime            = runtimeapi.Runtime
	PodSandbox         = runtimeapi.PodSandbox
	DNSConfig          = runtimeapi.DNSConfig
	ContainerSpec      = runtimeapi.ContainerSpec
	Mount              = runtimeapi.Mount
	Security           = runtimeapi.Security
	PodSummary         = runtimeapi.PodSummary
	PodStatus          = runtimeapi.PodStatus
	ContainerStatus    = runtimeapi.ContainerStatus
	ContainerStateKind = runtimeapi.ContainerStateKind
	LogRequest         = runtimeapi.LogRequest
	RuntimeEvent       = runtimeapi.RuntimeEvent
	EventWatcher       = runtimeapi.EventWatcher
	Pinger             = runtimeapi.Pinger
	Execer             = runtimeapi.Execer
	RuntimeVersioner   = runtimeapi.RuntimeVersioner
	ImageUserReader    = runtimeapi.ImageUserReader
	ContainerStats     = runtimeapi.ContainerStats
	StatsReader        = runtimeapi.StatsReader
	StreamIO           = runtimeapi.StreamIO
	TerminalSize       = runtimeapi.TerminalSize
	Streamer           = runtimeapi.Streamer
	ExitCodeError      = runtimeapi.ExitCodeError

	Network    = podnet.Network
	PodRef     = podnet.PodRef
	PodNetwork = podnet.PodNetwork
	PodDialer  = podnet.PodDialer
)

const (
	LabelPodUID       = runtimeapi.LabelPodUID
	LabelPodNamespace = runtimeapi.LabelPodNamespace
	LabelPodName      = runtimeapi.LabelPodName
	LabelContainer    = runtimeapi.LabelContainer

	ContainerCreated = runtimeapi.ContainerCreated
	ContainerRunning = runtimeapi.ContainerRunning
	ContainerExited  = runtimeapi.ContainerExited
	ContainerUnknown = runtimeapi.ContainerUnknown
)

var (
	ErrNotFound          = runtimeapi.ErrNotFound
	ErrImageNotPresent   = runtimeapi.ErrImageNotPresent
	ErrTimeout           = runtimeapi.ErrTimeout
	ErrEventsUnsupported = runtimeapi.ErrEventsUnsupported
)
