// Package nodeipam gives every Node a pod CIDR from the cluster CIDR: the
// first free subnet of the configured size, written once into the Node's
// spec.podCIDR and never changed afterwards, so a node keeps its pod
// addresses across restarts of the server and of the node. Next is the pure
// rule; Controller is the edge over the watch cache and the store.
package nodeipam

import (
	"errors"
	"fmt"
	"math/big"
	"net"

	corev1 "k8s.io/api/core/v1"
)

// ErrExhausted means every subnet of the cluster CIDR is taken.
var ErrExhausted = errors.New("no free pod CIDR left in the cluster CIDR")

// Next returns the first subnet of size /maskSize in cluster that no node
// in nodes holds (by spec.podCIDR), or ErrExhausted. Subnets that do not
// parse or lie outside cluster are ignored (they cannot collide).
func Next(cluster *net.IPNet, maskSize int, nodes []*corev1.Node) (*net.IPNet, error) {
	ones, bits := cluster.Mask.Size()
	if bits != 32 || maskSize < ones || maskSize > 30 {
		return nil, fmt.Errorf("pod CIDRs of /%d do not fit the IPv4 cluster CIDR %s", maskSize, cluster)
	}
	used := map[string]bool{}
	for _, n := range nodes {
		if _, c, err := net.ParseCIDR(n.Spec.PodCIDR); err == nil {
			used[c.String()] = true
		}
	}
	base := new(big.Int).SetBytes(cluster.IP.To4())
	step := new(big.Int).Lsh(big.NewInt(1), uint(32-maskSize))
	count := 1 << (maskSize - ones)
	for i := 0; i < count; i++ {
		ip := new(big.Int).Add(base, new(big.Int).Mul(big.NewInt(int64(i)), step)).FillBytes(make([]byte, 4))
		sub := &net.IPNet{IP: net.IP(ip), Mask: net.CIDRMask(maskSize, 32)}
		if !used[sub.String()] {
			return sub, nil
		}
	}
	return nil, fmt.Errorf("%w (%s, /%d each: %d nodes)", ErrExhausted, cluster, maskSize, count)
}
