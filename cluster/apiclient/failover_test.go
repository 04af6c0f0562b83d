package apiclient_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/flotilla-dev/flotilla/cluster/apiclient"
	"github.com/flotilla-dev/flotilla/cluster/store"
)

// fakeAPI is a plain HTTP server that answers every GET with an empty list
// at revision 7 and every other request with its own body, and counts the
// requests it got.
type fakeAPI struct {
	*httptest.Server
	hits atomic.Int32
}

func newFakeAPI(t *testing.T) *fakeAPI {
	t.Helper()
	f := &fakeAPI{}
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.hits.Add(1)
		w.Header().Set("Content-Type", "application/json")
		if r.Method == http.MethodGet {
			_, _ = io.WriteString(w, `{"metadata":{"resourceVersion":"7"},"items":[]}`)
			return
		}
		body, _ := io.ReadAll(r.Body)
		w.WriteHeader(http.StatusCreated)
		_, _ = w.Write(body)
	}))
	t.Cleanup(f.Close)
	return f
}

// closedURL is the URL of a port that nothing listens on: a dial there is
// refused.
func closedURL(t *testing.T, scheme string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	return scheme + "://" + ln.Addr().String()
}

func newClient(t *testing.T, cfg apiclient.Config) *apiclient.Client {
	t.Helper()
	c, err := apiclient.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func list(c *apiclient.Client) error {
	_, _, err := c.List(context.Background(), "pods", store.ListOptions{})
	return err
}

// TestFailoverOnDialError: a request that cannot connect to the current
// server goes to the next one, a POST too (nothing was sent); the one that
// answered becomes current, and later requests go straight to it.
func TestFailoverOnDialError(t *testing.T) {
	dead := closedURL(t, "http")
	a, b := newFakeAPI(t), newFakeAPI(t)
	c := newClient(t, apiclient.Config{Server: dead, Servers: []string{a.URL, b.URL}})
	if c.Server() != dead {
		t.Fatalf("at first Server() = %s, want %s", c.Server(), dead)
	}
	if _, err := c.Create(context.Background(), newPod("default", "web", nil)); err != nil {
		t.Fatalf("a POST when the first server refuses: %v", err)
	}
	if a.hits.Load() != 1 || b.hits.Load() != 0 || c.Server() != a.URL {
		t.Fatalf("after the POST: a %d, b %d requests, current %s; want 1, 0, %s", a.hits.Load(), b.hits.Load(), c.Server(), a.URL)
	}
	if err := list(c); err != nil || a.hits.Load() != 2 {
		t.Fatalf("a GET after the failover: %v, a has %d requests, want it straight to a", err, a.hits.Load())
	}
	a.Close()
	if err := list(c); err != nil || b.hits.Load() != 1 || c.Server() != b.URL {
		t.Fatalf("with a gone too: %v, b %d requests, current %s", err, b.hits.Load(), c.Server())
	}
}

// TestNoRetryOnceSent: a connection lost after the request was written
// may have reached the server: a POST is not sent again elsewhere, a GET
// is.
func TestNoRetryOnceSent(t *testing.T) {
	hangup := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.ReadAll(r.Body)
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			conn.Close()
		}
	}))
	t.Cleanup(hangup.Close)
	ok := newFakeAPI(t)
	c := newClient(t, apiclient.Config{Server: hangup.URL, Servers: []string{ok.URL}})

	_, err := c.Create(context.Background(), newPod("default", "web", nil))
	var se *apiclient.StatusError
	if err == nil || errors.As(err, &se) {
		t.Fatalf("a POST cut off after it was sent: %v, want the transport's error", err)
	}
	if ok.hits.Load() != 0 || c.Server() != hangup.URL {
		t.Fatalf("the POST was sent again elsewhere (%d requests there; current %s)", ok.hits.Load(), c.Server())
	}
	if err := list(c); err != nil || ok.hits.Load() != 1 || c.Server() != ok.URL {
		t.Fatalf("a GET cut off: %v, %d requests to the next server, current %s; want it retried there", err, ok.hits.Load(), c.Server())
	}
}

// TestErrorStatusNotRetried: a server that answers, even 503, answered:
// its error is returned and no other server is asked.
func TestErrorStatusNotRetried(t *testing.T) {
	busy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = io.WriteString(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","message":"no leader","reason":"ServiceUnavailable","code":503}`)
	}))
	t.Cleanup(busy.Close)
	ok := newFakeAPI(t)
	c := newClient(t, apiclient.Config{Server: busy.URL, Servers: []string{ok.URL}})
	err := list(c)
	var se *apiclient.StatusError
	if !errors.As(err, &se) || se.Code() != http.StatusServiceUnavailable || err.Error() != "no leader" {
		t.Fatalf("got %v, want the server's 503", err)
	}
	if ok.hits.Load() != 0 || c.Server() != busy.URL {
		t.Fatalf("an error status was retried elsewhere (%d requests; current %s)", ok.hits.Load(), c.Server())
	}
}

// noLeaderStatus is what a server that knows no leader of the store
// answers (apiserver's Status for raftlog.ErrNoLeader).
const noLeaderStatus = `{"kind":"Status","apiVersion":"v1","status":"Failure","message":"no leader","reason":"ServiceUnavailable",` +
	`"details":{"causes":[{"reason":"flotilla.dev/NoLeader"}],"retryAfterSeconds":1},"code":503}`

// TestNoLeaderMovesOn: a server cut off from the store's majority did
// nothing; a request it answered "no leader", a POST too, goes to the next
// server, which becomes current: later requests do not wait for the
// cut-off server's answer first. When every server says so, the last one's answer is returned,
// and IsNoLeader tells it.
func TestNoLeaderMovesOn(t *testing.T) {
	var cutHits atomic.Int32
	cut := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cutHits.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = io.WriteString(w, noLeaderStatus)
	}))
	t.Cleanup(cut.Close)
	ok := newFakeAPI(t)
	c := newClient(t, apiclient.Config{Server: cut.URL, Servers: []string{ok.URL}})
	if _, err := c.Create(context.Background(), newPod("default", "p", nil)); err != nil || ok.hits.Load() != 1 {
		t.Fatalf("a POST answered no leader: %v, %d requests to the next server; want it sent there", err, ok.hits.Load())
	}
	if err := list(c); err != nil || ok.hits.Load() != 2 || cutHits.Load() != 1 || c.Server() != ok.URL {
		t.Fatalf("after a no-leader answer: %v, %d and %d requests, current %s; want the next server current",
			err, cutHits.Load(), ok.hits.Load(), c.Server())
	}

	alone := newClient(t, apiclient.Config{Server: cut.URL, Servers: []string{cut.URL}})
	err := list(alone)
	var se *apiclient.StatusError
	if !errors.As(err, &se) || se.Code() != http.StatusServiceUnavailable || !apiclient.IsNoLeader(err) {
		t.Fatalf("every server without a leader: got %v, want its 503 that IsNoLeader tells", err)
	}
	if apiclient.IsNoLeader(errors.New("no leader")) || apiclient.IsNoLeader(&apiclient.StatusError{}) {
		t.Fatal("IsNoLeader holds for an error without the cause")
	}
}

// TestSetServers: fallbacks given at run time are used; repeats are
// dropped; an invalid URL changes nothing; dropping the current server
// makes Config.Server current again. When no server answers, the error
// names each and is still a dial error.
func TestSetServers(t *testing.T) {
	dead := closedURL(t, "http")
	ok := newFakeAPI(t)
	c := newClient(t, apiclient.Config{Server: dead})
	err := list(c)
	var op *net.OpError
	if !errors.As(err, &op) || op.Op != "dial" {
		t.Fatalf("one server, refused: %v, want a dial error", err)
	}

	if err := c.SetServers([]string{ok.URL, ok.URL + "/", dead}); err != nil {
		t.Fatal(err)
	}
	if err := list(c); err != nil || c.Server() != ok.URL || ok.hits.Load() != 1 {
		t.Fatalf("with a fallback: %v, current %s, %d requests", err, c.Server(), ok.hits.Load())
	}
	if err := c.SetServers([]string{"ftp://x", ok.URL}); err == nil || !strings.Contains(err.Error(), "ftp://x") {
		t.Fatalf("an invalid URL: %v", err)
	}
	if err := list(c); err != nil || c.Server() != ok.URL {
		t.Fatalf("after a refused SetServers: %v, current %s", err, c.Server())
	}
	if err := c.SetServers(nil); err != nil || c.Server() != dead {
		t.Fatalf("without fallbacks: %v, current %s, want %s", err, c.Server(), dead)
	}

	dead2 := closedURL(t, "http")
	c = newClient(t, apiclient.Config{Server: dead, Servers: []string{dead2}})
	err = list(c)
	if !errors.As(err, &op) || !strings.Contains(err.Error(), strings.TrimPrefix(dead, "http://")) ||
		!strings.Contains(err.Error(), strings.TrimPrefix(dead2, "http://")) {
		t.Fatalf("no server answers: %v, want a dial error naming both", err)
	}
	if _, err := apiclient.New(apiclient.Config{Server: ok.URL, Servers: []string{"not a url"}}); err == nil {
		t.Fatal("New accepted an invalid fallback")
	}
}

// TestFailoverConcurrent: requests in flight while the fallbacks change
// all reach a server (run with -race).
func TestFailoverConcurrent(t *testing.T) {
	dead := closedURL(t, "http")
	a, b := newFakeAPI(t), newFakeAPI(t)
	c := newClient(t, apiclient.Config{Server: dead, Servers: []string{a.URL}})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		sets := [][]string{{b.URL}, {a.URL, b.URL}, {a.URL}, {b.URL, a.URL}}
		for i := range 400 {
			if err := c.SetServers(sets[i%len(sets)]); err != nil {
				t.Error(err)
				return
			}
			_ = c.Server()
			runtime.Gosched()
		}
	}()
	var reqs sync.WaitGroup
	for g := range 8 {
		reqs.Add(1)
		go func() {
			defer reqs.Done()
			for i := range 40 {
				var err error
				if (g+i)%4 == 0 {
					_, err = c.Create(context.Background(), newPod("default", "web", nil))
				} else {
					err = list(c)
				}
				if err != nil {
					t.Errorf("request %d of %d: %v", i, g, err)
					return
				}
			}
		}()
	}
	reqs.Wait()
	wg.Wait()
	if got := a.hits.Load() + b.hits.Load(); got != 8*40 {
		t.Errorf("%d requests reached a server, want %d", got, 8*40)
	}
}

// TestWatchThroughFallback: a watch (its revision read, then the stream)
// goes to the server that answers, over TLS with one CA for all servers.
func TestWatchThroughFallback(t *testing.T) {
	url, caPEM := serveAPI(t, store.MemoryFor(t), nil)
	dead := closedURL(t, "https")
	c := newClient(t, apiclient.Config{Server: dead, Servers: []string{url}, CAData: caPEM, Token: token})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := c.Watch(ctx, "pods", store.ListOptions{Namespace: "default"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if c.Server() != url {
		t.Fatalf("current %s, want %s", c.Server(), url)
	}
	if _, err := c.Create(ctx, newPod("default", "a", nil)); err != nil {
		t.Fatal(err)
	}
	if ev := next(t, ch); ev.Type != store.Added || ev.Object.GetName() != "a" {
		t.Fatalf("event %+v", ev)
	}
}
