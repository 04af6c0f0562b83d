package raftlog

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/flotilla-dev/flotilla/internal/testkit"
)

func snapEvery20(cfg *Config) { cfg.SnapshotEntries = 20 }

// walState reads the current WAL segment of dir.
func readWAL(t *testing.T, dir string) (string, walState) {
	t.Helper()
	seqs, err := listSegments(dir)
	if err != nil || len(seqs) != 1 {
		t.Fatalf("WAL segments in %s: %v, %v; want exactly one", dir, seqs, err)
	}
	path := filepath.Join(dir, segmentName(seqs[0]))
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	st, _, err := parseSegment(path, b)
	if err != nil {
		t.Fatal(err)
	}
	return path, st
}

func TestSnapshotAndCompaction(t *testing.T) {
	c := newCluster(t, snapEvery20, 1)
	n := c.node(1)
	var want []string
	for i := range 100 {
		want = append(want, fmt.Sprintf("e%d", i))
		propose(t, n, want[i])
	}
	dir := c.dirs[1]
	snaps, err := listSnapFiles(dir)
	if err != nil || len(snaps) != snapsKept {
		t.Fatalf("snapshots %v, %v; want the newest %d kept", snaps, err, snapsKept)
	}
	path, st := readWAL(t, dir)
	if filepath.Base(path) == segmentName(1) || st.snapIndex == 0 {
		t.Fatalf("WAL %s starts at snapshot %d: it never rotated", path, st.snapIndex)
	}
	if newest := snaps[len(snaps)-1]; newest.index != st.snapIndex || newest.term != st.snapTerm {
		t.Fatalf("WAL marker %d/%d, newest snapshot %+v", st.snapIndex, st.snapTerm, newest)
	}
	if len(st.ents) > 40 {
		t.Fatalf("WAL holds %d entries after compaction; want at most 40", len(st.ents))
	}

	// Restart keeping the state machine: nothing to restore or re-apply.
	c.stop(1)
	n = c.start(1, nil)
	propose(t, n, "after")
	want = append(want, "after")
	if got := c.sm(1).Items(); !slices.Equal(got, want) || c.sm(1).Restores() != 0 || c.sm(1).skipped != 0 {
		t.Fatalf("after restart: %d items, %d restores, %d re-applied", len(got), c.sm(1).Restores(), c.sm(1).skipped)
	}

	// Restart with a state machine that lost everything: restored from
	// the snapshot, then the entries after it replayed.
	c.stop(1)
	c.mu.Lock()
	c.sms[1] = &testSM{}
	c.mu.Unlock()
	c.start(1, nil)
	testkit.EventuallyWhy(t, "restore and replay", 10*time.Second, func() string {
		if got := c.sm(1).Items(); !slices.Equal(got, want) {
			return fmt.Sprintf("%d items", len(got))
		}
		return ""
	})
	if c.sm(1).Restores() != 1 {
		t.Fatalf("Restore called %d times; want 1", c.sm(1).Restores())
	}
}

func TestNewMemberCatchesUpBySnapshot(t *testing.T) {
	c := newCluster(t, snapEvery20, 1, 2, 3)
	lead := c.leader()
	for i := range 100 {
		propose(t, c.node(lead), fmt.Sprintf("e%d", i))
	}
	c.converged(100)

	// 4 joins: the leader's log starts past index 1, so it gets a snapshot.
	c.start(4, func(cfg *Config) { cfg.Join = true })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := c.node(lead).AddVoter(ctx, Peer{ID: 4, Addr: "n4:7000"}); err != nil {
		t.Fatalf("AddVoter(4): %v", err)
	}
	c.converged(100)
	if got := c.sm(4).Restores(); got < 1 {
		t.Fatalf("node 4 caught up without a snapshot (%d restores)", got)
	}
	propose(t, c.node(4), "from 4")
	c.converged(101)
	want := []Member{{1, "n1:7000", true}, {2, "n2:7000", true}, {3, "n3:7000", true}, {4, "n4:7000", true}}
	testkit.EventuallyWhy(t, "every server sees 4 members", 10*time.Second, func() string {
		for _, id := range c.ids() {
			if got := c.node(id).Status().Members; !slices.Equal(got, want) {
				return fmt.Sprintf("node %d: %+v", id, got)
			}
		}
		return ""
	})
	// A restart of 4 comes back from its own snapshot and WAL, members and all.
	c.stop(4)
	c.start(4, nil)
	propose(t, c.node(lead), "after restart")
	c.converged(102)
	if got := c.node(4).Status().Members; !slices.Equal(got, want) {
		t.Fatalf("node 4's members after restart: %+v", got)
	}
}

func TestMembership(t *testing.T) {
	c := newCluster(t, nil, 1, 2, 3)
	lead := c.leader()
	propose(t, c.node(lead), "one")

	// 4 joins: it starts from a snapshot though the log is whole (the
	// state machine may hold more than the log wrote: a restored backup).
	c.start(4, func(cfg *Config) { cfg.Join = true })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := c.node(lead).AddVoter(ctx, Peer{ID: 4, Addr: "n4:7000"}); err != nil {
		t.Fatalf("AddVoter(4): %v", err)
	}
	if err := c.node(lead).AddVoter(ctx, Peer{ID: 4, Addr: "n4:7000"}); err != nil {
		t.Fatalf("AddVoter(4) again: %v", err)
	}
	c.converged(1)
	if got := c.sm(4).Restores(); got < 1 {
		t.Fatalf("node 4 caught up from the log's first entries (%d restores), not from a snapshot", got)
	}

	// Remove a server that is not the leader, from a follower.
	var gone, from uint64
	for _, id := range []uint64{1, 2, 3} {
		if id != lead && gone == 0 {
			gone = id
		} else if id != lead {
			from = id
		}
	}
	if err := c.node(from).RemoveMember(ctx, gone); err != nil {
		t.Fatalf("RemoveMember(%d) on %d: %v", gone, from, err)
	}
	if err := c.node(from).RemoveMember(ctx, gone); !errors.Is(err, ErrNotMember) {
		t.Fatalf("RemoveMember(%d) again: %v; want ErrNotMember", gone, err)
	}
	c.stop(gone)
	propose(t, c.node(4), "two")
	c.converged(2)

	var want []Member
	for _, id := range []uint64{1, 2, 3, 4} {
		if id != gone {
			want = append(want, Member{ID: id, Addr: fmt.Sprintf("n%d:7000", id), Voter: true})
		}
	}
	testkit.EventuallyWhy(t, "members", 10*time.Second, func() string {
		for _, id := range c.ids() {
			if got := c.node(id).Status().Members; !slices.Equal(got, want) {
				return fmt.Sprintf("node %d: %+v", id, got)
			}
		}
		return ""
	})

	// Every server restarts: membership comes back from the log.
	for _, id := range c.ids() {
		c.stop(id)
	}
	for _, m := range want {
		c.start(m.ID, nil)
	}
	c.leader()
	for _, m := range want {
		if got := c.node(m.ID).Status().Members; !slices.Equal(got, want) {
			t.Fatalf("node %d's members after restart: %+v", m.ID, got)
		}
	}
	propose(t, c.node(want[0].ID), "three")
	c.converged(3)

	// The last voter cannot be removed.
	solo := newCluster(t, nil, 9)
	propose(t, solo.node(9), "x")
	if err := solo.node(9).RemoveMember(ctx, 9); err == nil {
		t.Fatal("removed the group's last voter")
	}
}

// A new server joins as a learner, catches up without counting towards
// the majority, and is then promoted; a member's address can change.
func TestLearnerThenVoter(t *testing.T) {
	c := newCluster(t, nil, 1, 2, 3)
	lead := c.leader()
	propose(t, c.node(lead), "one")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	// Added from a follower, before it runs: the group still commits
	// with 4 unreachable, since a learner is not in the majority.
	from := uint64(1)
	if from == lead {
		from = 2
	}
	if err := c.node(from).AddLearner(ctx, Peer{ID: 4, Addr: "n4:7000"}); err != nil {
		t.Fatalf("AddLearner(4): %v", err)
	}
	if err := c.node(from).AddLearner(ctx, Peer{ID: 4, Addr: "n4:7000"}); err != nil {
		t.Fatalf("AddLearner(4) again: %v", err)
	}
	propose(t, c.node(lead), "two")
	wantLearner := Member{ID: 4, Addr: "n4:7000", Voter: false}
	if got := c.node(lead).Status().Members; !slices.Contains(got, wantLearner) {
		t.Fatalf("members after AddLearner: %+v", got)
	}

	c.start(4, func(cfg *Config) { cfg.Join = true })
	testkit.EventuallyWhy(t, "the learner catches up", 10*time.Second, func() string {
		if st := c.node(4).Status(); st.Role != "learner" || st.Applied < c.node(lead).Status().Commit {
			return fmt.Sprintf("node 4: %+v", st)
		}
		return ""
	})
	if err := c.node(4).AddVoter(ctx, Peer{ID: 4}); err != nil {
		t.Fatalf("promote 4: %v", err)
	}
	c.converged(2)
	if got := c.node(lead).Status().Members; !slices.Contains(got, Member{ID: 4, Addr: "n4:7000", Voter: true}) {
		t.Fatalf("members after the promotion keep 4's address: %+v", got)
	}

	if err := c.node(4).SetAddress(ctx, Peer{ID: 4, Addr: "n4:7001"}); err != nil {
		t.Fatalf("SetAddress: %v", err)
	}
	testkit.EventuallyWhy(t, "every server sees 4's new address", 10*time.Second, func() string {
		for _, id := range c.ids() {
			if got := c.node(id).Status().Members; !slices.Contains(got, Member{ID: 4, Addr: "n4:7001", Voter: true}) {
				return fmt.Sprintf("node %d: %+v", id, got)
			}
		}
		return ""
	})
	if err := c.node(1).SetAddress(ctx, Peer{ID: 9, Addr: "x:1"}); !errors.Is(err, ErrNotMember) {
		t.Fatalf("SetAddress of a stranger: %v, want ErrNotMember", err)
	}
}

// TestProposalAnsweredAfterSnapshotCatchUp: a follower's proposal is
// committed while the leader's messages to the follower are lost, and the
// leader compacts its log past it, so the follower catches up from a
// snapshot that holds the entry, applied with no answer for the call. The
// call must not take the refusal of the copy it proposes again (a
// duplicate, for a DuplicateRejecter) for its answer: that would say "not
// applied" of a write that was, and the store would write it again. It
// ends with ErrUnknownOutcome, or with the first copy's result.
func TestProposalAnsweredAfterSnapshotCatchUp(t *testing.T) {
	sms := map[uint64]*dedupSM{}
	c := newCluster(t, func(cfg *Config) {
		sm := sms[cfg.ID]
		if sm == nil {
			sm = &dedupSM{}
			sms[cfg.ID] = sm
		}
		cfg.StateMachine = sm
		cfg.SnapshotEntries = 20
		// Elections after 1-2 s: the follower keeps its leader while it
		// hears nothing of it, and proposes again after 3 s.
		cfg.ElectionTicks = 50
	}, 1, 2, 3)
	lead := c.leader()
	propose(t, c.node(lead), "warm")
	f := uint64(1)
	if f == lead {
		f = 2
	}

	c.net.Block(lead, f)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	type answer struct {
		res any
		err error
	}
	done := make(chan answer, 1)
	go func() {
		res, _, err := c.node(f).Propose(ctx, []byte("x"))
		done <- answer{res, err}
	}()
	testkit.EventuallyWhy(t, "the leader applies the follower's proposal", 5*time.Second, func() string {
		if !slices.Contains(sms[lead].Items(), "x") {
			return "not yet"
		}
		return ""
	})
	for i := range 30 {
		propose(t, c.node(lead), fmt.Sprintf("e%d", i))
	}
	c.net.Heal(lead, f)

	a := <-done
	if got := sms[f].Restores(); got < 1 {
		t.Fatalf("the follower caught up without a snapshot (%d restores): the test missed its case", got)
	}
	switch {
	case errors.Is(a.err, ErrUnknownOutcome):
	case a.err != nil:
		t.Fatalf("Propose: %v, want ErrUnknownOutcome or the applied result", a.err)
	case a.res == "duplicate":
		t.Fatal(`Propose answered with the refusal of its second copy ("duplicate"), though the first was applied`)
	}
	want := sms[lead].Items()
	if n := len(slices.DeleteFunc(slices.Clone(want), func(s string) bool { return s != "x" })); len(want) != 32 || n != 1 {
		t.Fatalf("the leader applied %q: want 32 items, x once", want)
	}
	testkit.EventuallyWhy(t, "the servers to agree", 10*time.Second, func() string {
		for id, sm := range sms {
			if got := sm.Items(); !slices.Equal(got, want) {
				return fmt.Sprintf("node %d applied %q", id, got)
			}
		}
		return ""
	})
}
