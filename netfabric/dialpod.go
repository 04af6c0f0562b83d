package netfabric

import (
	"context"
	"fmt"
	"net"
	"strconv"

	"github.com/flotilla-dev/flotilla/node/podnet"
)

var _ podnet.PodDialer = (*Fabric)(nil)

// DialPod implements podnet.PodDialer: a TCP connection to localhost:port
// inside the pod's network namespace (the socket is made there, then used
// from any thread), as the kubelet's port-forward does.
func (f *Fabric) DialPod(ctx context.Context, netnsPath string, port int32) (net.Conn, error) {
	if port <= 0 || port > 65535 {
		return nil, fmt.Errorf("port %d is not a TCP port", port)
	}
	var conn net.Conn
	err := InNetNS(netnsPath, func() error {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port))))
		conn = c
		return err
	})
	if err != nil {
		return nil, err
	}
	return conn, nil
}
