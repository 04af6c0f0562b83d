package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"github.com/flotilla-dev/flotilla/cluster/apiclient"
	"github.com/flotilla-dev/flotilla/cluster/gossip"
	"github.com/flotilla-dev/flotilla/internal/atomicfile"
)

// agentStateFile is what an agent keeps of what the servers told it, to
// start again when no server answers, or when the token's server is gone:
// DATA_DIR/agent-state.json, mode 0600 (it holds the gossip keys).
const agentStateFile = "agent-state.json"

// agentState is the content of agentStateFile.
type agentState struct {
	Node    string   `json:"node"`
	PodCIDR string   `json:"podCIDR"`
	Gossip  []string `json:"gossipKeys"` // hex: the primary first
	// Servers are the cluster's servers as gossip last announced them:
	// where a restarted agent looks for one besides the token's. Files
	// written before there were several servers lack it.
	Servers []knownServer `json:"servers,omitempty"`
}

// knownServer is a server as gossip announces it.
type knownServer struct {
	API    string `json:"api"`    // its API's URL, "https://192.0.2.10:6443"
	Gossip string `json:"gossip"` // its gossip address, "192.0.2.10:7946"; "" if unknown
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

// setKeys records k, the primary first.
func (s *agentState) setKeys(k gossipKeys) {
	s.Gossip = []string{hex.EncodeToString(k.primary)}
	for _, o := range k.others {
		s.Gossip = append(s.Gossip, hex.EncodeToString(o))
	}
}

// serverURLs are the known servers' API URLs.
func (s agentState) serverURLs() []string { return apiURLs(s.Servers) }

// apiURLs are the servers' API URLs.
func apiURLs(servers []knownServer) []string {
	var out []string
	for _, srv := range servers {
		out = append(out, srv.API)
	}
	return out
}

// gossipAddrs are the known servers' gossip addresses.
func (s agentState) gossipAddrs() []string {
	var out []string
	for _, srv := range s.Servers {
		if srv.Gossip != "" {
			out = append(out, srv.Gossip)
		}
	}
	return out
}

// serversOf picks the servers out of gossip's members: those with the
// server role that announce an https API URL, in the members' order.
func serversOf(members []gossip.Member) []knownServer {
	var out []knownServer
	for _, m := range members {
		if m.Meta.Role != gossip.RoleServer || m.Meta.APIAddr == "" {
			continue
		}
		if u, err := url.Parse(m.Meta.APIAddr); err != nil || u.Scheme != "https" || u.Host == "" {
			continue
		}
		s := knownServer{API: m.Meta.APIAddr}
		if m.Addr.IsValid() {
			s.Gossip = m.Addr.String()
		}
		out = append(out, s)
	}
	return out
}

// firstThen is first followed by rest, without repeats or empty strings.
func firstThen(first string, rest []string) []string {
	var out []string
	for _, s := range append([]string{first}, rest...) {
		if s != "" && !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}

// agentStateKeeper holds the agent's state and writes agentStateFile at
// each change. It is safe for concurrent use: the followers of the gossip
// keys and of the servers both change it.
type agentStateKeeper struct {
	path string

	mu sync.Mutex
	s  agentState
}

// openAgentState reads the state an earlier start of node saved; ok is
// false when there is none (or it is another node's), and the keeper then
// starts from nothing.
func openAgentState(dataDir, node string) (k *agentStateKeeper, ok bool, err error) {
	k = &agentStateKeeper{path: filepath.Join(dataDir, agentStateFile), s: agentState{Node: node}}
	data, err := os.ReadFile(k.path)
	if errors.Is(err, os.ErrNotExist) {
		return k, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	var s agentState
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, false, fmt.Errorf("%s: %w", agentStateFile, err)
	}
	if s.Node != node || s.PodCIDR == "" {
		return k, false, nil
	}
	k.s = s
	return k, true, nil
}

// get returns the state. Its slices are shared: read them only (update
// replaces them, never changes them in place).
func (k *agentStateKeeper) get() agentState {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.s
}

// update changes the state with fn, which must replace any slice it
// changes, and writes the file if the state changed. The state in memory
// changes even when the file cannot be written (the error says so).
func (k *agentStateKeeper) update(fn func(*agentState)) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	before, err := json.Marshal(k.s)
	if err != nil {
		return err
	}
	fn(&k.s)
	data, err := json.Marshal(k.s)
	if err != nil {
		return err
	}
	if bytes.Equal(before, data) {
		return nil
	}
	if err := atomicfile.WriteFile(k.path, data, 0o600); err != nil {
		return fmt.Errorf("save the agent's state: %w", err)
	}
	return nil
}

// unreachable tells an error of a server that does not answer (refused,
// timed out, no route), or answers only that it knows no leader of the
// store (it runs, but most servers do not), from one that answered.
func unreachable(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) || errors.Is(err, context.DeadlineExceeded) || apiclient.IsNoLeader(err)
}
