package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/flotilla-dev/flotilla/cluster/raftlog"
	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/internal/atomicfile"
)

// serverIDFile holds the server's Raft ID in the data dir.
const serverIDFile = "server-id"

// leaderWait bounds how long a server of a one-voter group waits for its
// log to elect a leader at start: it elects itself at once. A server of a
// bigger group waits for a majority for as long as it takes.
const leaderWait = 30 * time.Second

// logPeers is how a server's log reaches the other servers; nil for a
// group of this server alone (`up`).
type logPeers struct {
	transport raftlog.Transport
	self      string // this server's peer address
	// serve starts answering the peers (before the wait for a leader,
	// which needs them).
	serve func(*raftlog.Node)
}

// startLog starts the log of server id (serverID) in DATA_DIR/raft, with
// the store as its state machine, and makes the store propose its writes to it. A new
// data dir founds a group of this server alone, or, after joinServers,
// joins the group that answered; an existing one restarts its group. It
// returns once the log has a leader.
func startLog(ctx context.Context, dataDir string, id uint64, st *store.Badger, peers *logPeers, log *slog.Logger, say func(string, ...any)) (*raftlog.Node, error) {
	cfg := raftlog.Config{ID: id, Dir: filepath.Join(dataDir, "raft"), Transport: raftlog.Solo{}, StateMachine: st,
		Logger: log.With("component", "raft")}
	if peers != nil {
		cfg.Transport = peers.transport
		joinPeers, err := readJoinState(dataDir)
		if err != nil {
			return nil, err
		}
		if joinPeers != nil {
			cfg.Join, cfg.JoinPeers = true, joinPeers
		} else {
			cfg.Bootstrap = []raftlog.Peer{{ID: id, Addr: peers.self}}
		}
	} else {
		cfg.Bootstrap = []raftlog.Peer{{ID: id}}
	}
	n, err := raftlog.Start(cfg)
	if err != nil {
		return nil, fmt.Errorf("start the store's log: %w", err)
	}
	st.Replicate(n)
	if peers != nil && peers.serve != nil {
		peers.serve(n)
	}
	wait := leaderWait
	if len(n.Status().Members) > 1 || cfg.Join {
		wait = 0 // a majority of the others must come up: no bound
	}
	var deadline <-chan time.Time
	if wait > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		deadline = t.C
	}
	tick := time.NewTicker(10 * time.Second)
	defer tick.Stop()
	watch, stop := n.WatchLeadership()
	defer stop()
	for {
		select {
		case l, ok := <-watch:
			if !ok {
				return nil, fmt.Errorf("the store's log stopped: %w", n.Err())
			}
			if l.LeaderID != 0 {
				return n, nil
			}
		case <-tick.C:
			st := n.Status()
			say("waiting for a majority of the store's %d servers to elect a leader (term %d)", len(st.Members), st.Term)
		case <-deadline:
			n.Stop()
			return nil, fmt.Errorf("the store's log elected no leader within %s", leaderWait)
		case <-ctx.Done():
			n.Stop()
			return nil, ctx.Err()
		}
	}
}

// followMembership keeps this server's place in the group up to date, for
// as long as ctx lasts: a learner (a server that joined) asks to vote once
// it has caught up, and a member whose peer address changed (or that was
// founded without one) records the new one.
func followMembership(ctx context.Context, n *raftlog.Node, self string, log *slog.Logger) {
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		st := n.Status()
		if st.Leader == 0 {
			continue
		}
		var me *raftlog.Member
		for i := range st.Members {
			if st.Members[i].ID == st.ID {
				me = &st.Members[i]
			}
		}
		if me == nil {
			continue // not applied our own addition yet, or removed
		}
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		switch {
		case !me.Voter && st.Commit > 0 && st.Applied >= st.Commit:
			if err := n.AddVoter(cctx, raftlog.Peer{ID: st.ID}); err != nil {
				log.Warn("asking to vote", "err", err)
			} else {
				log.Info("caught up: now a voter of the store's group", "id", st.ID)
			}
		case self != "" && me.Addr != self:
			if err := n.SetAddress(cctx, raftlog.Peer{ID: st.ID, Addr: self}); err != nil {
				log.Warn("recording this server's peer address", "addr", self, "err", err)
			} else {
				log.Info("recorded this server's peer address", "addr", self)
			}
		case me.Voter && (self == "" || me.Addr == self):
			cancel()
			return // nothing left to do
		}
		cancel()
	}
}

// serverID reads the server's Raft ID, or records 1 in a new data dir (the
// server that founds a group).
func serverID(dataDir string) (uint64, error) {
	path := filepath.Join(dataDir, serverIDFile)
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		if err := atomicfile.WriteFile(path, []byte("1\n"), 0o600); err != nil {
			return 0, fmt.Errorf("record the server's ID: %w", err)
		}
		return 1, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read the server's ID: %w", err)
	}
	id, err := strconv.ParseUint(strings.TrimSpace(string(data)), 10, 64)
	if err != nil || id == 0 {
		return 0, fmt.Errorf("%s holds %q, not a server ID: restore it from a backup of the data dir", path, strings.TrimSpace(string(data)))
	}
	return id, nil
}
