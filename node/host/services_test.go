package host

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"testing"

	"github.com/flotilla-dev/flotilla/cluster/ipalloc"
	"github.com/flotilla-dev/flotilla/internal/testkit"
)

// TestFollowPool: an agent holds load balancer addresses only inside the
// pool the server publishes; once read, the pool is in force and the
// announcer is poked; a pool that cannot be read or parsed changes
// nothing.
func TestFollowPool(t *testing.T) {
	var text atomic.Value
	text.Store("")
	var reads atomic.Int32
	sp := &servicePlane{log: slog.New(slog.DiscardHandler), readPool: func(context.Context) (string, error) {
		reads.Add(1)
		s := text.Load().(string)
		if s == "" {
			return "", errors.New("not published yet")
		}
		return s, nil
	}}
	var pool atomic.Pointer[ipalloc.Pool]
	var pokes atomic.Int32
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() { defer close(done); sp.followPool(ctx, &pool, func() { pokes.Add(1) }) }()
	testkit.EventuallyTrue(t, "the first read", 0, func() bool { return reads.Load() > 0 })
	cancel()
	<-done
	if pool.Load() != nil || pokes.Load() != 0 {
		t.Fatalf("an unpublished pool: pool %v, %d pokes; want none", pool.Load(), pokes.Load())
	}

	text.Store("192.0.2.0/28")
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	done = make(chan struct{})
	go func() { defer close(done); sp.followPool(ctx, &pool, func() { pokes.Add(1) }) }()
	testkit.EventuallyTrue(t, "the pool is in force", 0, func() bool { return pool.Load() != nil })
	cancel()
	<-done
	want, err := ipalloc.ParsePool("192.0.2.0/28")
	if err != nil {
		t.Fatal(err)
	}
	if got := pool.Load().String(); got != want.String() || pokes.Load() != 1 {
		t.Errorf("pool %s after %d pokes, want %s after one", got, pokes.Load(), want)
	}
}
