package gossip

import (
	"fmt"
	"log"
	"log/slog"
	"net/netip"
	"regexp"
	"time"

	"github.com/hashicorp/memberlist"
)

// DefaultPort is the TCP and UDP port gossip binds when Config.BindPort is 0.
const DefaultPort = 7946

// AnyPort, as Config.BindPort, lets the kernel pick a free port (tests, or
// several members on one host). Local().Addr tells which one was picked.
const AnyPort = -1

// KeySize is the length of the cluster key, in bytes (AES-256-GCM).
const KeySize = 32

// Failure-detection tuning, applied on top of memberlist.DefaultLANConfig.
//
// Target: a killed node is declared Failed by the others within 5 s on a LAN.
// memberlist (SWIM + Lifeguard) declares a node dead after
//
//	time to be probed + one probe interval + the suspicion timeout
//
// Every member probes one peer per ProbeInterval, round-robin; a peer that
// does not ack within ProbeTimeout is probed indirectly through other members
// and over TCP until the end of that interval, then suspected. The suspicion
// timeout is SuspicionMult × max(1, log10 N) × ProbeInterval (1.5 s here for
// up to 10 members), shortened from SuspicionMaxTimeoutMult times that down
// to it as independent confirmations arrive (SuspicionMult-2 = 1 is expected
// from 3 members up; with 2 members none is, and the short timeout applies
// at once).
// Expected detection: about 2–4 s for 2 to 10 members; measured over
// loopback with BenchmarkFailureDetection, 2.4–2.9 s for 3 and 5 members.
// Without any confirmation (every other survivor unable to probe) the bound
// is about 1 s + 6 s, over the target.
//
// The trade-off: shorter timeouts mean more false suspicions of a healthy
// node that is briefly starved (CPU, GC pause, a lossy link). Lifeguard's
// awareness (a member that misses its own acks slows its probing, up to 8×)
// and the refutation of suspicions by the suspected member keep that
// rare, but a node stalled for more than about 2 s will be seen Failed and
// then Joined again. Traffic grows too: 2 probes/s and 10 gossip rounds/s
// per member, each a UDP packet of a few hundred bytes — negligible for the
// small clusters Flotilla targets (tens of nodes).
const (
	// ProbeInterval: memberlist's LAN default is 1 s.
	ProbeInterval = 500 * time.Millisecond
	// ProbeTimeout: LAN RTTs are well under 1 ms; 200 ms leaves room for a
	// busy host before falling back to indirect probes (default 500 ms).
	ProbeTimeout = 200 * time.Millisecond
	// SuspicionMult: default 4; 3 keeps the suspicion at 1.5 s.
	SuspicionMult = 3
	// SuspicionMaxTimeoutMult: default 6; 4 bounds an unconfirmed
	// suspicion to 6 s.
	SuspicionMaxTimeoutMult = 4
	// GossipInterval: default 200 ms; 100 ms spreads a death (and meta
	// updates) to every member in a few hundred milliseconds.
	GossipInterval = 100 * time.Millisecond
	// PushPullInterval: default 30 s; 15 s heals partitions sooner, cheap
	// with tens of members.
	PushPullInterval = 15 * time.Second
)

// Config configures one member. Zero values mean the defaults named below.
type Config struct {
	// NodeName is this member's unique name in the cluster (a DNS subdomain:
	// lowercase letters, digits, '-' and '.'). Required. A second member
	// with the same name is refused while the first is alive.
	NodeName string
	// BindAddr is the address gossip listens on (TCP and UDP). Default
	// "0.0.0.0", every interface.
	BindAddr string
	// BindPort is the port gossip listens on. Default DefaultPort (7946);
	// AnyPort picks a free one.
	BindPort int
	// AdvertiseAddr is the IP the other members reach this one at. Default:
	// BindAddr when it is a specific address, else the first private IP of
	// this host.
	AdvertiseAddr string
	// Key is the 32-byte cluster key (see join.NewGossipKey) that encrypts
	// and authenticates every gossip message. Required: a member with another
	// key can neither join nor be heard.
	Key []byte
	// Meta is what this member tells the others; Meta.Role is required.
	// UpdateMeta changes it later.
	Meta Meta
	// Logger receives this component's logs. memberlist's own log lines are
	// routed into it at debug level, with key "memberlist_level". Default
	// slog.Default().
	Logger *slog.Logger
}

// nodeNameRE is a DNS-1123 subdomain, as for Kubernetes node names.
var nodeNameRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)

// withDefaults validates cfg and fills in its defaults.
func (cfg Config) withDefaults() (Config, error) {
	if cfg.NodeName == "" {
		return cfg, fmt.Errorf("gossip: Config.NodeName is required")
	}
	if len(cfg.NodeName) > 253 || !nodeNameRE.MatchString(cfg.NodeName) {
		return cfg, fmt.Errorf("gossip: Config.NodeName %q is not a valid node name (lowercase letters, digits, '-' and '.', at most 253)", cfg.NodeName)
	}
	if cfg.BindAddr == "" {
		cfg.BindAddr = "0.0.0.0"
	}
	if _, err := netip.ParseAddr(cfg.BindAddr); err != nil {
		return cfg, fmt.Errorf("gossip: Config.BindAddr %q is not an IP address", cfg.BindAddr)
	}
	switch {
	case cfg.BindPort == 0:
		cfg.BindPort = DefaultPort
	case cfg.BindPort == AnyPort:
	case cfg.BindPort < 0 || cfg.BindPort > 65535:
		return cfg, fmt.Errorf("gossip: Config.BindPort %d is not a port number", cfg.BindPort)
	}
	if cfg.AdvertiseAddr != "" {
		if _, err := netip.ParseAddr(cfg.AdvertiseAddr); err != nil {
			return cfg, fmt.Errorf("gossip: Config.AdvertiseAddr %q is not an IP address", cfg.AdvertiseAddr)
		}
	}
	switch len(cfg.Key) {
	case KeySize:
	case 0:
		return cfg, fmt.Errorf("gossip: Config.Key is required: the %d-byte cluster key from the join token", KeySize)
	default:
		return cfg, fmt.Errorf("gossip: Config.Key is %d bytes; the cluster key is %d bytes", len(cfg.Key), KeySize)
	}
	if cfg.Meta.NodeName == "" {
		cfg.Meta.NodeName = cfg.NodeName
	} else if cfg.Meta.NodeName != cfg.NodeName {
		return cfg, fmt.Errorf("gossip: Config.Meta.NodeName %q differs from Config.NodeName %q", cfg.Meta.NodeName, cfg.NodeName)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return cfg, nil
}

// memberlistConfig turns a validated Config into memberlist's.
func (cfg Config) memberlistConfig(d *delegate) *memberlist.Config {
	mc := memberlist.DefaultLANConfig()
	mc.Name = cfg.NodeName
	mc.BindAddr = cfg.BindAddr
	port := cfg.BindPort
	if port == AnyPort {
		port = 0
	}
	mc.BindPort = port
	mc.AdvertisePort = port
	mc.AdvertiseAddr = cfg.AdvertiseAddr

	mc.ProbeInterval = ProbeInterval
	mc.ProbeTimeout = ProbeTimeout
	mc.SuspicionMult = SuspicionMult
	mc.SuspicionMaxTimeoutMult = SuspicionMaxTimeoutMult
	mc.GossipInterval = GossipInterval
	mc.PushPullInterval = PushPullInterval
	// A failed member's name may be taken at once by a member at another
	// address (a node that came back with a new IP). While the old holder
	// is alive or suspect, the name stays refused.
	mc.DeadNodeReclaimTime = time.Nanosecond

	mc.SecretKey = append([]byte(nil), cfg.Key...)
	mc.Keyring = d.keyring
	mc.GossipVerifyIncoming = true
	mc.GossipVerifyOutgoing = true

	mc.Delegate = d
	mc.Events = d
	mc.Merge = d
	mc.Conflict = d
	mc.Logger = log.New(&logBridge{log: cfg.Logger}, "", 0)
	return mc
}
