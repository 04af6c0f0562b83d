package raftlog

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"time"
)

// Sentinel errors callers branch on (errors.Is).
var (
	// ErrNoLeader: no leader is known (an election is going on, or this
	// server is cut off from the majority). Nothing was proposed; the
	// caller may retry after a while.
	ErrNoLeader = errors.New("raftlog: no leader")
	// ErrProposalDropped: Raft refused the proposal although a leader is
	// known (a leadership transfer is in progress, or too much is
	// uncommitted). Nothing was proposed; the caller may retry.
	ErrProposalDropped = errors.New("raftlog: proposal dropped")
	// ErrUnknownOutcome: a proposal left this server, and then this server
	// can no longer learn whether it was applied: it lost its leader and
	// found none for two election timeouts (it is cut off from the
	// majority), or it caught up from a snapshot that may hold the
	// proposal's entry. The proposal may be committed, or not: read to
	// know. The error wraps it with the cause.
	ErrUnknownOutcome = errors.New("raftlog: the proposal may or may not be applied")
	// ErrStopped: the Node is stopped (Stop, or a fatal error: see Err).
	ErrStopped = errors.New("raftlog: node stopped")
)

// Defaults of the Config fields left zero.
const (
	DefaultTickInterval    = 100 * time.Millisecond
	DefaultElectionTicks   = 10
	DefaultHeartbeatTicks  = 1
	DefaultSnapshotEntries = 10000
)

// Peer is a server of the group: its Raft ID and the address its Transport
// reaches it at (for HTTPTransport, host:port of its HTTPS listener).
type Peer struct {
	ID   uint64
	Addr string
}

// Member is a server in the group's current configuration.
type Member struct {
	ID   uint64
	Addr string
	// Voter is false for a learner (it receives the log but does not
	// vote, and does not count towards the majority).
	Voter bool
}

// Config configures one server's Node. Zero fields take the documented
// default; Start validates the rest and names the field it refuses.
type Config struct {
	// ID is this server's Raft ID, not 0, unique in the group and never
	// reused after RemoveMember.
	ID uint64
	// Dir holds the WAL and the snapshots; created 0700 if missing. When
	// it holds state, Start restarts from it and ignores Bootstrap and
	// Join.
	Dir string
	// Bootstrap lists the initial voters, this server included, when Dir
	// holds no state. Every founding server must be given the same list.
	// Empty with Join.
	Bootstrap []Peer
	// Join: Dir holds no state and this server was (or will be) added
	// with AddVoter on a member. It starts with no configuration and waits
	// for the leader to send it the log or a snapshot.
	Join bool
	// JoinPeers, with Join, are the current members' addresses, given to
	// the Transport at Start so that this server can answer the leader
	// before it has learnt the membership from the log. Optional for
	// transports that route by ID (MemTransport).
	JoinPeers []Peer
	// Transport carries messages to the other servers. Required.
	Transport Transport
	// StateMachine is what committed entries are applied to. Required.
	StateMachine StateMachine
	// TickInterval is Raft's logical clock (default 100ms). Election and
	// heartbeat timeouts are counted in ticks.
	TickInterval time.Duration
	// ElectionTicks is the election timeout, in ticks (default 10): a
	// follower that hears nothing from a leader for a random time in
	// [ElectionTicks, 2*ElectionTicks) ticks campaigns, and a leader that
	// does not hear from a majority for that long steps down. Shorter
	// fails over faster and elects needlessly on a loaded machine.
	ElectionTicks int
	// HeartbeatTicks is the leader's heartbeat interval in ticks
	// (default 1); it must be less than ElectionTicks.
	HeartbeatTicks int
	// SnapshotEntries: take a snapshot and compact the log every this
	// many applied entries (default 10000). Smaller keeps the WAL and a
	// restart's replay short, at the cost of writing the whole state more
	// often. A tenth of it is kept in the log behind each snapshot, so a
	// follower slightly behind catches up from the log, not a snapshot.
	SnapshotEntries uint64
	// Logger receives the Node's and Raft's logs (default slog.Default()).
	Logger *slog.Logger
}

// withDefaults returns cfg with the zero fields set to their defaults, or
// an error naming the first invalid field.
func (cfg Config) withDefaults() (Config, error) {
	if cfg.ID == 0 || cfg.ID >= math.MaxUint64-1 {
		return cfg, fmt.Errorf("raftlog: Config.ID must be set, and not 0 nor one of raft's two local IDs (got %d)", cfg.ID)
	}
	if cfg.Dir == "" {
		return cfg, errors.New("raftlog: Config.Dir must be set")
	}
	if cfg.Transport == nil {
		return cfg, errors.New("raftlog: Config.Transport must be set")
	}
	if cfg.StateMachine == nil {
		return cfg, errors.New("raftlog: Config.StateMachine must be set")
	}
	if cfg.Join && len(cfg.Bootstrap) > 0 {
		return cfg, errors.New("raftlog: Config.Bootstrap must be empty with Config.Join (a joining server learns the members from the leader)")
	}
	if err := checkPeers("Bootstrap", cfg.Bootstrap); err != nil {
		return cfg, err
	}
	if err := checkPeers("JoinPeers", cfg.JoinPeers); err != nil {
		return cfg, err
	}
	if len(cfg.Bootstrap) > 0 && !hasPeer(cfg.Bootstrap, cfg.ID) {
		return cfg, fmt.Errorf("raftlog: Config.Bootstrap must include this server (ID %d)", cfg.ID)
	}
	if cfg.TickInterval < 0 {
		return cfg, fmt.Errorf("raftlog: Config.TickInterval must not be negative (got %s)", cfg.TickInterval)
	}
	if cfg.TickInterval == 0 {
		cfg.TickInterval = DefaultTickInterval
	}
	if cfg.ElectionTicks == 0 {
		cfg.ElectionTicks = DefaultElectionTicks
	}
	if cfg.HeartbeatTicks == 0 {
		cfg.HeartbeatTicks = DefaultHeartbeatTicks
	}
	if cfg.HeartbeatTicks < 0 || cfg.ElectionTicks <= cfg.HeartbeatTicks {
		return cfg, fmt.Errorf("raftlog: Config.ElectionTicks (%d) must be greater than Config.HeartbeatTicks (%d), both positive",
			cfg.ElectionTicks, cfg.HeartbeatTicks)
	}
	if cfg.SnapshotEntries == 0 {
		cfg.SnapshotEntries = DefaultSnapshotEntries
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return cfg, nil
}

func checkPeers(field string, peers []Peer) error {
	seen := make(map[uint64]bool, len(peers))
	for _, p := range peers {
		if p.ID == 0 || p.ID >= math.MaxUint64-1 {
			return fmt.Errorf("raftlog: Config.%s: invalid peer ID %d", field, p.ID)
		}
		if seen[p.ID] {
			return fmt.Errorf("raftlog: Config.%s: peer ID %d listed twice", field, p.ID)
		}
		seen[p.ID] = true
	}
	return nil
}

func hasPeer(peers []Peer, id uint64) bool {
	for _, p := range peers {
		if p.ID == id {
			return true
		}
	}
	return false
}

// Status is a Node's view of the group at one moment.
type Status struct {
	ID     uint64
	Leader uint64 // 0: none known
	Term   uint64
	// Role is "leader", "follower", "candidate" (also while pre-voting)
	// or "learner".
	Role    string
	Commit  uint64 // highest index known committed
	Applied uint64 // highest index applied here (entries, conf changes, no-ops)
	// Members is the configuration as applied here, sorted by ID.
	Members []Member
}

// Leadership is what WatchLeadership reports: the term, its leader (0:
// none known) and whether that is this server.
type Leadership struct {
	Term     uint64
	Leader   bool
	LeaderID uint64
}
