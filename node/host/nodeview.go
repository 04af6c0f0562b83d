package host

import (
	"context"
	"log/slog"
	"net"
	"sort"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/flotilla-dev/flotilla/cluster/gossip"
	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/netfabric"
)

// nodeView is what an agent knows of the other nodes from the API: their
// names, the pod CIDRs the server allocated and the addresses they
// registered. Gossip is only a hint of who is alive: any holder of the
// gossip key can announce anything, so the overlay's routes and the
// election of load balancer holders take their facts from here. The last
// view is kept while the API is away.
type nodeView struct {
	st  store.Interface
	log *slog.Logger

	mu      sync.Mutex
	nodes   map[string]*corev1.Node
	listed  bool
	changed chan struct{} // poked (never blocks) after every change
}

func newNodeView(st store.Interface, log *slog.Logger) *nodeView {
	return &nodeView{st: st, log: log, nodes: map[string]*corev1.Node{}, changed: make(chan struct{}, 1)}
}

// run lists and watches the Nodes until ctx ends, listing again (with
// back-off) whenever the watch ends or fails.
func (v *nodeView) run(ctx context.Context) {
	retry := time.Second
	for ctx.Err() == nil {
		if err := v.listAndWatch(ctx); err != nil && ctx.Err() == nil {
			v.log.Warn("node list/watch failed; keeping the last view", "err", err, "retry", retry)
			select {
			case <-ctx.Done():
			case <-time.After(retry):
			}
			retry = min(2*retry, 30*time.Second)
			continue
		}
		retry = time.Second
	}
}

func (v *nodeView) listAndWatch(ctx context.Context) error {
	objs, rev, err := v.st.List(ctx, "nodes", store.ListOptions{})
	if err != nil {
		return err
	}
	fresh := map[string]*corev1.Node{}
	for _, o := range objs {
		if n, ok := o.(*corev1.Node); ok {
			fresh[n.Name] = n
		}
	}
	v.mu.Lock()
	v.nodes, v.listed = fresh, true
	v.mu.Unlock()
	v.poke()
	ch, err := v.st.Watch(ctx, "nodes", store.ListOptions{}, rev)
	if err != nil {
		return err
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-ch:
			if !ok {
				return nil
			}
			n, isNode := ev.Object.(*corev1.Node)
			if !isNode {
				continue
			}
			v.mu.Lock()
			if ev.Type == store.Deleted {
				delete(v.nodes, n.Name)
			} else {
				v.nodes[n.Name] = n
			}
			v.mu.Unlock()
			v.poke()
		}
	}
}

func (v *nodeView) poke() {
	select {
	case v.changed <- struct{}{}:
	default:
	}
}

// registered reports whether a Node called name exists.
func (v *nodeView) registered(name string) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	_, ok := v.nodes[name]
	return ok
}

// peers are the overlay peers: every Node with a pod CIDR and an internal
// address, the VTEP MAC following from the pod CIDR. ok is false until the
// first list.
func (v *nodeView) peers() (peers []netfabric.Peer, ok bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, n := range v.nodes {
		_, cidr, err := net.ParseCIDR(n.Spec.PodCIDR)
		if err != nil {
			continue
		}
		var ip net.IP
		for _, a := range n.Status.Addresses {
			if a.Type == corev1.NodeInternalIP {
				ip = net.ParseIP(a.Address)
			}
		}
		if ip == nil || ip.To4() == nil {
			continue
		}
		peers = append(peers, netfabric.Peer{Node: n.Name, UnderlayIP: ip, PodCIDR: cidr})
	}
	sort.Slice(peers, func(i, j int) bool { return peers[i].Node < peers[j].Node })
	return peers, v.listed
}

// peerSetter is the overlay's peer table (netfabric.Fabric's SetPeers).
type peerSetter interface {
	SetPeers(ctx context.Context, peers []netfabric.Peer) error
}

// followPeers programs the overlay from the Nodes the API holds, on every
// change. While the API is away the last routes stay: the overlay keeps
// working, only nodes that join meanwhile wait for it.
func followPeers(ctx context.Context, view *nodeView, fabric peerSetter, log *slog.Logger) {
	for {
		if peers, ok := view.peers(); ok {
			if err := fabric.SetPeers(ctx, peers); err != nil {
				log.Warn("programming the overlay", "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-view.changed:
		}
	}
}

// aliveNodes are the names of the agents gossip says are alive and that
// are registered Nodes (a gossip member's word alone counts for nothing),
// self included.
func aliveNodes(self string, members []gossip.Member, view *nodeView) []string {
	names := []string{self}
	for _, m := range members {
		if m.Meta.Role == gossip.RoleAgent && m.Name == m.Meta.NodeName && m.Name != self && view.registered(m.Name) {
			names = append(names, m.Name)
		}
	}
	return names
}
