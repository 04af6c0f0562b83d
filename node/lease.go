package node

import (
	"context"
	"errors"
	"fmt"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flotilla-dev/flotilla/cluster/auth"
	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/schema"
)

// The node's heartbeat through the API, as the kubelet's: a Lease named
// after the node in kube-node-lease, renewed every LeaseRenewInterval and
// stale once LeaseDurationSeconds pass without a renewal (a node dies, its
// pods may be evicted 20 s later at the soonest, a gossip failure
// permitting 30 s). The
// server judges a node by it (with gossip): gossip alone, which any holder
// of the gossip key can speak, never gets a node's pods evicted.
const (
	LeaseNamespace       = auth.NodeLeaseNamespace
	LeaseDurationSeconds = 20
	LeaseRenewInterval   = 5 * time.Second
)

// leaseLoop renews the node's Lease until ctx ends; a failed renewal is
// tried again sooner.
func (a *Agent) leaseLoop(ctx context.Context) {
	for {
		wait := LeaseRenewInterval
		if err := a.renewLease(ctx); err != nil && ctx.Err() == nil {
			a.log.Warn("renewing the node lease failed", "err", err)
			wait = 2 * time.Second
		}
		select {
		case <-ctx.Done():
			return
		case <-a.clock.After(wait):
		}
	}
}

// renewLease creates the node's Lease or moves its renewTime to now.
func (a *Agent) renewLease(ctx context.Context) error {
	now := metav1.NewMicroTime(a.clock.Now())
	obj, err := a.cfg.Store.Get(ctx, "leases", LeaseNamespace, a.cfg.NodeName)
	if errors.Is(err, store.ErrNotFound) {
		holder, dur := a.cfg.NodeName, int32(LeaseDurationSeconds)
		l := &coordinationv1.Lease{
			TypeMeta:   metav1.TypeMeta{Kind: "Lease", APIVersion: "coordination.k8s.io/v1"},
			ObjectMeta: metav1.ObjectMeta{Name: a.cfg.NodeName, Namespace: LeaseNamespace},
			Spec: coordinationv1.LeaseSpec{HolderIdentity: &holder, LeaseDurationSeconds: &dur,
				AcquireTime: &now, RenewTime: &now},
		}
		// Owned by the Node: deleting the Node removes its Lease.
		if n, err := a.cfg.Store.Get(ctx, "nodes", "", a.cfg.NodeName); err == nil {
			l.OwnerReferences = []metav1.OwnerReference{{APIVersion: "v1", Kind: "Node", Name: n.GetName(), UID: n.GetUID()}}
		}
		if _, err := a.cfg.Store.Create(ctx, l); err != nil && !errors.Is(err, store.ErrExists) {
			return fmt.Errorf("create lease %s/%s: %w", LeaseNamespace, a.cfg.NodeName, err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("read lease %s/%s: %w", LeaseNamespace, a.cfg.NodeName, err)
	}
	l, ok := obj.(*coordinationv1.Lease)
	if !ok {
		return fmt.Errorf("lease %s/%s: unexpected %T", LeaseNamespace, a.cfg.NodeName, obj)
	}
	l = schema.Copy(l)
	holder, dur := a.cfg.NodeName, int32(LeaseDurationSeconds)
	l.Spec.HolderIdentity, l.Spec.LeaseDurationSeconds, l.Spec.RenewTime = &holder, &dur, &now
	if _, err := a.cfg.Store.Update(ctx, l); err != nil {
		return fmt.Errorf("renew lease %s/%s: %w", LeaseNamespace, a.cfg.NodeName, err)
	}
	return nil
}

// LeaseRenewTime is when node's Lease was last renewed (zero without one).
func LeaseRenewTime(l *coordinationv1.Lease) time.Time {
	if l == nil || l.Spec.RenewTime == nil {
		return time.Time{}
	}
	return l.Spec.RenewTime.Time
}
