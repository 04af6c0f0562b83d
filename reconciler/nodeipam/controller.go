package nodeipam

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/reconciler/cache"
	"github.com/flotilla-dev/flotilla/reconciler/controller"
	"github.com/flotilla-dev/flotilla/schema"
)

// Defaults of the cluster's pod addressing.
const (
	DefaultClusterCIDR = "10.244.0.0/16"
	DefaultMaskSize    = 24
)

// Config is the cluster's pod addressing. Zero values mean the defaults.
type Config struct {
	// ClusterCIDR is the range nodes' pod CIDRs come from (default
	// DefaultClusterCIDR).
	ClusterCIDR *net.IPNet
	// MaskSize is the size of each node's pod CIDR (default
	// DefaultMaskSize).
	MaskSize int
}

// ReasonInvalidPodCIDR is the Stalled reason of a Node whose spec.podCIDR
// is not an IPv4 CIDR.
const ReasonInvalidPodCIDR = "InvalidPodCIDR"

// Controller assigns pod CIDRs to Nodes that have none. Keys are node names.
type Controller struct {
	d        controller.Deps
	cluster  *net.IPNet
	maskSize int
	nodes    *cache.Informer
	// mu serialises allocations, so that two nodes registering at once
	// never get the same subnet; each allocation re-lists from the store.
	mu sync.Mutex
}

var _ controller.Controller = (*Controller)(nil)

// New returns the controller. It enqueues every Node that is added or
// changed.
func New(d controller.Deps, cfg Config) *Controller {
	if cfg.ClusterCIDR == nil {
		_, cfg.ClusterCIDR, _ = net.ParseCIDR(DefaultClusterCIDR)
	}
	if cfg.MaskSize == 0 {
		cfg.MaskSize = DefaultMaskSize
	}
	c := &Controller{d: d, cluster: cfg.ClusterCIDR, maskSize: cfg.MaskSize, nodes: d.Cache.Informer("nodes")}
	self := func(obj schema.Object) { d.Queue.Add(obj.GetName()) }
	c.nodes.AddHandler(cache.Handler{OnAdd: self, OnUpdate: func(_, n schema.Object) { self(n) }})
	return c
}

// validCIDR says why a node's pod CIDR cannot be used ("" when it can).
func validCIDR(cidr string) string {
	ip, _, err := net.ParseCIDR(cidr)
	switch {
	case err != nil:
		return fmt.Sprintf("spec.podCIDR %q is not a CIDR", cidr)
	case ip.To4() == nil:
		return fmt.Sprintf("spec.podCIDR %q is not IPv4", cidr)
	}
	return ""
}

// Reconcile gives the node a pod CIDR if it has none; a pod CIDR that is
// not an IPv4 CIDR stalls the node (it is never changed once set).
func (c *Controller) Reconcile(ctx context.Context, name string) (controller.Result, error) {
	if o, ok := c.nodes.Get("", name); ok {
		if cidr := o.(*corev1.Node).Spec.PodCIDR; cidr != "" {
			if why := validCIDR(cidr); why != "" {
				return controller.Stalled(ReasonInvalidPodCIDR, why+": its agent cannot set up the pod network; delete the Node (flotilla delete node "+name+") so that it registers again and gets a new one"), nil
			}
			return controller.Done(), nil
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	obj, err := c.d.Store.Get(ctx, "nodes", "", name)
	if errors.Is(err, store.ErrNotFound) {
		return controller.Done(), nil
	} else if err != nil {
		return controller.Done(), err
	}
	node := obj.(*corev1.Node)
	if node.Spec.PodCIDR != "" {
		return controller.Done(), nil // the cache is behind: its event brings the node back
	}
	objs, _, err := c.d.Store.List(ctx, "nodes", store.ListOptions{})
	if err != nil {
		return controller.Done(), fmt.Errorf("list nodes: %w", err)
	}
	nodes := make([]*corev1.Node, len(objs))
	for i, o := range objs {
		nodes[i] = o.(*corev1.Node)
	}
	cidr, err := Next(c.cluster, c.maskSize, nodes)
	if err != nil {
		return controller.Waiting(fmt.Sprintf("a pod CIDR for node %s: %v", name, err), time.Minute), nil
	}
	node.Spec.PodCIDR = cidr.String()
	node.Spec.PodCIDRs = []string{cidr.String()}
	if _, err := c.d.Store.Update(ctx, node); err != nil {
		return controller.Done(), fmt.Errorf("assign pod CIDR %s to node %s: %w", cidr, name, err)
	}
	c.d.Log.Info("assigned pod CIDR", "node", name, "cidr", cidr.String())
	return controller.Done(), nil
}
