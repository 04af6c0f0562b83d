package apiserver

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flotilla-dev/flotilla/cluster/auth"
)

// The audit log: one line of JSON per request, a Kubernetes audit event
// (audit.k8s.io/v1 Event) at the Metadata level — who asked, the verb, the
// object (resource, namespace, name), the answer's code, when; never a
// request or response body. Watches and log follows are recorded when they
// start and again when they end. Events are written by a goroutine of
// their own through a bounded queue, so a slow disk never slows a request;
// when the queue is full an event is dropped, counted, and the count logged.

// AuditEvent is Kubernetes' audit.k8s.io/v1 Event, the fields of the
// Metadata level.
type AuditEvent struct {
	Kind                     string                    `json:"kind"`
	APIVersion               string                    `json:"apiVersion"`
	Level                    string                    `json:"level"`
	AuditID                  string                    `json:"auditID"`
	Stage                    string                    `json:"stage"`
	RequestURI               string                    `json:"requestURI"`
	Verb                     string                    `json:"verb"`
	User                     authenticationv1.UserInfo `json:"user"`
	SourceIPs                []string                  `json:"sourceIPs,omitempty"`
	UserAgent                string                    `json:"userAgent,omitempty"`
	ObjectRef                *AuditObjectRef           `json:"objectRef,omitempty"`
	ResponseStatus           *metav1.Status            `json:"responseStatus,omitempty"`
	RequestReceivedTimestamp metav1.MicroTime          `json:"requestReceivedTimestamp"`
	StageTimestamp           metav1.MicroTime          `json:"stageTimestamp"`
}

// AuditObjectRef is the object a request is about.
type AuditObjectRef struct {
	Resource    string `json:"resource,omitempty"`
	Namespace   string `json:"namespace,omitempty"`
	Name        string `json:"name,omitempty"`
	APIGroup    string `json:"apiGroup,omitempty"`
	Subresource string `json:"subresource,omitempty"`
}

// The stages an event is recorded at.
const (
	StageResponseStarted  = "ResponseStarted"
	StageResponseComplete = "ResponseComplete"
)

// auditQueue is how many events may wait for the disk.
const auditQueue = 8192

// Auditor writes audit events to w in the background. Make it with
// NewAuditor; Close flushes what is queued.
type Auditor struct {
	w       io.Writer
	log     *slog.Logger
	ch      chan *AuditEvent
	dropped atomic.Int64
	done    chan struct{}

	mu     sync.RWMutex // guards closed: Record after Close drops the event
	closed bool
}

// NewAuditor starts writing events to w (a rotated file: see
// internal/logfile).
func NewAuditor(w io.Writer, log *slog.Logger) *Auditor {
	if log == nil {
		log = slog.Default()
	}
	a := &Auditor{w: w, log: log, ch: make(chan *AuditEvent, auditQueue), done: make(chan struct{})}
	go a.run()
	return a
}

func (a *Auditor) run() {
	defer close(a.done)
	enc := json.NewEncoder(a.w)
	report := time.NewTicker(10 * time.Second)
	defer report.Stop()
	for {
		select {
		case ev, ok := <-a.ch:
			if !ok {
				a.reportDropped()
				return
			}
			if err := enc.Encode(ev); err != nil {
				a.log.Warn("writing the audit log", "err", err)
			}
		case <-report.C:
			a.reportDropped()
		}
	}
}

func (a *Auditor) reportDropped() {
	if n := a.dropped.Swap(0); n > 0 {
		a.log.Warn("audit events dropped: the audit log could not keep up", "dropped", n)
	}
}

// Record queues ev; it never blocks.
func (a *Auditor) Record(ev *AuditEvent) {
	a.mu.RLock()
	defer a.mu.RUnlock()
	if a.closed {
		a.dropped.Add(1)
		return
	}
	select {
	case a.ch <- ev:
	default:
		a.dropped.Add(1)
	}
}

// Close writes what is queued and stops; later events are dropped.
func (a *Auditor) Close() {
	a.mu.Lock()
	if !a.closed {
		a.closed = true
		close(a.ch)
	}
	a.mu.Unlock()
	<-a.done
}

// auditIDs make audit IDs: a random prefix per process and a counter, as
// unique as random IDs without a read of the random source per request.
var auditIDs = struct {
	prefix string
	n      atomic.Uint64
}{prefix: func() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}()}

func newAuditID() string {
	return auditIDs.prefix + "-" + strconv.FormatUint(auditIDs.n.Add(1), 16)
}

// newAuditEvent describes r, received at start, as its user; at are its
// attributes when the authorizer already parsed them (nil: parsed here).
func newAuditEvent(r *http.Request, u *auth.User, at *auth.Attributes, start time.Time) *AuditEvent {
	ev := &AuditEvent{
		Kind: "Event", APIVersion: "audit.k8s.io/v1", Level: "Metadata", AuditID: newAuditID(),
		RequestURI: r.URL.RequestURI(), UserAgent: r.UserAgent(),
		RequestReceivedTimestamp: metav1.NewMicroTime(start),
	}
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		ev.SourceIPs = []string{host}
	}
	if u != nil {
		ev.User = *u
	}
	if at == nil {
		a := requestAttributes(r)
		at = &a
	}
	ev.Verb = at.Verb
	if at.ResourceRequest {
		ev.ObjectRef = &AuditObjectRef{Resource: at.Resource, Namespace: at.Namespace, Name: at.Name,
			APIGroup: at.APIGroup, Subresource: at.Subresource}
	}
	return ev
}

// audit records every request that reaches it (authenticated or not) when
// it ends, and long-running ones (watches, log follows) when they start.
func (s *Server) audit(next http.Handler) http.Handler {
	if s.cfg.Audit == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if openPaths[r.URL.Path] {
			next.ServeHTTP(w, r) // health probes and /version: not audited
			return
		}
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w}
		next.ServeHTTP(rec, r)
		ev := newAuditEvent(r, rec.user, rec.at, start)
		code := rec.code
		if code == 0 {
			code = http.StatusOK
		}
		ev.Stage = StageResponseComplete
		ev.ResponseStatus = &metav1.Status{Code: int32(code)}
		ev.StageTimestamp = metav1.NewMicroTime(time.Now())
		s.cfg.Audit.Record(ev)
	})
}

// auditStarted records that a long-running request (a watch, a log
// follow) has started, as Kubernetes' ResponseStarted stage.
func (s *Server) auditStarted(r *http.Request) {
	if s.cfg.Audit == nil {
		return
	}
	ev := newAuditEvent(r, auth.UserFrom(r.Context()), nil, time.Now())
	ev.Stage = StageResponseStarted
	ev.ResponseStatus = &metav1.Status{Code: http.StatusOK}
	ev.StageTimestamp = ev.RequestReceivedTimestamp
	s.cfg.Audit.Record(ev)
}

// statusRecorder remembers the status code a handler answered, who the
// request was (set by authenticate, which runs inside) and its attributes
// (set by authorize).
type statusRecorder struct {
	http.ResponseWriter
	code int
	user *auth.User
	at   *auth.Attributes
}

func (r *statusRecorder) WriteHeader(code int) {
	if r.code == 0 {
		r.code = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(b []byte) (int, error) {
	if r.code == 0 {
		r.code = http.StatusOK
	}
	return r.ResponseWriter.Write(b)
}

// Flush keeps watches and log follows streaming.
func (r *statusRecorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Hijack hands the connection to a stream upgrade (exec, attach,
// port-forward), which the stream libraries ask for directly.
func (r *statusRecorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	h, ok := r.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("this connection cannot be upgraded")
	}
	if r.code == 0 {
		r.code = http.StatusSwitchingProtocols
	}
	return h.Hijack()
}

// Unwrap lets http.ResponseController reach the connection.
func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }
