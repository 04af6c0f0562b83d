package raftlog

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/encoding/protodelim"
)

// MessagesPath is where Handler is to be mounted on every server's HTTPS
// listener; HTTPTransport posts to https://ADDR/raft/v1/messages.
const MessagesPath = "/raft/v1/messages"

// MaxBatchBytes limits a request body Handler accepts: a batch of messages,
// or one snapshot (the whole state machine: keep it well under this).
const MaxBatchBytes = 512 << 20

const (
	httpQueueLen     = 4096
	httpBatchLen     = 64
	httpTimeout      = 5 * time.Second // a batch without a snapshot
	httpSnapTimeout  = 5 * time.Minute // a batch with a snapshot
	httpMaxIdlePerIP = 4
)

// HTTPTransport sends Raft messages over HTTPS: per peer, a queue and a
// goroutine that posts batches of length-delimited protobuf messages to
// the peer's MessagesPath with one long-lived http.Client. A failed post
// drops its batch and reports the peer unreachable (and a snapshot in it
// failed); a full queue drops the message. Authentication (mTLS) is the
// TLS configuration's job: give it the client certificate and the CA the
// peers' certificates are checked against.
type HTTPTransport struct {
	self   uint64
	client *http.Client
	log    *slog.Logger

	mu       sync.Mutex
	peers    map[uint64]*httpPeer
	reporter Reporter
	closed   bool
}

type httpPeer struct {
	id   uint64
	url  string
	ch   chan *raftpb.Message
	stop chan struct{}
	done chan struct{}
}

var _ ReportingTransport = (*HTTPTransport)(nil)

// NewHTTPTransport returns the transport of server self. tlsCfg is used for
// every connection (nil: Go's defaults, which verify the peers against the
// system roots). logger nil: slog.Default().
func NewHTTPTransport(self uint64, tlsCfg *tls.Config, logger *slog.Logger) *HTTPTransport {
	if logger == nil {
		logger = slog.Default()
	}
	tr := &http.Transport{
		TLSClientConfig:     tlsCfg,
		ForceAttemptHTTP2:   true,
		MaxIdleConnsPerHost: httpMaxIdlePerIP,
		IdleConnTimeout:     90 * time.Second,
		TLSHandshakeTimeout: 5 * time.Second,
		// A connection to a peer that vanished (cut off, its host dead)
		// is found dead by a ping instead of holding every batch until
		// the kernel gives up.
		HTTP2: &http.HTTP2Config{SendPingTimeout: 2 * time.Second, PingTimeout: 2 * time.Second},
	}
	return &HTTPTransport{
		self:   self,
		client: &http.Client{Transport: tr},
		log:    logger.With("raft_id", self),
		peers:  map[uint64]*httpPeer{},
	}
}

// Attach implements ReportingTransport.
func (t *HTTPTransport) Attach(r Reporter) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.reporter = r
}

func (t *HTTPTransport) report() Reporter {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.reporter
}

// SetPeer implements Transport: it starts (or, with a new address,
// restarts) the peer's sender, or stops it when addr is "".
func (t *HTTPTransport) SetPeer(id uint64, addr string) {
	if id == t.self {
		return
	}
	url := "https://" + addr + MessagesPath
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return
	}
	if p := t.peers[id]; p != nil {
		if addr != "" && p.url == url {
			return
		}
		close(p.stop)
		delete(t.peers, id)
	}
	if addr == "" {
		return
	}
	p := &httpPeer{id: id, url: url, ch: make(chan *raftpb.Message, httpQueueLen), stop: make(chan struct{}), done: make(chan struct{})}
	t.peers[id] = p
	go t.run(p)
}

// Send implements Transport. It never blocks.
func (t *HTTPTransport) Send(msgs []*raftpb.Message) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, m := range msgs {
		p := t.peers[m.GetTo()]
		if p != nil {
			select {
			case p.ch <- m:
				continue
			default:
			}
		}
		// No address, or the queue is full: drop. Report from another
		// goroutine: Send runs on the Node's loop, which a report waits
		// for.
		if r := t.reporter; r != nil {
			to, snap := m.GetTo(), m.GetType() == raftpb.MsgSnap
			go func() {
				r.ReportUnreachable(to)
				if snap {
					r.ReportSnapshot(to, true)
				}
			}()
		}
	}
}

// Close stops every sender and closes idle connections.
func (t *HTTPTransport) Close() {
	t.mu.Lock()
	t.closed = true
	peers := t.peers
	t.peers = map[uint64]*httpPeer{}
	t.mu.Unlock()
	for _, p := range peers {
		close(p.stop)
		<-p.done
	}
	t.client.CloseIdleConnections()
}

func (t *HTTPTransport) run(p *httpPeer) {
	defer close(p.done)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		select {
		case <-p.stop:
		case <-p.done:
		}
		cancel()
	}()
	var batch []*raftpb.Message
	var buf bytes.Buffer
	for {
		batch = batch[:0]
		select {
		case m := <-p.ch:
			batch = append(batch, m)
		case <-p.stop:
			return
		}
	more:
		for len(batch) < httpBatchLen {
			select {
			case m := <-p.ch:
				batch = append(batch, m)
			default:
				break more
			}
		}
		err := t.post(ctx, p, batch, &buf)
		t.reportBatch(p, batch, err)
		clear(batch)
	}
}

func (t *HTTPTransport) post(ctx context.Context, p *httpPeer, batch []*raftpb.Message, buf *bytes.Buffer) error {
	buf.Reset()
	timeout := httpTimeout
	for _, m := range batch {
		if m.GetType() == raftpb.MsgSnap {
			timeout = httpSnapTimeout
		}
		if _, err := protodelim.MarshalTo(buf, m); err != nil {
			return fmt.Errorf("encode message: %w", err)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.url, bytes.NewReader(buf.Bytes()))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-protobuf")
	resp, err := t.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("%s: %s", resp.Status, bytes.TrimSpace(msg))
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
	return nil
}

func (t *HTTPTransport) reportBatch(p *httpPeer, batch []*raftpb.Message, err error) {
	r := t.report()
	if err != nil {
		t.log.Debug("cannot send to peer", "peer", p.id, "url", p.url, "messages", len(batch), "err", err)
	}
	if r == nil {
		return
	}
	if err != nil {
		r.ReportUnreachable(p.id)
	}
	for _, m := range batch {
		if m.GetType() == raftpb.MsgSnap {
			r.ReportSnapshot(p.id, err != nil)
		}
	}
}

// Handler returns the receiving side of HTTPTransport for n, to mount at
// MessagesPath. It accepts POSTs of length-delimited raftpb.Messages
// addressed to n, steps them into n and answers 204; a malformed or
// misaddressed batch is refused whole with 400, a body over MaxBatchBytes
// with 413, and 503 once n is stopped. Who may post is for the server's
// TLS configuration (client certificates) to decide.
func Handler(n *Node) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			http.Error(w, "POST raft messages here", http.StatusMethodNotAllowed)
			return
		}
		body := bufio.NewReader(http.MaxBytesReader(w, r.Body, MaxBatchBytes))
		opts := protodelim.UnmarshalOptions{MaxSize: MaxBatchBytes}
		var msgs []*raftpb.Message
		for {
			m := new(raftpb.Message)
			err := opts.UnmarshalFrom(body, m)
			if errors.Is(err, io.EOF) {
				break
			}
			var tooLarge *http.MaxBytesError
			if errors.As(err, &tooLarge) {
				http.Error(w, fmt.Sprintf("batch over %d bytes", MaxBatchBytes), http.StatusRequestEntityTooLarge)
				return
			}
			if err != nil {
				http.Error(w, "bad raft message: "+err.Error(), http.StatusBadRequest)
				return
			}
			if m.GetTo() != n.id {
				http.Error(w, fmt.Sprintf("message for %d sent to %d", m.GetTo(), n.id), http.StatusBadRequest)
				return
			}
			msgs = append(msgs, m)
		}
		for _, m := range msgs {
			if err := n.Step(r.Context(), m); err != nil {
				http.Error(w, err.Error(), http.StatusServiceUnavailable)
				return
			}
		}
		w.WriteHeader(http.StatusNoContent)
	})
}
