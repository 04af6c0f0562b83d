package node

import (
	"context"
	"fmt"
	"net"
	"sort"
	"sync"

	"github.com/flotilla-dev/flotilla/node/podnet"
)

// FakeNetwork is an in-memory Network for tests: each pod gets the next
// address of 10.244.0.0/24 (or IP, when set, for every pod) and no real
// namespace.
type FakeNetwork struct {
	// IP, when set, is given to every pod (tests use 127.0.0.1 so probes
	// reach a local server).
	IP net.IP

	mu   sync.Mutex
	pods map[string]podnet.PodNetwork
	next int
	// TornDown counts Teardown calls per UID.
	torn map[string]int
}

var _ podnet.Network = (*FakeNetwork)(nil)

// NewFakeNetwork returns an empty fake network.
func NewFakeNetwork() *FakeNetwork {
	return &FakeNetwork{pods: map[string]podnet.PodNetwork{}, torn: map[string]int{}}
}

// Setup implements Network.
func (f *FakeNetwork) Setup(ctx context.Context, pod podnet.PodRef) (podnet.PodNetwork, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if n, ok := f.pods[pod.UID]; ok {
		return n, nil
	}
	f.next++
	ip := f.IP
	if ip == nil {
		ip = net.IPv4(10, 244, 0, byte(f.next+1))
	}
	n := podnet.PodNetwork{NetNSPath: fmt.Sprintf("/run/netns/fake-%s", pod.UID), IP: ip}
	f.pods[pod.UID] = n
	return n, nil
}

// Teardown implements Network.
func (f *FakeNetwork) Teardown(ctx context.Context, podUID string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.pods, podUID)
	f.torn[podUID]++
	return nil
}

// Pods implements Network.
func (f *FakeNetwork) Pods(ctx context.Context) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for uid := range f.pods {
		out = append(out, uid)
	}
	sort.Strings(out)
	return out, nil
}

// TornDown reports how often the UID's network was torn down.
func (f *FakeNetwork) TornDown(uid string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.torn[uid]
}
