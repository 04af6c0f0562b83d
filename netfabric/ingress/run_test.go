package ingress

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flotilla-dev/flotilla/internal/testkit"
)

func TestNewConfig(t *testing.T) {
	p, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	if p.cfg.HTTPAddr != ":80" || p.cfg.HTTPSAddr != ":443" || p.cfg.ClassName != "flotilla" {
		t.Errorf("defaults = %+v", p.cfg)
	}
	if p.defaultCert.Leaf.Subject.CommonName != DefaultCertName {
		t.Errorf("default certificate %q", p.defaultCert.Leaf.Subject.CommonName)
	}
	for _, c := range []struct {
		cfg  Config
		want string
	}{
		{Config{HTTPAddr: "80"}, "--ingress-http-addr"},
		{Config{HTTPSAddr: "localhost"}, "--ingress-https-addr"},
		{Config{HTTPAddr: Off, HTTPSAddr: Off}, "nothing to serve"},
	} {
		if _, err := New(c.cfg); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("New(%+v) = %v, want an error naming %q", c.cfg, err, c.want)
		}
	}
}

func TestRunAddressInUse(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	addr := taken.Addr().String()
	for _, c := range []struct {
		cfg  Config
		flag string
	}{
		{Config{HTTPAddr: addr, HTTPSAddr: Off}, "--ingress-http-addr"},
		{Config{HTTPAddr: "127.0.0.1:0", HTTPSAddr: addr}, "--ingress-https-addr"},
	} {
		c.cfg.Logger = testLogger(t)
		p, err := New(c.cfg)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		start := time.Now()
		err = p.Run(ctx)
		cancel()
		if err == nil {
			t.Fatalf("Run on %s (in use): no error", addr)
		}
		t.Log(err)
		for _, want := range []string{addr, "in use", c.flag} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("Run error %q does not name %q", err, want)
			}
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("Run took %v to report the error", d)
		}
	}
}

func TestRunStopsWithContext(t *testing.T) {
	var serving atomic.Int32
	logger := slog.New(servingCounter{testLogger(t).Handler(), &serving})
	p, err := New(Config{HTTPAddr: "127.0.0.1:0", HTTPSAddr: "127.0.0.1:0", Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	testkit.EventuallyTrue(t, "Run serving HTTP and HTTPS", 0, func() bool { return serving.Load() == 2 })
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run after cancel = %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
}

func TestRateLimiter(t *testing.T) {
	now := time.Unix(0, 0)
	l := newRateLimiter(30*time.Second, func() time.Time { return now })
	if ok, _ := l.allow("a"); !ok {
		t.Fatal("first event suppressed")
	}
	for range 3 {
		now = now.Add(time.Second)
		if ok, _ := l.allow("a"); ok {
			t.Fatal("event within the interval let through")
		}
	}
	if ok, _ := l.allow("b"); !ok {
		t.Fatal("another key's first event suppressed")
	}
	now = now.Add(30 * time.Second)
	if ok, n := l.allow("a"); !ok || n != 3 {
		t.Fatalf("after the interval: allow = %v, suppressed %d; want true, 3", ok, n)
	}
}

// servingCounter counts the proxy's "serving ingress" lines: one per
// listener, once it is open.
type servingCounter struct {
	slog.Handler
	n *atomic.Int32
}

func (h servingCounter) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == "serving ingress" {
		h.n.Add(1)
	}
	return h.Handler.Handle(ctx, r)
}

func (h servingCounter) WithAttrs(as []slog.Attr) slog.Handler {
	return servingCounter{h.Handler.WithAttrs(as), h.n}
}

func (h servingCounter) WithGroup(name string) slog.Handler {
	return servingCounter{h.Handler.WithGroup(name), h.n}
}
