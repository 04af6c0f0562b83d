package gossip

import (
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/flotilla-dev/flotilla/internal/testkit"
)

// testLogger logs to t.Log at info, or debug (memberlist's lines too) when
// FLOTILLA_TEST_DEBUG is set.
func testLogger(tb testing.TB) *slog.Logger {
	level := slog.LevelInfo
	if os.Getenv("FLOTILLA_TEST_DEBUG") != "" {
		level = slog.LevelDebug
	}
	return testkit.LoggerAt(tb, level)
}

func newKey(tb testing.TB) []byte {
	tb.Helper()
	k := make([]byte, KeySize)
	if _, err := rand.Read(k); err != nil {
		tb.Fatal(err)
	}
	return k
}

// agentMeta is a full, valid Meta for the i-th test node.
func agentMeta(i int) Meta {
	return Meta{
		Role:     RoleAgent,
		TunnelIP: fmt.Sprintf("192.0.2.%d", i),
		PodCIDR:  fmt.Sprintf("10.244.%d.0/24", i),
		VTEPMAC:  fmt.Sprintf("02:00:00:00:00:%02x", i),
	}
}

// newMember starts a member on a free loopback port; it is shut down when
// the test ends.
func newMember(tb testing.TB, name string, key []byte, meta Meta) *Membership {
	tb.Helper()
	m, err := New(Config{
		NodeName: name,
		BindAddr: "127.0.0.1",
		BindPort: AnyPort,
		Key:      key,
		Meta:     meta,
		Logger:   testLogger(tb),
	})
	if err != nil {
		tb.Fatalf("New(%s): %v", name, err)
	}
	tb.Cleanup(func() { _ = m.Shutdown() })
	return m
}

func addrOf(m *Membership) string { return m.Local().Addr.String() }

// startCluster starts n members named node-1… and joins them all through the
// first; it waits until every member sees all n.
func startCluster(tb testing.TB, n int, key []byte) []*Membership {
	tb.Helper()
	ms := make([]*Membership, n)
	for i := range ms {
		ms[i] = newMember(tb, fmt.Sprintf("node-%d", i+1), key, agentMeta(i+1))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, m := range ms[1:] {
		if err := m.Join(ctx, []string{addrOf(ms[0])}); err != nil {
			tb.Fatalf("Join: %v", err)
		}
	}
	for _, m := range ms {
		testkit.EventuallyTrue(tb, fmt.Sprintf("%s sees %d members", m.Local().Name, n), 30*time.Second, func() bool {
			return len(m.Members()) == n
		})
	}
	return ms
}

// waitEvent reads ch until an event matches, failing after within. It
// returns the matching event and the ones skipped before it.
func waitEvent(tb testing.TB, ch <-chan Event, within time.Duration, what string, match func(Event) bool) (Event, []Event) {
	tb.Helper()
	timer := time.NewTimer(within)
	defer timer.Stop()
	var skipped []Event
	for {
		select {
		case ev, ok := <-ch:
			if !ok {
				tb.Fatalf("event channel closed while waiting for %s (skipped %v)", what, skipped)
			}
			if match(ev) {
				return ev, skipped
			}
			skipped = append(skipped, ev)
		case <-timer.C:
			tb.Fatalf("timed out after %s waiting for %s (skipped %v)", within, what, skipped)
		}
	}
}

func isEvent(t EventType, name string) func(Event) bool {
	return func(ev Event) bool { return ev.Type == t && ev.Member.Name == name }
}
