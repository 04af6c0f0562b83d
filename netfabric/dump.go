package netfabric

import (
	"errors"

	"github.com/vishvananda/netlink"
)

// dumpAttempts is how often Dump retries a kernel dump that changed under
// it before giving up.
const dumpAttempts = 10

// Dump runs a netlink dump (LinkList, AddrList, RouteList, NeighList…) and
// retries it while the kernel reports it interrupted: netlink answers
// ErrDumpInterrupted, with partial results, when the table changed during
// the dump — routine on a host where other tools, or other nodes of a lab,
// create and delete links and namespaces at the same time. Acting on a
// partial list would miss links to delete or re-add entries that exist.
func Dump[T any](list func() (T, error)) (T, error) {
	var v T
	var err error
	for range dumpAttempts {
		v, err = list()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return v, err
		}
	}
	return v, err
}
