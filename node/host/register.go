package host

import (
	"context"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/node"
)

// Register makes sure the Node object exists before the agent starts,
// with podCIDR when the node has its own ("" leaves the choice to the
// server's nodeipam controller). An existing Node keeps its pod CIDR.
func Register(ctx context.Context, st store.Interface, name, podCIDR string) error {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: node.NodeLabels(name)}}
	if podCIDR != "" {
		n.Spec = corev1.NodeSpec{PodCIDR: podCIDR, PodCIDRs: []string{podCIDR}}
	}
	if _, err := st.Create(ctx, n); err != nil && !errors.Is(err, store.ErrExists) {
		return fmt.Errorf("register node %s: %w", name, err)
	}
	return nil
}

// podCIDRPoll is how often WaitPodCIDR reads the Node again.
const podCIDRPoll = 500 * time.Millisecond

// WaitPodCIDR waits until the server has given the Node a pod CIDR, and
// returns it. It tells the user once, through say, when it has to wait.
func WaitPodCIDR(ctx context.Context, st store.Interface, name string, say func(string, ...any)) (string, error) {
	told := false
	for {
		obj, err := st.Get(ctx, "nodes", "", name)
		if err == nil {
			if cidr := obj.(*corev1.Node).Spec.PodCIDR; cidr != "" {
				return cidr, nil
			}
		}
		if !told {
			say("waiting for the server to give node %s a pod CIDR ...", name)
			told = true
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(podCIDRPoll):
		}
	}
}
