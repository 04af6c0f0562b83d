package gossip

import (
	"encoding/json"
	"fmt"
	"net"
	"net/netip"

	"github.com/hashicorp/memberlist"
)

// Role says what a member does in the cluster.
type Role string

// The roles a member can have.
const (
	RoleServer Role = "server"
	RoleAgent  Role = "agent"
)

// MetaMaxSize is the largest encoded Meta that gossip can carry: memberlist's
// own limit on node metadata.
const MetaMaxSize = memberlist.MetaMaxSize

// Meta is what every member tells the others about itself. It travels with
// each alive message, so it stays small: encoded, it must fit MetaMaxSize
// (512 bytes); New and UpdateMeta refuse a bigger one.
type Meta struct {
	// Role is RoleServer or RoleAgent. Required.
	Role Role
	// NodeName is the member's node name. Empty means Config.NodeName; any
	// other value must equal it.
	NodeName string
	// APIAddr is the URL of a server's API ("https://10.0.0.1:6443"); ""
	// for agents.
	APIAddr string
	// TunnelIP is the underlay address that VXLAN packets to this node's
	// pods are sent to; "" until known.
	TunnelIP string
	// PodCIDR is the node's pod network ("10.244.3.0/24"); "" until the
	// server has given it one.
	PodCIDR string
	// VTEPMAC is the MAC address of the node's VXLAN device; "" until the
	// device exists.
	VTEPMAC string
}

// metaV1 is the wire form of Meta: JSON with one-letter keys, so that a full
// Meta takes about 200 bytes. Unknown keys are ignored when decoding, so a
// newer member can add fields without breaking older ones.
type metaV1 struct {
	V int    `json:"v"`
	R Role   `json:"r"`
	N string `json:"n"`
	A string `json:"a,omitempty"`
	T string `json:"t,omitempty"`
	C string `json:"c,omitempty"`
	M string `json:"m,omitempty"`
	// L marks a member that is leaving on purpose (see Membership.Leave).
	L bool `json:"l,omitempty"`
}

// leavingFlagSize is what L adds to an encoded Meta: encodeMeta keeps room
// for it so that Leave can never overflow MetaMaxSize.
const leavingFlagSize = len(`,"l":true`)

const metaVersion = 1

// Validate checks every field of m that is set.
func (m Meta) Validate() error {
	switch m.Role {
	case RoleServer, RoleAgent:
	case "":
		return fmt.Errorf("gossip: Meta.Role is required (%q or %q)", RoleServer, RoleAgent)
	default:
		return fmt.Errorf("gossip: Meta.Role %q is not %q or %q", m.Role, RoleServer, RoleAgent)
	}
	if m.TunnelIP != "" {
		if _, err := netip.ParseAddr(m.TunnelIP); err != nil {
			return fmt.Errorf("gossip: Meta.TunnelIP %q is not an IP address", m.TunnelIP)
		}
	}
	if m.PodCIDR != "" {
		if _, err := netip.ParsePrefix(m.PodCIDR); err != nil {
			return fmt.Errorf("gossip: Meta.PodCIDR %q is not a CIDR like 10.244.1.0/24", m.PodCIDR)
		}
	}
	if m.VTEPMAC != "" {
		if _, err := net.ParseMAC(m.VTEPMAC); err != nil {
			return fmt.Errorf("gossip: Meta.VTEPMAC %q is not a MAC address", m.VTEPMAC)
		}
	}
	return nil
}

// encodeMeta validates m and encodes it for memberlist, with the leaving
// flag when leaving.
func encodeMeta(m Meta, leaving bool) ([]byte, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	b, err := json.Marshal(metaV1{V: metaVersion, R: m.Role, N: m.NodeName, A: m.APIAddr, T: m.TunnelIP, C: m.PodCIDR, M: m.VTEPMAC, L: leaving})
	if err != nil {
		return nil, fmt.Errorf("gossip: encoding node metadata: %w", err)
	}
	size := len(b)
	if !leaving {
		size += leavingFlagSize
	}
	if size > MetaMaxSize {
		return nil, fmt.Errorf("gossip: node metadata is %d bytes encoded, over the gossip limit of %d bytes (is APIAddr very long?)", size, MetaMaxSize)
	}
	return b, nil
}

// decodeMeta decodes what encodeMeta made. It does not validate: a member's
// metadata is reported as it was received.
func decodeMeta(b []byte) (m Meta, leaving bool, err error) {
	if len(b) == 0 {
		return Meta{}, false, fmt.Errorf("gossip: member sent no metadata")
	}
	var w metaV1
	if err := json.Unmarshal(b, &w); err != nil {
		return Meta{}, false, fmt.Errorf("gossip: decoding member metadata: %w", err)
	}
	if w.V < metaVersion {
		return Meta{}, false, fmt.Errorf("gossip: member metadata has no version (is it a Flotilla member?)")
	}
	return Meta{Role: w.R, NodeName: w.N, APIAddr: w.A, TunnelIP: w.T, PodCIDR: w.C, VTEPMAC: w.M}, w.L, nil
}
