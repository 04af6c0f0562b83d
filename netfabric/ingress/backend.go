package ingress

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"sync"
	"sync/atomic"
	"time"
)

// pool is one backend of the table: the ready endpoints of one service
// port, or why there are none.
type pool struct {
	service     string   // "namespace/name", for messages
	addrs       []string // "ip:port" of the ready endpoints, sorted
	unavailable string   // non-empty: answer 503 with this text
	next        atomic.Uint64
	rp          *httputil.ReverseProxy // set by Update before the table is published
}

// pick chooses the endpoint of the next request, round-robin.
func (pl *pool) pick() string {
	if len(pl.addrs) == 1 {
		return pl.addrs[0]
	}
	n := pl.next.Add(1) - 1
	return pl.addrs[n%uint64(len(pl.addrs))]
}

// newTransport is the keep-alive transport to endpoints, shared by every
// pool. Environment proxies are never used: endpoints are pod addresses.
func newTransport() *http.Transport {
	d := &net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}
	return &http.Transport{
		DialContext:           d.DialContext,
		MaxIdleConns:          512,
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       backendIdleTimeout,
		ResponseHeaderTimeout: responseHeaderTimeout,
		ExpectContinueTimeout: time.Second,
		// Pass bodies through as the endpoint encoded them: the client
		// asked for what it can read.
		DisableCompression: true,
	}
}

// reverseProxy forwards to pl's endpoints. The Host header is the
// client's; X-Forwarded-For, -Host and -Proto are set from the client's
// request (any the client sent are dropped, so a backend may trust them).
func (p *Proxy) reverseProxy(pl *pool) *httputil.ReverseProxy {
	if pl.unavailable != "" {
		return nil
	}
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme = "http"
			pr.Out.URL.Host = pl.pick()
			pr.SetXForwarded()
		},
		Transport: p.transport,
		ErrorLog:  p.debugLog,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if r.Context().Err() != nil || errors.Is(err, context.Canceled) {
				// The client left; nobody reads the answer.
				w.WriteHeader(499)
				return
			}
			if ok, suppressed := p.errLimit.allow(pl.service); ok {
				p.log.Warn("backend request failed", "service", pl.service, "err", err, "suppressed", suppressed)
			}
			plainError(w, http.StatusBadGateway, fmt.Sprintf("bad gateway: service %s did not answer", pl.service))
		},
	}
}

// rateLimiter lets one event per key through every interval and counts
// the rest.
type rateLimiter struct {
	every time.Duration
	now   func() time.Time

	mu   sync.Mutex
	last map[string]*limited
}

type limited struct {
	at         time.Time
	suppressed int
}

func newRateLimiter(every time.Duration, now func() time.Time) *rateLimiter {
	return &rateLimiter{every: every, now: now, last: map[string]*limited{}}
}

// allow reports whether an event of key may be logged now and how many
// were suppressed since the last one that was.
func (l *rateLimiter) allow(key string) (bool, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	e := l.last[key]
	if e == nil {
		if len(l.last) >= 4096 { // services come and go: forget them all now and then
			clear(l.last)
		}
		l.last[key] = &limited{at: now}
		return true, 0
	}
	if now.Sub(e.at) < l.every {
		e.suppressed++
		return false, 0
	}
	n := e.suppressed
	e.at, e.suppressed = now, 0
	return true, n
}
