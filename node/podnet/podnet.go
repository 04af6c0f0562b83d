// Package podnet is the contract between the node agent and the pod
// network: the Network that gives each pod a network namespace with an
// address, and its optional abilities. Package node uses it; netfabric
// implements it (node.FakeNetwork is the test double). Neither imports the
// other.
package podnet

import (
	"context"
	"net"
)

// PodRef names the pod a network is for.
type PodRef struct {
	UID       string
	Namespace string
	Name      string
}

// PodNetwork is a pod's network as the agent hands it to the runtime.
type PodNetwork struct {
	// NetNSPath is the pod's network namespace ("/run/netns/flo-…"); the
	// runtime joins every container of the pod to it.
	NetNSPath string
	// IP is the pod's address, from the node's pod CIDR.
	IP net.IP
}

// Network gives each pod a network namespace with an address (netfabric
// implements it). The agent calls it from its pod workers, so
// implementations must be safe for concurrent use.
type Network interface {
	// Setup creates the pod's namespace, attaches and addresses it, and
	// returns it. It is idempotent: called again for the same UID (also after
	// an agent restart) it returns the same namespace and IP.
	Setup(ctx context.Context, pod PodRef) (PodNetwork, error)
	// Teardown removes the pod's namespace and frees its address. Tearing
	// down an unknown UID is not an error.
	Teardown(ctx context.Context, podUID string) error
	// Pods lists the UIDs that have a network now, so the agent can tear down
	// the ones whose pods are gone.
	Pods(ctx context.Context) ([]string, error)
}

// PodDialer is an optional ability of a Network: a TCP connection to a
// port of the pod's own network namespace, the way the kubelet's
// port-forward connects to localhost inside the pod (so a port bound to
// 127.0.0.1 in the pod is reachable too).
type PodDialer interface {
	DialPod(ctx context.Context, netnsPath string, port int32) (net.Conn, error)
}
