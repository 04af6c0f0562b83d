package apiserver

import (
	"bufio"
	"bytes"
	"errors"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	gwebsocket "github.com/gorilla/websocket"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/httpstream"
	"k8s.io/apimachinery/pkg/util/httpstream/spdy"
	pfconst "k8s.io/apimachinery/pkg/util/portforward"
	"k8s.io/client-go/tools/portforward"
)

// Port-forward over WebSocket, the way kubectl 1.31 and later ask for it
// first: the WebSocket carries a SPDY session in binary messages
// (sub-protocol SPDY/3.1+portforward.k8s.io, client-go's tunneling
// connection). The server asks the node for the SPDY upgrade as it does
// for an older kubectl, and accepts the WebSocket only once the node has
// switched protocols, so a refusal reaches kubectl as an HTTP error (and
// kubectl falls back to SPDY itself). Then the bytes go both ways
// unchanged: only the framing on the client's side differs.

// tunnelProtocols are the SPDY protocols a WebSocket port-forward request
// offers to tunnel (portforward.k8s.io for SPDY/3.1+portforward.k8s.io).
func tunnelProtocols(r *http.Request) []string {
	var out []string
	for _, p := range gwebsocket.Subprotocols(r) {
		if strings.HasPrefix(p, pfconst.WebsocketsSPDYTunnelingPrefix) && strings.HasSuffix(p, pfconst.KubernetesSuffix) {
			out = append(out, strings.TrimPrefix(p, pfconst.WebsocketsSPDYTunnelingPrefix))
		}
	}
	return out
}

// spdyUpgradeRequest turns the node-bound copy of a WebSocket tunnel
// request into the SPDY upgrade the node serves.
func spdyUpgradeRequest(r *http.Request, protocols []string) *http.Request {
	r2 := r.Clone(r.Context())
	r2.Method, r2.Body, r2.ContentLength = http.MethodPost, http.NoBody, 0
	r2.Header = r.Header.Clone()
	for k := range r2.Header {
		if strings.HasPrefix(k, "Sec-Websocket") {
			r2.Header.Del(k)
		}
	}
	r2.Header.Set(httpstream.HeaderConnection, httpstream.HeaderUpgrade)
	r2.Header.Set(httpstream.HeaderUpgrade, spdy.HeaderSpdy31)
	r2.Header[httpstream.HeaderProtocolVersion] = protocols
	return r2
}

// tunnelWriter is the response writer the SPDY upgrade is served on. It
// passes an answer other than 101 to the client as it is; on 101 it
// upgrades the client's connection to the WebSocket and hands out the
// tunnel as the hijacked connection. Both ways to the node end here: a
// proxy (NodeLogs) writes the node's raw 101 response on the hijacked
// connection, the agent in process calls WriteHeader(101) and hijacks.
type tunnelWriter struct {
	w      http.ResponseWriter
	r      *http.Request // the client's WebSocket request
	header http.Header

	mu                sync.Mutex
	wrote, hijacked   bool
	upgradeOnHijack   bool   // WriteHeader(101) came first (the agent in process)
	upgradedProtocols string // the SPDY protocol the node chose
}

func newTunnelWriter(w http.ResponseWriter, r *http.Request) *tunnelWriter {
	return &tunnelWriter{w: w, r: r, header: http.Header{}}
}

func (t *tunnelWriter) Header() http.Header { return t.header }

func (t *tunnelWriter) WriteHeader(code int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.wrote || t.hijacked {
		return
	}
	if code == http.StatusSwitchingProtocols {
		t.upgradeOnHijack = true
		t.upgradedProtocols = t.header.Get(httpstream.HeaderProtocolVersion)
		return
	}
	t.wrote = true
	for k, v := range t.header {
		t.w.Header()[k] = v
	}
	t.w.WriteHeader(code)
}

func (t *tunnelWriter) Write(b []byte) (int, error) {
	t.mu.Lock()
	wrote, hijacked := t.wrote, t.hijacked
	t.mu.Unlock()
	if hijacked {
		return 0, http.ErrHijacked
	}
	if !wrote {
		t.WriteHeader(http.StatusOK)
	}
	return t.w.Write(b)
}

func (t *tunnelWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.wrote || t.hijacked {
		return nil, nil, errors.New("the response has already been written or handed over")
	}
	t.hijacked = true
	var conn net.Conn
	if t.upgradeOnHijack {
		tc, err := t.upgrade(t.upgradedProtocols)
		if err != nil {
			return nil, nil, err
		}
		conn = tc
	} else {
		conn = &headConn{t: t, ready: make(chan struct{})}
	}
	return conn, bufio.NewReadWriter(bufio.NewReader(conn), bufio.NewWriter(conn)), nil
}

// upgrade accepts the client's WebSocket, with the tunneled form of the
// SPDY protocol the node chose.
func (t *tunnelWriter) upgrade(protocol string) (net.Conn, error) {
	var offer []string
	if protocol != "" {
		offer = []string{pfconst.WebsocketsSPDYTunnelingPrefix + protocol}
	}
	up := gwebsocket.Upgrader{Subprotocols: offer, CheckOrigin: func(*http.Request) bool { return true }}
	ws, err := up.Upgrade(t.w, t.r, nil)
	if err != nil {
		return nil, err
	}
	return portforward.NewTunnelingConnection("server", ws), nil
}

// headConn is the hijacked connection a proxy writes the node's answer
// on: it reads the answer's head, then becomes the WebSocket tunnel (101)
// or the client's plain connection (anything else, passed on as it is).
// Reads wait until then.
type headConn struct {
	t     *tunnelWriter
	head  []byte
	ready chan struct{} // closed once conn or err is set

	mu   sync.Mutex
	conn net.Conn
	err  error
}

// maxHeadBytes bounds the node's response head.
const maxHeadBytes = 64 << 10

func (c *headConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn != nil {
		return c.conn.Write(b)
	}
	if c.err != nil {
		return 0, c.err
	}
	c.head = append(c.head, b...)
	end := bytes.Index(c.head, []byte("\r\n\r\n"))
	if end < 0 {
		if len(c.head) > maxHeadBytes {
			return 0, c.fail(errors.New("the node's response head is too long"), true)
		}
		return len(b), nil
	}
	head, rest := c.head[:end+4], c.head[end+4:]
	c.head = nil
	resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(head)), nil)
	if err != nil {
		return 0, c.fail(err, true)
	}
	_ = resp.Body.Close()
	var conn net.Conn
	if resp.StatusCode == http.StatusSwitchingProtocols && strings.EqualFold(resp.Header.Get(httpstream.HeaderUpgrade), spdy.HeaderSpdy31) {
		conn, err = c.t.upgrade(resp.Header.Get(httpstream.HeaderProtocolVersion))
	} else {
		// The node refused: its answer goes to the client as it is.
		conn, _, err = http.NewResponseController(c.t.w).Hijack()
		if err == nil {
			_, err = conn.Write(head)
		}
	}
	if err != nil {
		// The upgrader answered the client itself, or the connection
		// is already handed over: nothing more to write.
		return 0, c.fail(err, false)
	}
	c.conn = conn
	close(c.ready)
	if len(rest) > 0 {
		if _, err := conn.Write(rest); err != nil {
			return 0, err
		}
	}
	return len(b), nil
}

// fail ends the connection before it is set up, answering the client
// with a 502 if answer; c.mu is held.
func (c *headConn) fail(err error, answer bool) error {
	if c.err == nil {
		c.err = err
		close(c.ready)
		if answer {
			e := newError(http.StatusBadGateway, metav1.StatusReasonServiceUnavailable, "port-forward through the pod's node: %v", err)
			writeJSON(c.t.w, http.StatusBadGateway, e.status)
		}
	}
	return err
}

func (c *headConn) Read(b []byte) (int, error) {
	<-c.ready
	c.mu.Lock()
	conn, err := c.conn, c.err
	c.mu.Unlock()
	if conn == nil {
		return 0, err
	}
	return conn.Read(b)
}

func (c *headConn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn != nil {
		return c.conn.Close()
	}
	c.fail(net.ErrClosed, false)
	return nil
}

// current is the connection once set up, nil before.
func (c *headConn) current() net.Conn {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.conn
}

func (c *headConn) LocalAddr() net.Addr {
	if conn := c.current(); conn != nil {
		return conn.LocalAddr()
	}
	return &net.TCPAddr{}
}

func (c *headConn) RemoteAddr() net.Addr {
	if conn := c.current(); conn != nil {
		return conn.RemoteAddr()
	}
	return &net.TCPAddr{}
}

func (c *headConn) SetDeadline(t time.Time) error {
	if conn := c.current(); conn != nil {
		return conn.SetDeadline(t)
	}
	return nil
}

func (c *headConn) SetReadDeadline(t time.Time) error {
	if conn := c.current(); conn != nil {
		return conn.SetReadDeadline(t)
	}
	return nil
}

func (c *headConn) SetWriteDeadline(t time.Time) error {
	if conn := c.current(); conn != nil {
		return conn.SetWriteDeadline(t)
	}
	return nil
}
