package raftlog

import (
	"fmt"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/flotilla-dev/flotilla/internal/testkit"
)

// httpGroup is a group of Nodes as Flotilla's servers run it: each with
// its own Dir and HTTPTransport, reached on its own HTTPS listener on
// loopback with mutual TLS. A server is crashed (its Node and transport
// stopped, its listener answering 503 as a dead peer's does not) and
// restarted from its Dir. Use it from one goroutine.
type httpGroup struct {
	tb      testing.TB
	pki     testPKI
	mod     func(*Config)
	peers   []Peer
	servers map[uint64]*httpServer
	dirs    map[uint64]string
	sms     map[uint64]*benchSM
	nodes   map[uint64]*Node
	trs     map[uint64]*HTTPTransport
}

// newHTTPGroup bootstraps a group of the voters ids with benchSMs; mod
// (may be nil) adjusts every Config, whose timing is otherwise the
// production defaults.
func newHTTPGroup(tb testing.TB, mod func(*Config), ids ...uint64) *httpGroup {
	tb.Helper()
	g := &httpGroup{
		tb: tb, pki: newTestPKI(tb), mod: mod,
		servers: map[uint64]*httpServer{}, dirs: map[uint64]string{}, sms: map[uint64]*benchSM{},
		nodes: map[uint64]*Node{}, trs: map[uint64]*HTTPTransport{},
	}
	for _, id := range ids {
		g.servers[id] = newHTTPServer(tb, g.pki)
		g.dirs[id] = tb.TempDir()
		g.sms[id] = &benchSM{}
		g.peers = append(g.peers, Peer{ID: id, Addr: g.servers[id].srv.Listener.Addr().String()})
	}
	tb.Cleanup(func() {
		for id := range g.nodes {
			g.crash(id)
		}
	})
	for _, id := range ids {
		g.start(id)
	}
	return g
}

// start starts, or restarts from its Dir and benchSM, server id.
func (g *httpGroup) start(id uint64) *Node {
	g.tb.Helper()
	logger := testkit.LoggerAt(g.tb, slog.LevelWarn).With("node", id)
	tr := NewHTTPTransport(id, g.pki.Client(), logger)
	cfg := Config{ID: id, Dir: g.dirs[id], Bootstrap: g.peers, Transport: tr, StateMachine: g.sms[id], Logger: logger}
	if g.mod != nil {
		g.mod(&cfg)
	}
	n, err := Start(cfg)
	if err != nil {
		tr.Close()
		g.tb.Fatalf("start node %d: %v", id, err)
	}
	g.servers[id].node.Store(n)
	g.nodes[id], g.trs[id] = n, tr
	return n
}

// crash stops server id without a word to the others: no leadership
// transfer, its messages in flight lost.
func (g *httpGroup) crash(id uint64) {
	g.servers[id].node.Store(nil)
	g.nodes[id].Stop()
	g.trs[id].Close()
	delete(g.nodes, id)
	delete(g.trs, id)
}

// running is the IDs of the servers not crashed, sorted.
func (g *httpGroup) running() []uint64 {
	var ids []uint64
	for id := range g.nodes {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// leader waits until every running server names the same running leader
// in the same term, and returns it.
func (g *httpGroup) leader() uint64 {
	g.tb.Helper()
	var lead uint64
	testkit.EventuallyWhy(g.tb, "one leader", 20*time.Second, func() string {
		lead = 0
		var term uint64
		for _, id := range g.running() {
			st := g.nodes[id].Status()
			if st.Leader == 0 || (lead != 0 && (st.Leader != lead || st.Term != term)) {
				return fmt.Sprintf("node %d sees leader %d in term %d", id, st.Leader, st.Term)
			}
			lead, term = st.Leader, st.Term
		}
		if g.nodes[lead] == nil {
			return fmt.Sprintf("the servers still follow %d", lead)
		}
		return ""
	})
	return lead
}

// caughtUp waits until server id follows the leader and has applied all
// it has committed.
func (g *httpGroup) caughtUp(id uint64) {
	g.tb.Helper()
	lead := g.leader()
	testkit.EventuallyWhy(g.tb, fmt.Sprintf("node %d caught up", id), 20*time.Second, func() string {
		commit, st := g.nodes[lead].Status().Commit, g.nodes[id].Status()
		if st.Leader != lead || st.Applied < commit {
			return fmt.Sprintf("node %d follows %d, applied %d; leader %d committed %d", id, st.Leader, st.Applied, lead, commit)
		}
		return ""
	})
}
