package storetest

import (
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flotilla-dev/flotilla/cluster/raftlog"
	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/internal/testkit"
)

// OneVoter opens a Replicated store on disk, the state machine of a Raft
// group of one (raftlog.Solo), as `flotilla up` and a lone server run it.
// It stops when tb ends.
func OneVoter(tb testing.TB) *store.Badger {
	tb.Helper()
	return HTTPGroup(tb, 1)[0]
}

// HTTPGroup opens n Replicated stores on disk, each the state machine of
// a Node of one Raft group over raftlog.HTTPTransport: HTTPS on loopback,
// mutual TLS, the Config's default timing, as servers run it (n = 1: the
// group of one, over raftlog.Solo). It returns once every server knows the
// leader, the leader's store first; they stop when tb ends.
func HTTPGroup(tb testing.TB, n int) []*store.Badger {
	tb.Helper()
	pki := testkit.NewPKI(tb)
	var peers []raftlog.Peer
	handlers := make([]atomic.Pointer[raftlog.Node], n)
	for i := range n {
		if n == 1 {
			peers = append(peers, raftlog.Peer{ID: 1})
			break
		}
		mux := http.NewServeMux()
		mux.HandleFunc(raftlog.MessagesPath, func(w http.ResponseWriter, r *http.Request) {
			node := handlers[i].Load()
			if node == nil {
				http.Error(w, "not started", http.StatusServiceUnavailable)
				return
			}
			raftlog.Handler(node).ServeHTTP(w, r)
		})
		srv := httptest.NewUnstartedServer(mux)
		srv.TLS = pki.Server()
		srv.Config.ErrorLog = log.New(io.Discard, "", 0)
		srv.StartTLS()
		tb.Cleanup(srv.Close)
		peers = append(peers, raftlog.Peer{ID: uint64(i + 1), Addr: srv.Listener.Addr().String()})
	}
	stores := make([]*store.Badger, n)
	nodes := make([]*raftlog.Node, n)
	for i := range n {
		dir := tb.TempDir()
		logger := testkit.LoggerAt(tb, slog.LevelWarn).With("node", i+1)
		s, err := store.Open(store.Config{Dir: filepath.Join(dir, "db"), Replicated: true, Logger: logger})
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { _ = s.Close() })
		var tr raftlog.Transport = raftlog.Solo{}
		if n > 1 {
			ht := raftlog.NewHTTPTransport(uint64(i+1), pki.Client(), logger)
			tb.Cleanup(ht.Close)
			tr = ht
		}
		node, err := raftlog.Start(raftlog.Config{ID: uint64(i + 1), Dir: filepath.Join(dir, "raft"), Bootstrap: peers,
			Transport: tr, StateMachine: s, Logger: logger})
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(node.Stop) // (before the transport's and the store's Close: cleanups run last first)
		handlers[i].Store(node)
		s.Replicate(node)
		stores[i], nodes[i] = s, node
	}
	testkit.EventuallyWhy(tb, "one leader", 20*time.Second, func() string {
		lead := nodes[0].Status().Leader
		for _, node := range nodes {
			if st := node.Status(); lead == 0 || st.Leader != lead {
				return fmt.Sprintf("node %d sees leader %d", st.ID, st.Leader)
			}
		}
		return ""
	})
	lead := int(nodes[0].Status().Leader) - 1
	stores[0], stores[lead] = stores[lead], stores[0]
	return stores
}
