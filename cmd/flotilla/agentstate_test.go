package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flotilla-dev/flotilla/cluster/apiclient"
	"github.com/flotilla-dev/flotilla/cluster/apiserver"
	"github.com/flotilla-dev/flotilla/cluster/gossip"
	"github.com/flotilla-dev/flotilla/internal/testkit"
)

// TestAgentStateServers: a state file of an older agent (no servers) still
// starts the node; the servers recorded since are read back after a
// restart; an update that changes nothing writes nothing.
func TestAgentStateServers(t *testing.T) {
	dir := t.TempDir()
	key := "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
	old := `{"node":"n1","podCIDR":"10.244.1.0/24","gossipKeys":["` + key + `"]}`
	if err := os.WriteFile(filepath.Join(dir, agentStateFile), []byte(old), 0o600); err != nil {
		t.Fatal(err)
	}
	st, ok, err := openAgentState(dir, "n1")
	if err != nil || !ok {
		t.Fatalf("an older file: ok %v, err %v", ok, err)
	}
	if s := st.get(); s.PodCIDR != "10.244.1.0/24" || s.Servers != nil || len(s.serverURLs()) != 0 {
		t.Fatalf("an older file read as %+v", s)
	}
	if _, err := st.get().keys(); err != nil {
		t.Fatal(err)
	}

	servers := []knownServer{{API: "https://192.0.2.11:6443", Gossip: "192.0.2.11:7946"}, {API: "https://192.0.2.12:6443"}}
	if err := st.update(func(s *agentState) { s.Servers = servers }); err != nil {
		t.Fatal(err)
	}
	again, ok, err := openAgentState(dir, "n1")
	if err != nil || !ok {
		t.Fatalf("after a restart: ok %v, err %v", ok, err)
	}
	s := again.get()
	if !slices.Equal(s.Servers, servers) || s.PodCIDR != "10.244.1.0/24" || len(s.Gossip) != 1 {
		t.Fatalf("after a restart: %+v", s)
	}
	if got := s.serverURLs(); !slices.Equal(got, []string{"https://192.0.2.11:6443", "https://192.0.2.12:6443"}) {
		t.Errorf("serverURLs %v", got)
	}
	if got := s.gossipAddrs(); !slices.Equal(got, []string{"192.0.2.11:7946"}) {
		t.Errorf("gossipAddrs %v", got)
	}
	if got := firstThen("https://192.0.2.12:6443", s.serverURLs()); !slices.Equal(got, []string{"https://192.0.2.12:6443", "https://192.0.2.11:6443"}) {
		t.Errorf("firstThen %v", got)
	}

	if err := os.Remove(again.path); err != nil {
		t.Fatal(err)
	}
	if err := again.update(func(s *agentState) { s.Servers = slices.Clone(servers) }); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(again.path); !os.IsNotExist(err) {
		t.Errorf("an update that changed nothing wrote the file (%v)", err)
	}

	// Another node's state is not this one's.
	if _, ok, err := openAgentState(dir, "n2"); ok || err != nil {
		t.Errorf("n2 took n1's state: ok %v, err %v", ok, err)
	}
}

// TestServersOf: only servers that announce an https API are servers to
// fail over to; their gossip address comes with them.
func TestServersOf(t *testing.T) {
	addr := netip.MustParseAddrPort("192.0.2.11:7946")
	got := serversOf([]gossip.Member{
		{Name: "a", Addr: addr, Meta: gossip.Meta{Role: gossip.RoleServer, APIAddr: "https://192.0.2.11:6443"}},
		{Name: "b", Addr: netip.MustParseAddrPort("192.0.2.12:7946"), Meta: gossip.Meta{Role: gossip.RoleServer}}, // starting
		{Name: "c", Meta: gossip.Meta{Role: gossip.RoleAgent, APIAddr: "https://192.0.2.13:6443"}},
		{Name: "d", Meta: gossip.Meta{Role: gossip.RoleServer, APIAddr: "192.0.2.14:6443"}},
		{Name: "e", Meta: gossip.Meta{Role: gossip.RoleServer, APIAddr: "https://192.0.2.15:6443"}},
	})
	want := []knownServer{{API: "https://192.0.2.11:6443", Gossip: "192.0.2.11:7946"}, {API: "https://192.0.2.15:6443"}}
	if !slices.Equal(got, want) {
		t.Errorf("serversOf = %+v, want %+v", got, want)
	}
}

// TestFollowServers: an agent learns a server from gossip once joined,
// and again when the server announces another API address.
func TestFollowServers(t *testing.T) {
	key := make([]byte, gossip.KeySize)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	member := func(name string, meta gossip.Meta) *gossip.Membership {
		m, err := gossip.New(gossip.Config{NodeName: name, BindAddr: "127.0.0.1", BindPort: gossip.AnyPort, Key: key, Meta: meta,
			Logger: testkit.LoggerAt(t, slog.LevelWarn)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = m.Shutdown() })
		return m
	}
	srv := member("server-1", gossip.Meta{Role: gossip.RoleServer, APIAddr: "https://127.0.0.1:6443"})
	agent := member("agent-1", gossip.Meta{Role: gossip.RoleAgent})

	var mu sync.Mutex
	var seen [][]knownServer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		followServers(ctx, agent, func(s []knownServer) { mu.Lock(); seen = append(seen, s); mu.Unlock() })
	}()
	defer func() { cancel(); <-done }()
	last := func() []knownServer {
		mu.Lock()
		defer mu.Unlock()
		if len(seen) == 0 {
			return nil
		}
		return seen[len(seen)-1]
	}

	if err := agent.Join(ctx, []string{srv.Local().Addr.String()}); err != nil {
		t.Fatal(err)
	}
	gossipAddr := srv.Local().Addr.String()
	testkit.EventuallyTrue(t, "the agent learns the server", 10*time.Second, func() bool {
		return slices.Equal(last(), []knownServer{{API: "https://127.0.0.1:6443", Gossip: gossipAddr}})
	})
	if err := srv.UpdateMeta(ctx, gossip.Meta{Role: gossip.RoleServer, APIAddr: "https://127.0.0.1:7443"}); err != nil {
		t.Fatal(err)
	}
	testkit.EventuallyTrue(t, "the agent learns the new address", 10*time.Second, func() bool {
		return slices.Equal(last(), []knownServer{{API: "https://127.0.0.1:7443", Gossip: gossipAddr}})
	})
	mu.Lock()
	defer mu.Unlock()
	for _, s := range seen {
		if len(s) == 0 {
			t.Errorf("told an empty list of servers: %v", seen)
		}
	}
}

// TestUnreachable: an agent starts from its last known state when no
// server answers, or when those that answer know no leader of the store
// (most servers are down); not when a server answered anything else.
func TestUnreachable(t *testing.T) {
	noLeader := &apiclient.StatusError{Status: metav1.Status{Code: http.StatusServiceUnavailable,
		Details: &metav1.StatusDetails{Causes: []metav1.StatusCause{{Type: apiserver.CauseNoLeader}}}}}
	for _, c := range []struct {
		err  error
		want bool
	}{
		{fmt.Errorf("register: %w", &net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}), true},
		{fmt.Errorf("register: %w", context.DeadlineExceeded), true},
		{fmt.Errorf("register: %w", noLeader), true},
		{&apiclient.StatusError{Status: metav1.Status{Code: http.StatusServiceUnavailable, Message: "the store is closed"}}, false},
		{&apiclient.StatusError{Status: metav1.Status{Code: http.StatusForbidden}}, false},
		{errors.New("bad certificate"), false},
	} {
		if got := unreachable(c.err); got != c.want {
			t.Errorf("unreachable(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}
