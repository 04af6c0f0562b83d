package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/flotilla-dev/flotilla/cluster/apiserver"
	"github.com/flotilla-dev/flotilla/cluster/auth"
	"github.com/flotilla-dev/flotilla/cluster/join"
	"github.com/flotilla-dev/flotilla/cluster/raftlog"
	"github.com/flotilla-dev/flotilla/internal/atomicfile"
)

// A server's peers reach its Raft log on a listener of its own (etcd's
// peer port): mutual TLS with the cluster CA, and only certificates in
// auth.GroupServers are answered. The API listener stays for users and
// agents.

// DefaultPeerPort is the port of a server's Raft peer listener.
const DefaultPeerPort = 6444

// joinStateFile holds, in a joining server's data dir, the members its
// join answer named: the log starts from them until it holds state.
const joinStateFile = "raft-join.json"

// peerConfig is what a server of a multi-server group needs besides the
// control plane's options.
type peerConfig struct {
	name       string // the server's name: its certificate's user is ServerUserPrefix+name
	listenAddr string // --peer-addr
	advertise  string // host:port the other servers reach this one at
}

// peerTLS are the TLS configurations of a server's peer traffic: serving
// (client certificates of the cluster CA required) and sending (this
// server's certificate, peers checked against the CA).
func peerTLS(tlsDir, name string, caPEM []byte, certFile, keyFile string) (serve, send *tls.Config, err error) {
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		return nil, nil, errors.New("the cluster CA holds no certificate")
	}
	serving, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, nil, fmt.Errorf("the server's certificate: %w", err)
	}
	certPEM, keyPEM, err := apiserver.IssueClientCert(tlsDir, auth.ServerUserPrefix+name, []string{auth.GroupServers}, apiserver.DefaultClientCertTTL)
	if err != nil {
		return nil, nil, fmt.Errorf("the server's peer certificate: %w", err)
	}
	client, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, nil, err
	}
	serve = &tls.Config{Certificates: []tls.Certificate{serving}, ClientCAs: roots, ClientAuth: tls.RequireAndVerifyClientCert,
		MinVersion: tls.VersionTLS12, NextProtos: []string{"h2", "http/1.1"}}
	send = &tls.Config{Certificates: []tls.Certificate{client}, RootCAs: roots, MinVersion: tls.VersionTLS12}
	return serve, send, nil
}

// peerHandler answers raftlog.MessagesPath for servers only: a client
// certificate of the cluster CA in auth.GroupServers. A node's or a user's
// certificate, even cluster-admin's, is refused: no one but a server
// writes to the log directly.
func peerHandler(n *raftlog.Node) http.Handler {
	mux := http.NewServeMux()
	mux.Handle(raftlog.MessagesPath, raftlog.Handler(n))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 || !auth.IsServer(auth.UserFromCert(r.TLS.VerifiedChains[0][0])) {
			http.Error(w, "only the cluster's servers may send here", http.StatusForbidden)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// servePeers serves the peer listener until ctx ends.
func servePeers(ctx context.Context, ln net.Listener, cfg *tls.Config, n *raftlog.Node, log *slog.Logger) {
	srv := &http.Server{Handler: peerHandler(n), TLSConfig: cfg, ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)}
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	if err := srv.Serve(tls.NewListener(ln, cfg)); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Error("peer listener stopped", "err", err)
	}
}

// serverJoinRequest is what a joining server posts to
// /apis/flotilla.dev/v1alpha1/servers/NAME/join.
type serverJoinRequest struct {
	// PeerAddr is host:port where the other servers reach its log.
	PeerAddr string `json:"peerAddr"`
}

// serverJoinAnswer is what it gets: its Raft ID, the members to start
// from, and the cluster's keys every server holds.
type serverJoinAnswer struct {
	ID      uint64       `json:"id"`
	Members []joinMember `json:"members"`
	// Commit is the log's commit index when the server was added: once it
	// has applied this much it has caught up, and asks to vote.
	Commit        uint64 `json:"commit"`
	CACert        []byte `json:"caCert"` // PEM
	CAKey         []byte `json:"caKey"`  // PEM
	SecretsKeys   []byte `json:"secretsKeys"`
	WebhookSecret string `json:"webhookSecret"`
	GossipKey     string `json:"gossipKey"` // hex
	GossipAddr    string `json:"gossipAddr"`
}

type joinMember struct {
	ID   uint64 `json:"id"`
	Addr string `json:"addr"`
}

// serverJoinPattern is where servers join (a subresource, so RBAC's
// servers/join rule decides who may).
const serverJoinPattern = "/apis/flotilla.dev/v1alpha1/servers/{name}/join"

// serverJoinHandler adds a server to the group as a learner and hands it
// the cluster's keys. The caller must hold a server join token (RBAC lets
// only auth.GroupServerJoiners create servers/join); the handler checks
// the group again, since what it hands out is the whole cluster.
func serverJoinHandler(cp *controlPlane, gossipAddr string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			writeStatus(w, http.StatusMethodNotAllowed, "MethodNotAllowed", "POST to join a server")
			return
		}
		u := auth.UserFrom(r.Context())
		if u == nil || !slices.Contains(u.Groups, auth.GroupServerJoiners) {
			writeStatus(w, http.StatusForbidden, "Forbidden", "joining a server needs a server join token (flotilla token create --server)")
			return
		}
		name := r.PathValue("name")
		var req serverJoinRequest
		if err := json.NewDecoder(io.LimitReader(r.Body, 64<<10)).Decode(&req); err != nil {
			writeStatus(w, http.StatusBadRequest, "BadRequest", "the body must be a JSON serverJoinRequest: "+err.Error())
			return
		}
		if err := checkPeerAddr(req.PeerAddr); err != nil {
			writeStatus(w, http.StatusBadRequest, "BadRequest", err.Error())
			return
		}
		answer, err := admitServer(r.Context(), cp, name, req.PeerAddr, gossipAddr)
		if err != nil {
			cp.log.Warn("a server could not join", "name", name, "peer", req.PeerAddr, "by", u.Username, "err", err)
			writeStatus(w, http.StatusServiceUnavailable, "ServiceUnavailable", err.Error())
			return
		}
		cp.log.Info("a server joined the store's group as a learner", "name", name, "id", answer.ID, "peer", req.PeerAddr, "by", u.Username)
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(answer)
	})
}

// checkPeerAddr accepts IP:port only: the peer listener's certificate
// names IP addresses.
func checkPeerAddr(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || net.ParseIP(host) == nil {
		return fmt.Errorf("peerAddr %q is not IP:port", addr)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("peerAddr %q has no valid port", addr)
	}
	return nil
}

// admitServer adds the server at peerAddr as a learner (again, if a member
// already has that address: a join retried after a crash) and gathers its
// answer.
func admitServer(ctx context.Context, cp *controlPlane, name, peerAddr, gossipAddr string) (*serverJoinAnswer, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	st := cp.raft.Status()
	var id uint64
	for _, m := range st.Members {
		if m.Addr == peerAddr {
			if m.Voter {
				return nil, fmt.Errorf("%s is already a voting member (server-%d): remove it first (flotilla server remove server-%d)", peerAddr, m.ID, m.ID)
			}
			id = m.ID
		}
	}
	for id == 0 {
		var b [8]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, err
		}
		// Random, so that an ID is never reused after a removal; 20 bits
		// keep names short (server-482913).
		id = binary.BigEndian.Uint64(b[:]) >> 44
		for _, m := range st.Members {
			if m.ID == id {
				id = 0
			}
		}
	}
	if err := cp.raft.AddLearner(ctx, raftlog.Peer{ID: id, Addr: peerAddr}); err != nil {
		return nil, fmt.Errorf("add the server to the store's group: %w", err)
	}
	st = cp.raft.Status()
	a := &serverJoinAnswer{ID: id, Commit: st.Commit, WebhookSecret: cp.webhook, GossipAddr: gossipAddr}
	for _, m := range st.Members {
		if m.ID != id {
			a.Members = append(a.Members, joinMember{ID: m.ID, Addr: m.Addr})
		}
	}
	var err error
	if a.CACert, err = os.ReadFile(filepath.Join(cp.tlsDir, apiserver.CAFile)); err != nil {
		return nil, err
	}
	if a.CAKey, err = os.ReadFile(filepath.Join(cp.tlsDir, apiserver.CAKeyFile)); err != nil {
		return nil, err
	}
	if a.SecretsKeys, err = os.ReadFile(cp.secretsKeyFile); err != nil {
		return nil, err
	}
	keys, err := readGossipKeys(ctx, cp.store)
	if err != nil {
		return nil, err
	}
	a.GossipKey = hex.EncodeToString(keys.primary)
	return a, nil
}

// joinServers asks the server a server join token names to add this
// server to its group, and writes what it answers into dataDir: the
// cluster CA, the Secrets key, the webhook secret, the gossip key, the
// server's Raft ID and the members to start from. A data dir that already
// holds a server ID has joined (or founded) a group: it is left alone.
func joinServers(ctx context.Context, dataDir, tokenText, name, peerAddr, secretsKeyFile string, say func(string, ...any)) (joined bool, _ error) {
	if _, err := os.Stat(filepath.Join(dataDir, serverIDFile)); err == nil {
		return false, nil
	}
	tok, err := join.Parse(tokenText)
	if err != nil {
		return false, fmt.Errorf("--join-token: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(tok.CAPEM()) {
		return false, errors.New("--join-token: its CA holds no certificate")
	}
	hc := &http.Client{Timeout: time.Minute, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}}}
	body, _ := json.Marshal(serverJoinRequest{PeerAddr: peerAddr})
	u := strings.TrimRight(tok.Server, "/") + "/apis/flotilla.dev/v1alpha1/servers/" + url.PathEscape(name) + "/join"
	var answer serverJoinAnswer
	for attempt := 1; ; attempt++ {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
		if err != nil {
			return false, err
		}
		req.Header.Set("Authorization", "Bearer "+tok.BootstrapToken)
		req.Header.Set("Content-Type", "application/json")
		resp, err := hc.Do(req)
		if err == nil {
			data, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
			resp.Body.Close()
			switch {
			case resp.StatusCode == http.StatusOK:
				if err := json.Unmarshal(data, &answer); err != nil {
					return false, fmt.Errorf("the join answer of %s: %w", tok.Server, err)
				}
			case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
				return false, fmt.Errorf("%s refused the join token (%s): it may have expired, or be an agent's token; make one with `flotilla token create --server`", tok.Server, resp.Status)
			default:
				err = fmt.Errorf("%s: %s", resp.Status, bytes.TrimSpace(data))
			}
		}
		if err == nil {
			break
		}
		say("joining the servers at %s (attempt %d): %v; retrying", tok.Server, attempt, err)
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-time.After(3 * time.Second):
		}
	}
	if err := writeJoinAnswer(dataDir, secretsKeyFile, &answer); err != nil {
		return false, err
	}
	say("joined the servers at %s as server-%d (a learner until it catches up)", tok.Server, answer.ID)
	return true, nil
}

// writeJoinAnswer writes a join answer's files; the server ID last, as the
// mark that the data dir has joined.
func writeJoinAnswer(dataDir, secretsKeyFile string, a *serverJoinAnswer) error {
	tlsDir := filepath.Join(dataDir, "tls")
	if err := os.MkdirAll(tlsDir, 0o700); err != nil {
		return err
	}
	if secretsKeyFile == "" {
		secretsKeyFile = filepath.Join(dataDir, secretsKeyFileName)
	}
	members, err := json.Marshal(a.Members)
	if err != nil {
		return err
	}
	files := []struct {
		path string
		data []byte
	}{
		{filepath.Join(tlsDir, apiserver.CAFile), a.CACert},
		{filepath.Join(tlsDir, apiserver.CAKeyFile), a.CAKey},
		{secretsKeyFile, a.SecretsKeys},
		{filepath.Join(dataDir, "webhook-secret"), []byte(a.WebhookSecret + "\n")},
		{filepath.Join(dataDir, "gossip-key"), []byte(a.GossipKey + "\n")},
		{filepath.Join(dataDir, joinStateFile), members},
		{filepath.Join(dataDir, serverIDFile), []byte(strconv.FormatUint(a.ID, 10) + "\n")},
	}
	for _, f := range files {
		if err := atomicfile.WriteFile(f.path, f.data, 0o600); err != nil {
			return fmt.Errorf("write %s: %w", f.path, err)
		}
	}
	return nil
}

// readJoinState is the members a joining server starts from (nil: it did
// not join; it founds its group).
func readJoinState(dataDir string) ([]raftlog.Peer, error) {
	data, err := os.ReadFile(filepath.Join(dataDir, joinStateFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var ms []joinMember
	if err := json.Unmarshal(data, &ms); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dataDir, joinStateFile), err)
	}
	peers := make([]raftlog.Peer, len(ms))
	for i, m := range ms {
		peers[i] = raftlog.Peer{ID: m.ID, Addr: m.Addr}
	}
	return peers, nil
}

// joinServerGossip joins the gossip through the other servers of the
// store's group (their peer hosts, at this server's gossip port), until it
// has: a server that joined a cluster, or restarted, finds the nodes
// through them. A server alone in its group has no one to join.
func joinServerGossip(ctx context.Context, members gossipJoiner, n *raftlog.Node, self string, port int, log *slog.Logger) {
	for delay := time.Second; ; delay = min(2*delay, 30*time.Second) {
		st := n.Status()
		var addrs []string
		for _, m := range st.Members {
			host, _, err := net.SplitHostPort(m.Addr)
			if m.ID == st.ID || err != nil || host == self {
				continue
			}
			addrs = append(addrs, net.JoinHostPort(host, strconv.Itoa(port)))
		}
		if len(addrs) == 0 {
			return
		}
		jctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := members.Join(jctx, addrs)
		cancel()
		if err == nil {
			return
		}
		log.Debug("joining the other servers' gossip", "addrs", addrs, "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
	}
}

// gossipJoiner is the part of gossip.Membership joinServerGossip uses.
type gossipJoiner interface {
	Join(ctx context.Context, addrs []string) error
}
