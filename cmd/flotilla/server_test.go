package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/flotilla-dev/flotilla/cluster/raftlog"
)

// TestUntilQuorum: a server's start-up write waits while the store has no
// leader, saying so once, and is done when the write goes through; any
// other error ends it at once, named.
func TestUntilQuorum(t *testing.T) {
	var said []string
	say := func(f string, a ...any) { said = append(said, fmt.Sprintf(f, a...)) }
	tries := 0
	err := untilQuorum(t.Context(), say, "publish the join info", func(context.Context) error {
		if tries++; tries < 3 {
			return fmt.Errorf("create: %w", raftlog.ErrNoLeader)
		}
		return nil
	})
	if err != nil || tries != 3 || len(said) != 1 || !strings.Contains(said[0], "waiting for a majority of the servers to publish the join info") {
		t.Fatalf("err %v after %d tries, said %q; want success at the third, one line said", err, tries, said)
	}

	boom := errors.New("boom")
	tries = 0
	err = untilQuorum(t.Context(), say, "store a join token", func(context.Context) error { tries++; return boom })
	if !errors.Is(err, boom) || tries != 1 || !strings.Contains(err.Error(), "store a join token") {
		t.Fatalf("another error: %v after %d tries; want it at once, named", err, tries)
	}

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	err = untilQuorum(ctx, say, "x", func(context.Context) error { return raftlog.ErrUnknownOutcome })
	if err == nil {
		t.Fatal("a canceled wait ended without an error")
	}
}
