package gossip

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"syscall"
)

// Sentinel errors that callers branch on (errors.Is). Both are fatal for a
// joining member: retrying with the same configuration cannot succeed.
var (
	// ErrKeyMismatch: the contacted member uses another cluster key (or
	// none). The member was not joined and the other never heard of it.
	ErrKeyMismatch = errors.New("the cluster key does not match")
	// ErrNameTaken: a live member of the cluster already has this node
	// name; see NameTakenError for the addresses.
	ErrNameTaken = errors.New("node name already in the cluster")
	// ErrShutdown: the Membership was shut down.
	ErrShutdown = errors.New("gossip: membership is shut down")
)

// NameTakenError says that a node name is held by a live member at Holder
// while another member, at Claimant, tried to join with it. It matches
// ErrNameTaken.
type NameTakenError struct {
	Name     string
	Holder   netip.AddrPort
	Claimant netip.AddrPort
}

func (e *NameTakenError) Error() string {
	return fmt.Sprintf("node name %q is already in the cluster, held by the member at %s; give the member at %s another node name",
		e.Name, e.Holder, e.Claimant)
}

// Is makes errors.Is(err, ErrNameTaken) true.
func (e *NameTakenError) Is(target error) bool { return target == ErrNameTaken }

// joinError explains why joining through addr failed. memberlist reports
// errors as text only, so the known causes are recognised by their message.
func joinError(addr string, err error) error {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "no installed keys could decrypt"):
		// The peer could not decrypt our state and answered with an
		// error encrypted with its key, which we could not decrypt.
		return fmt.Errorf("gossip: cannot join %s: %w (the member there uses another key)", addr, ErrKeyMismatch)
	case strings.Contains(msg, "encryption is configured but remote state is not encrypted"),
		strings.Contains(msg, "remote state is encrypted and encryption is not configured"):
		return fmt.Errorf("gossip: cannot join %s: %w (the member there uses no key)", addr, ErrKeyMismatch)
	case errors.Is(err, syscall.ECONNREFUSED), strings.Contains(msg, "connection refused"):
		return fmt.Errorf("gossip: cannot join %s: nothing listens there (is the member running, and is this its gossip port?): %w", addr, err)
	case strings.Contains(msg, "i/o timeout"):
		return fmt.Errorf("gossip: cannot join %s: no answer (is the address right, and are TCP and UDP open to it?): %w", addr, err)
	}
	return fmt.Errorf("gossip: cannot join %s: %w", addr, err)
}
