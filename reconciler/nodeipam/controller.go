package nodeipam

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"

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

// Controller assigns pod CIDRs to Nodes that have none. Keys are node names.
type Controller struct {
	store    store.Interface
	log      *slog.Logger
	cluster  *net.IPNet
	maskSize int
	nodes    *cache.Informer
	// mu serialises allocations, so that two nodes registering at once
	// never get the same subnet; each allocation re-lists from the store.
	mu sync.Mutex
}

var _ controller.Controller = (*Controller)(nil)

// New returns the controller; cluster nil and maskSize 0 mean the defaults.
func New(st store.Interface, cluster *net.IPNet, maskSize int, log *slog.Logger) *Controller {
	if cluster == nil {
		_, cluster, _ = net.ParseCIDR(DefaultClusterCIDR)
	}
	if maskSize == 0 {
		maskSize = DefaultMaskSize
	}
	return &Controller{store: st, cluster: cluster, maskSize: maskSize, log: log.With("controller", "nodeipam")}
}

// Name is "nodeipam".
func (c *Controller) Name() string { return "nodeipam" }

// Setup enqueues every Node that is added or changed without a pod CIDR.
func (c *Controller) Setup(ca *cache.Cache, q controller.Queue) {
	c.nodes = ca.Informer("nodes")
	enqueue := func(obj schema.Object) {
		if n, ok := obj.(*corev1.Node); ok && n.Spec.PodCIDR == "" {
			q.Add(n.Name)
		}
	}
	c.nodes.AddHandler(cache.Handler{OnAdd: enqueue, OnUpdate: func(_, n schema.Object) { enqueue(n) }})
}

// Reconcile gives the node a pod CIDR if it has none.
func (c *Controller) Reconcile(ctx context.Context, name string) (controller.Result, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	obj, err := c.store.Get(ctx, "nodes", "", name)
	if errors.Is(err, store.ErrNotFound) {
		return controller.Result{}, nil
	} else if err != nil {
		return controller.Result{}, err
	}
	node := obj.(*corev1.Node)
	if node.Spec.PodCIDR != "" {
		return controller.Result{}, nil
	}
	objs, _, err := c.store.List(ctx, "nodes", store.ListOptions{})
	if err != nil {
		return controller.Result{}, fmt.Errorf("list nodes: %w", err)
	}
	nodes := make([]*corev1.Node, len(objs))
	for i, o := range objs {
		nodes[i] = o.(*corev1.Node)
	}
	cidr, err := Next(c.cluster, c.maskSize, nodes)
	if err != nil {
		return controller.Result{}, fmt.Errorf("node %s: %w", name, err)
	}
	node.Spec.PodCIDR = cidr.String()
	node.Spec.PodCIDRs = []string{cidr.String()}
	if _, err := c.store.Update(ctx, node); err != nil {
		return controller.Result{}, fmt.Errorf("assign pod CIDR %s to node %s: %w", cidr, name, err)
	}
	c.log.Info("assigned pod CIDR", "node", name, "cidr", cidr.String())
	return controller.Result{}, nil
}
