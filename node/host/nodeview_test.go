package host

import (
	"context"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flotilla-dev/flotilla/cluster/gossip"
	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/internal/testkit"
	"github.com/flotilla-dev/flotilla/netfabric"
)

// TestNodeViewPeersFromNodes: the overlay's peers are the Nodes the API
// holds — the pod CIDR the server allocated, the address the node
// registered — whatever gossip members announce; a Node without both is
// left out.
func TestNodeViewPeersFromNodes(t *testing.T) {
	st := store.MemoryFor(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	node := func(name, cidr, ip string) *corev1.Node {
		n := &corev1.Node{TypeMeta: metav1.TypeMeta{Kind: "Node", APIVersion: "v1"}, ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: corev1.NodeSpec{PodCIDR: cidr}}
		if ip != "" {
			n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip}}
		}
		return n
	}
	for _, n := range []*corev1.Node{node("n1", "10.244.1.0/24", "192.0.2.11"), node("n2", "10.244.2.0/24", "192.0.2.12"),
		node("n3", "", "192.0.2.13"), node("n4", "10.244.4.0/24", "")} {
		if _, err := st.Create(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	v := newNodeView(st, slog.New(slog.NewTextHandler(io.Discard, nil)))
	go v.run(ctx)
	testkit.EventuallyTrue(t, "the view lists the Nodes", 0, func() bool { _, ok := v.peers(); return ok })
	peers, _ := v.peers()
	if len(peers) != 2 || peers[0].Node != "n1" || peers[0].PodCIDR.String() != "10.244.1.0/24" || peers[0].UnderlayIP.String() != "192.0.2.11" ||
		peers[1].Node != "n2" || peers[1].PodCIDR.String() != "10.244.2.0/24" {
		t.Errorf("peers %+v, want n1 and n2 as stored", peers)
	}
	if !v.registered("n3") || v.registered("liar") {
		t.Error("registered: n3 should be, liar should not")
	}
	if _, err := st.Delete(ctx, "nodes", "", "n2", store.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	testkit.EventuallyTrue(t, "a deleted Node leaves the peers", 0, func() bool { p, _ := v.peers(); return len(p) == 1 })
}

// TestAliveNodes: the nodes that may hold load balancer addresses are
// this one and the agents gossip says are alive that are registered
// Nodes; servers, unregistered members and members speaking for another
// node's name count for nothing.
func TestAliveNodes(t *testing.T) {
	v := newNodeView(store.MemoryFor(t), slog.New(slog.DiscardHandler))
	for _, name := range []string{"self", "n2", "n3", "n4"} {
		v.nodes[name] = &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
	}
	agent := func(name, nodeName string) gossip.Member {
		return gossip.Member{Name: name, Meta: gossip.Meta{Role: gossip.RoleAgent, NodeName: nodeName}}
	}
	members := []gossip.Member{
		agent("self", "self"),
		agent("n2", "n2"),
		agent("stranger", "stranger"), // not a Node
		agent("n4", "n3"),             // speaks for another name
		{Name: "server", Meta: gossip.Meta{Role: gossip.RoleServer, NodeName: "server"}},
	}
	got := aliveNodes("self", members, v)
	if !slices.Equal(got, []string{"self", "n2"}) {
		t.Errorf("alive %q, want [self n2]", got)
	}
	if got := aliveNodes("self", nil, v); !slices.Equal(got, []string{"self"}) {
		t.Errorf("alive without gossip %q, want [self]", got)
	}
	sp := &servicePlane{nodeName: "self"}
	if got := sp.alive(); !slices.Equal(got, []string{"self"}) {
		t.Errorf("a one-node service plane's alive %q, want [self]", got)
	}
}

// peerRecorder is the overlay's peer table, recorded.
type peerRecorder struct {
	mu    sync.Mutex
	calls [][]netfabric.Peer
}

func (r *peerRecorder) SetPeers(_ context.Context, peers []netfabric.Peer) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, peers)
	return nil
}

func (r *peerRecorder) last() (names []string, calls int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.calls) == 0 {
		return nil, 0
	}
	for _, p := range r.calls[len(r.calls)-1] {
		names = append(names, p.Node)
	}
	return names, len(r.calls)
}

// TestFollowPeers: the overlay is programmed only once the Nodes are
// listed, and again whenever a Node with a pod CIDR and an address comes
// or goes.
func TestFollowPeers(t *testing.T) {
	st := store.MemoryFor(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	mk := func(name, cidr, ip string) *corev1.Node {
		return &corev1.Node{TypeMeta: metav1.TypeMeta{Kind: "Node", APIVersion: "v1"}, ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec:   corev1.NodeSpec{PodCIDR: cidr},
			Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip}}}}
	}
	if _, err := st.Create(ctx, mk("n1", "10.244.1.0/24", "192.0.2.11")); err != nil {
		t.Fatal(err)
	}
	v := newNodeView(st, slog.New(slog.DiscardHandler))
	rec := &peerRecorder{}
	done := make(chan struct{})
	go func() { defer close(done); followPeers(ctx, v, rec, slog.New(slog.DiscardHandler)) }()
	if _, calls := rec.last(); calls != 0 {
		t.Fatalf("the overlay was programmed %d times before the Nodes were listed", calls)
	}
	go v.run(ctx)
	testkit.EventuallyTrue(t, "the overlay has n1", 0, func() bool { n, _ := rec.last(); return slices.Equal(n, []string{"n1"}) })
	if _, err := st.Create(ctx, mk("n2", "10.244.2.0/24", "192.0.2.12")); err != nil {
		t.Fatal(err)
	}
	testkit.EventuallyTrue(t, "the overlay has n1 and n2", 0, func() bool {
		n, _ := rec.last()
		return slices.Equal(n, []string{"n1", "n2"})
	})
	if _, err := st.Delete(ctx, "nodes", "", "n1", store.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	testkit.EventuallyTrue(t, "n1 leaves the overlay", 0, func() bool { n, _ := rec.last(); return slices.Equal(n, []string{"n2"}) })
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("followPeers did not return when its context ended")
	}
}
