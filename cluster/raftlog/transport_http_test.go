package raftlog

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/encoding/protodelim"

	"github.com/flotilla-dev/flotilla/internal/testkit"
)

// testPKI: every server of a test uses one certificate both ways.
type testPKI = testkit.PKI

func newTestPKI(t testing.TB) testPKI { return testkit.NewPKI(t) }

// httpServer is a TLS listener whose Handler is bound to its Node once
// that is started (the Node's Config needs every listener's address).
type httpServer struct {
	srv  *httptest.Server
	node atomic.Pointer[Node]
}

func newHTTPServer(t testing.TB, pki testPKI) *httpServer {
	s := &httpServer{}
	mux := http.NewServeMux()
	mux.HandleFunc(MessagesPath, func(w http.ResponseWriter, r *http.Request) {
		n := s.node.Load()
		if n == nil {
			http.Error(w, "not started", http.StatusServiceUnavailable)
			return
		}
		Handler(n).ServeHTTP(w, r)
	})
	s.srv = httptest.NewUnstartedServer(mux)
	s.srv.TLS = pki.Server()
	s.srv.Config.ErrorLog = slog.NewLogLogger(testkit.Logger(t).Handler(), slog.LevelDebug)
	s.srv.StartTLS()
	t.Cleanup(s.srv.Close)
	return s
}

func TestHTTPTransport(t *testing.T) {
	pki := newTestPKI(t)
	ids := []uint64{1, 2, 3}
	servers := map[uint64]*httpServer{}
	var peers []Peer
	for _, id := range ids {
		servers[id] = newHTTPServer(t, pki)
		peers = append(peers, Peer{ID: id, Addr: servers[id].srv.Listener.Addr().String()})
	}
	nodes := map[uint64]*Node{}
	sms := map[uint64]*testSM{}
	start := func(id uint64, mod func(*Config)) {
		tr := NewHTTPTransport(id, pki.Client(), testkit.LoggerAt(t, slog.LevelInfo))
		sms[id] = &testSM{}
		cfg := Config{
			ID: id, Dir: t.TempDir(), Transport: tr, StateMachine: sms[id],
			TickInterval: testTick, ElectionTicks: testElection, SnapshotEntries: 5,
			Logger: testkit.LoggerAt(t, slog.LevelInfo).With("node", id),
		}
		mod(&cfg)
		n, err := Start(cfg)
		if err != nil {
			t.Fatal(err)
		}
		servers[id].node.Store(n)
		nodes[id] = n
		t.Cleanup(func() { n.Stop(); tr.Close() })
	}
	for _, id := range ids {
		start(id, func(cfg *Config) { cfg.Bootstrap = peers })
	}
	var lead uint64
	testkit.EventuallyWhy(t, "a leader over HTTPS", 20*time.Second, func() string {
		lead = nodes[1].Status().Leader
		for _, id := range ids {
			if st := nodes[id].Status(); lead == 0 || st.Leader != lead {
				return fmt.Sprintf("node %d sees leader %d", id, st.Leader)
			}
		}
		return ""
	})
	var want []string
	for i := range 10 {
		want = append(want, fmt.Sprintf("h%d", i))
		propose(t, nodes[ids[i%3]], want[i])
	}
	testkit.EventuallyWhy(t, "replicated over HTTPS", 20*time.Second, func() string {
		for _, id := range ids {
			if got := sms[id].Items(); !slices.Equal(got, want) {
				return fmt.Sprintf("node %d has %q", id, got)
			}
		}
		return ""
	})
	if got := nodes[lead].Status().Members; len(got) != 3 || got[1].Addr != peers[1].Addr {
		t.Fatalf("members %+v", got)
	}

	// A fourth server joins; the log is compacted, so it gets a snapshot
	// over HTTPS.
	servers[4] = newHTTPServer(t, pki)
	p4 := Peer{ID: 4, Addr: servers[4].srv.Listener.Addr().String()}
	start(4, func(cfg *Config) { cfg.Join, cfg.JoinPeers = true, peers })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := nodes[lead].AddVoter(ctx, p4); err != nil {
		t.Fatalf("AddVoter(4): %v", err)
	}
	// Its first proposal once it caught up: one made before would end
	// with ErrUnknownOutcome when the snapshot arrives.
	testkit.EventuallyWhy(t, "the new server restored the snapshot", 20*time.Second, func() string {
		if got := sms[4].Items(); !slices.Equal(got, want) {
			return fmt.Sprintf("node 4 has %q", got)
		}
		return ""
	})
	want = append(want, "after join")
	propose(t, nodes[4], "after join")
	ids = append(ids, 4)
	testkit.EventuallyWhy(t, "the new server caught up over HTTPS", 20*time.Second, func() string {
		for _, id := range ids {
			if got := sms[id].Items(); !slices.Equal(got, want) {
				return fmt.Sprintf("node %d has %q", id, got)
			}
		}
		return ""
	})
	if sms[4].Restores() < 1 {
		t.Fatal("node 4 caught up without a snapshot")
	}

	// The handler refuses what is not a batch of messages for its node.
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: pki.Client()}}
	defer client.CloseIdleConnections()
	url := "https://" + peers[0].Addr + MessagesPath
	post := func(body []byte) int {
		resp, err := client.Post(url, "application/x-protobuf", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	var misaddressed bytes.Buffer
	if _, err := protodelim.MarshalTo(&misaddressed, &raftpb.Message{Type: raftpb.MsgHeartbeat.Enum(), To: new(uint64(2)), From: new(uint64(3))}); err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		body []byte
		want int
	}{
		"garbage":      {[]byte("\x05\xff\xff\xff\xff\xff"), http.StatusBadRequest},
		"cut short":    {[]byte("\x20abc"), http.StatusBadRequest},
		"misaddressed": {misaddressed.Bytes(), http.StatusBadRequest},
		"empty":        {nil, http.StatusNoContent},
	} {
		if got := post(tc.body); got != tc.want {
			t.Errorf("%s: status %d, want %d", name, got, tc.want)
		}
	}
	resp, err := client.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET: status %d", resp.StatusCode)
	}
	// Without a client certificate the TLS handshake fails.
	anon := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pki.Pool}}}
	defer anon.CloseIdleConnections()
	if resp, err := anon.Post(url, "application/x-protobuf", nil); err == nil {
		resp.Body.Close()
		t.Fatalf("a client without a certificate got %s", resp.Status)
	}
}
