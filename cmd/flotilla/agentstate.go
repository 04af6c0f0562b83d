package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/flotilla-dev/flotilla/internal/atomicfile"
)

// agentStateFile is what an agent keeps of what the server told it, to
// start again when no server answers: DATA_DIR/agent-state.json, mode 0600
// (it holds the gossip keys).
const agentStateFile = "agent-state.json"

// agentState is the content of agentStateFile.
type agentState struct {
	Node    string   `json:"node"`
	PodCIDR string   `json:"podCIDR"`
	Gossip  []string `json:"gossipKeys"` // hex: the primary first
}

func (s agentState) keys() (gossipKeys, error) {
	var k gossipKeys
	for i, h := range s.Gossip {
		b, err := hex.DecodeString(h)
		if err != nil {
			return gossipKeys{}, fmt.Errorf("%s: gossip key %d: %w", agentStateFile, i, err)
		}
		if i == 0 {
			k.primary = b
		} else {
			k.others = append(k.others, b)
		}
	}
	if k.primary == nil {
		return gossipKeys{}, fmt.Errorf("%s holds no gossip key", agentStateFile)
	}
	return k, nil
}

func saveAgentState(dataDir, node, podCIDR string, k gossipKeys) error {
	s := agentState{Node: node, PodCIDR: podCIDR, Gossip: []string{hex.EncodeToString(k.primary)}}
	for _, o := range k.others {
		s.Gossip = append(s.Gossip, hex.EncodeToString(o))
	}
	data, err := json.Marshal(s)
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(filepath.Join(dataDir, agentStateFile), data, 0o600)
}

// loadAgentState reads the state an earlier start of node saved; ok is
// false when there is none.
func loadAgentState(dataDir, node string) (s agentState, ok bool, err error) {
	data, err := os.ReadFile(filepath.Join(dataDir, agentStateFile))
	if errors.Is(err, os.ErrNotExist) {
		return agentState{}, false, nil
	}
	if err != nil {
		return agentState{}, false, err
	}
	if err := json.Unmarshal(data, &s); err != nil {
		return agentState{}, false, fmt.Errorf("%s: %w", agentStateFile, err)
	}
	if s.Node != node || s.PodCIDR == "" {
		return agentState{}, false, nil
	}
	return s, true, nil
}

// unreachable tells an error of a server that does not answer (refused,
// timed out, no route) from one that answered.
func unreachable(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) || errors.Is(err, context.DeadlineExceeded)
}
