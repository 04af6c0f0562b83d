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

// leaderWait bounds how long a server waits for its log to elect a leader
// at start: a one-voter group elects itself at once.
const leaderWait = 30 * time.Second

// startLog starts the server's Raft log (DATA_DIR/raft) with the store as
// its state machine, and makes the store propose its writes to it. A new
// data dir founds a group of this server alone; an existing one restarts
// its group. It returns once the log has a leader.
func startLog(ctx context.Context, dataDir string, st *store.Badger, log *slog.Logger) (*raftlog.Node, error) {
	id, err := serverID(dataDir)
	if err != nil {
		return nil, err
	}
	n, err := raftlog.Start(raftlog.Config{
		ID: id, Dir: filepath.Join(dataDir, "raft"), Bootstrap: []raftlog.Peer{{ID: id}},
		Transport: raftlog.Solo{}, StateMachine: st, Logger: log.With("component", "raft"),
	})
	if err != nil {
		return nil, fmt.Errorf("start the store's log: %w", err)
	}
	st.Replicate(n)
	wctx, cancel := context.WithTimeout(ctx, leaderWait)
	defer cancel()
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
		case <-wctx.Done():
			n.Stop()
			return nil, fmt.Errorf("the store's log elected no leader within %s", leaderWait)
		}
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
