package store

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// next receives one event or fails after a timeout.
func next(t *testing.T, w <-chan Event) Event {
	t.Helper()
	select {
	case ev, ok := <-w:
		if !ok {
			t.Fatal("watch channel closed")
		}
		return ev
	case <-time.After(5 * time.Second):
		t.Fatal("no event within 5s")
	}
	return Event{}
}

// closed waits for the channel to close, discarding events.
func closed(t *testing.T, w <-chan Event) {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case _, ok := <-w:
			if !ok {
				return
			}
		case <-deadline:
			t.Fatal("watch channel not closed within 5s")
		}
	}
}

// TestWatchSelectorMoves pins the documented filter semantics: an object
// that enters a selector by a change arrives as MODIFIED, one that leaves it
// is not delivered, and a deletion is delivered if the last state matched.
func TestWatchSelectorMoves(t *testing.T) {
	ctx := context.Background()
	s := MemoryFor(t)
	w, err := s.Watch(ctx, "pods", ListOptions{LabelSelector: "app=db"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	p := mustCreate(t, s, pod("a", "p1", map[string]string{"app": "web"}, ""))
	p.Labels["app"] = "db"
	p2, err := s.Update(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	p2.SetLabels(map[string]string{"app": "web"})
	if _, err := s.Update(ctx, p2); err != nil {
		t.Fatal(err)
	}
	mustCreate(t, s, pod("a", "q", map[string]string{"app": "db"}, ""))
	if _, err := s.Delete(ctx, "pods", "a", "p1", DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Delete(ctx, "pods", "a", "q", DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	for i, want := range []string{"MODIFIED p1 2", "ADDED q 4", "DELETED q 6"} {
		ev := next(t, w)
		if got := fmt.Sprintf("%s %s %d", ev.Type, ev.Object.GetName(), ev.Revision); got != want {
			t.Errorf("event %d: %s, want %s", i, got, want)
		}
	}
}

func TestWatchCompacted(t *testing.T) {
	ctx := context.Background()
	s, err := Open(Config{History: 10})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for i := range 11 {
		mustCreate(t, s, pod("ns", fmt.Sprintf("p%d", i), nil, ""))
	}
	// 11 < 10 + 10/10: nothing trimmed yet.
	if _, err := s.Watch(ctx, "pods", ListOptions{}, 1); err != nil {
		t.Fatalf("watch from 1 before trim: %v", err)
	}
	mustCreate(t, s, pod("ns", "p11", nil, "")) // revision 12 trims to 2
	if _, err := s.Watch(ctx, "pods", ListOptions{}, 1); !errors.Is(err, ErrCompacted) {
		t.Fatalf("watch from 1: %v, want ErrCompacted", err)
	}
	w, err := s.Watch(ctx, "pods", ListOptions{}, 2)
	if err != nil {
		t.Fatalf("watch from the oldest kept: %v", err)
	}
	if ev := next(t, w); ev.Revision != 3 {
		t.Errorf("first replayed revision %d, want 3", ev.Revision)
	}
}

func TestWatchSlowReceiverClosed(t *testing.T) {
	ctx := context.Background()
	s, err := Open(Config{WatchBuffer: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	slow, err := s.Watch(ctx, "pods", ListOptions{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	fast, err := s.Watch(ctx, "pods", ListOptions{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan int)
	go func() {
		n := 0
		for range fast {
			n++
		}
		done <- n
	}()
	start := time.Now()
	for i := range 50 {
		mustCreate(t, s, pod("ns", fmt.Sprintf("p%d", i), nil, ""))
		if i == 25 {
			time.Sleep(50 * time.Millisecond) // let the fast one catch up
		}
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("writes took %v: a slow watcher blocked them", d)
	}
	closed(t, slow)
	s.Close()
	if n := <-done; n < 1 {
		t.Errorf("fast watcher got %d events", n)
	}
}

func TestWatchEnds(t *testing.T) {
	s := MemoryFor(t)
	ctx, cancel := context.WithCancel(context.Background())
	w, err := s.Watch(ctx, "pods", ListOptions{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	closed(t, w)

	w, err = s.Watch(context.Background(), "pods", ListOptions{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	mustCreate(t, s, pod("ns", "p", nil, "")) // never received
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	closed(t, w)
	if _, err := s.Watch(context.Background(), "pods", ListOptions{}, 0); !errors.Is(err, ErrClosed) {
		t.Errorf("watch after close: %v, want ErrClosed", err)
	}
	if _, err := s.Watch(context.Background(), "widgets", ListOptions{}, 0); !errors.Is(err, ErrInvalid) {
		t.Errorf("watch unknown resource: %v, want ErrInvalid", err)
	}
}

// TestWatchReplayTrimmed: when the history is trimmed past a replay that is
// still running, the watch ends (the receiver relists); it never skips.
func TestWatchReplayTrimmed(t *testing.T) {
	ctx := context.Background()
	s, err := Open(Config{History: 1000, WatchBuffer: 10000})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for i := range 1050 { // below 1000 + 1000/10: nothing trimmed
		mustCreate(t, s, pod("ns", fmt.Sprintf("p%d", i), nil, ""))
	}
	w, err := s.Watch(ctx, "pods", ListOptions{}, 1)
	if err != nil {
		t.Fatal(err)
	}
	if ev := next(t, w); ev.Revision != 2 {
		t.Fatalf("first revision %d, want 2", ev.Revision)
	}
	for i := range 600 { // trims to revision 600
		mustCreate(t, s, pod("ns", fmt.Sprintf("q%d", i), nil, ""))
	}
	want := int64(3)
	for ev := range w {
		if ev.Revision != want {
			t.Fatalf("revision %d, want %d", ev.Revision, want)
		}
		want++
	}
	if want > 600 {
		t.Errorf("watch went on to revision %d past the trimmed history", want-1)
	}
}

func TestTrimDeletesEvents(t *testing.T) {
	s, err := Open(Config{History: 10})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	count := func() (n int) {
		_ = s.view(func(btx *badger.Txn) error {
			it := btx.NewIterator(badger.IteratorOptions{Prefix: eventPrefix})
			defer it.Close()
			for it.Rewind(); it.Valid(); it.Next() {
				n++
			}
			return nil
		})
		return n
	}
	for i := range 11 {
		mustCreate(t, s, pod("ns", fmt.Sprintf("p%d", i), nil, ""))
	}
	if n := count(); n != 11 {
		t.Errorf("%d events before the trim, want 11", n)
	}
	mustCreate(t, s, pod("ns", "p11", nil, ""))
	if n := count(); n != 10 {
		t.Errorf("%d events after the trim, want 10", n)
	}
}
