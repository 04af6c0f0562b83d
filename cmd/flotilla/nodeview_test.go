package main

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flotilla-dev/flotilla/cluster/gossip"
	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/internal/testkit"
	"github.com/flotilla-dev/flotilla/reconciler/nodelifecycle"
)

// TestGossipViewIgnoresImpersonation: a gossip member speaks only for the
// node of its own name; one that announces another node's name leaving
// changes nothing the node lifecycle controller sees.
func TestGossipViewIgnoresImpersonation(t *testing.T) {
	v := &gossipView{members: map[string]nodelifecycle.Member{}, events: make(chan nodelifecycle.MemberEvent, 8)}
	now := time.Now()
	v.apply(gossip.Event{Type: gossip.Joined, Member: gossip.Member{Name: "node1", Meta: gossip.Meta{Role: gossip.RoleAgent, NodeName: "node1"}}}, now)
	v.apply(gossip.Event{Type: gossip.Left, Member: gossip.Member{Name: "liar", Meta: gossip.Meta{Role: gossip.RoleAgent, NodeName: "node1"}}}, now)
	ms := v.Members()
	if len(ms) != 1 || ms[0].Name != "node1" || !ms[0].Alive {
		t.Errorf("members after an impersonated leave: %+v, want node1 alive only", ms)
	}
}

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
