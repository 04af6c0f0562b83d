package gitsync

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/flotilla-dev/flotilla/internal/testkit"
	"github.com/flotilla-dev/flotilla/schema"
)

// forcePush rewrites the remote's main to a new root commit holding files
// (the old history is gone from the branch), with the git CLI, as
// `git push --force` after a rewrite does. It returns the new head.
func (g *gitRemote) forcePush(files map[string]string) string {
	g.t.Helper()
	dir := g.t.TempDir()
	gitCLI(g.t, dir, "init", "-q", "-b", "main")
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			g.t.Fatal(err)
		}
	}
	gitCLI(g.t, dir, "add", "-A")
	gitCLI(g.t, dir, "commit", "-qm", "rewritten history")
	gitCLI(g.t, dir, "push", "-q", "--force", g.bare, "main:main")
	return headOf(g.t, dir)
}

// assertRewriteRefused checks that the head was refused as a history
// rewrite and that live is still applied, a.yaml's object included.
func assertRewriteRefused(t *testing.T, h *harness, body schema.SyncStatusBody, err error, head, live string) {
	t.Helper()
	if !errors.Is(err, ErrRefused) || body.Result != schema.SyncRefused {
		t.Fatalf("sync = %s, %v; want refused", body.Result, err)
	}
	want := fmt.Sprintf("history rewritten: %s is not a descendant of the live commit %s", short(head), short(live))
	st := h.status()
	if !strings.Contains(st.Message, want) || !strings.Contains(st.Message, "--allow-history-rewrite") {
		t.Errorf("status message = %q, want it to say %q and name --allow-history-rewrite", st.Message, want)
	}
	if st.LastAppliedCommit != live || st.LastAttemptedCommit != head {
		t.Errorf("live %s attempted %s, want live %s attempted %s", short(st.LastAppliedCommit), short(st.LastAttemptedCommit), short(live), short(head))
	}
	if c := condition(st, ConditionStalled); c == nil || c.Reason != ReasonHistoryRewritten {
		t.Errorf("Stalled = %+v, want reason %s", c, ReasonHistoryRewritten)
	}
	h.get("configmaps", "default", "a") // not pruned
}

// TestForcePushRefused: a force-push that replaces the branch's history is
// refused, the live commit stays applied (nothing pruned), and a commit
// pushed on top of the live one applies again.
func TestForcePushRefused(t *testing.T) {
	h := newHarness(t)
	live := h.remote.commit("one", map[string]string{"a.yaml": configMap("a", "", "1")})
	if _, err := h.sync(); err != nil {
		t.Fatal(err)
	}
	head := h.remote.forcePush(map[string]string{"b.yaml": configMap("b", "", "1")})
	body, err := h.sync()
	assertRewriteRefused(t, h, body, err, head, live)
	h.absent("configmaps", "default", "b")

	// Polls do not evaluate the refused head again; a commit on top of
	// the live one (the working clone still has it) is a fast-forward.
	if _, err := h.poll(); !errors.Is(err, ErrRefused) {
		t.Fatalf("poll = %v", err)
	}
	next := h.remote.commit("two", map[string]string{"a.yaml": configMap("a", "", "2")}) // +main:main: replaces the rewrite
	if body, err := h.sync(); err != nil || body.LastAppliedCommit != next {
		t.Fatalf("sync of a descendant = %+v, %v", body, err)
	}
}

// TestRewindRefused: a reset of the branch to an older commit (a
// rollback by force-push, not by `git revert`) is refused too.
func TestRewindRefused(t *testing.T) {
	h := newHarness(t)
	old := h.remote.commit("one", map[string]string{"a.yaml": configMap("a", "", "1")})
	live := h.remote.commit("two", map[string]string{"b.yaml": configMap("b", "", "1")})
	if _, err := h.sync(); err != nil {
		t.Fatal(err)
	}
	gitCLI(t, h.remote.bare, "update-ref", "refs/heads/main", old)
	body, err := h.sync()
	assertRewriteRefused(t, h, body, err, old, live)
	if !strings.Contains(h.status().Message, "rewound to an older commit") {
		t.Errorf("message %q does not say the branch was rewound", h.status().Message)
	}
	h.get("configmaps", "default", "b") // b is not pruned
}

// TestForcePushAllowed: with AllowHistoryRewrite the rewritten head
// applies, pruning what it no longer has.
func TestForcePushAllowed(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.AllowHistoryRewrite = true })
	h.remote.commit("one", map[string]string{"a.yaml": configMap("a", "", "1")})
	if _, err := h.sync(); err != nil {
		t.Fatal(err)
	}
	head := h.remote.forcePush(map[string]string{"b.yaml": configMap("b", "", "1")})
	if body, err := h.sync(); err != nil || body.LastAppliedCommit != head {
		t.Fatalf("sync = %+v, %v", body, err)
	}
	h.get("configmaps", "default", "b")
	h.absent("configmaps", "default", "a")
}

// TestLiveCommitKeptInClone: the clone keeps the live commit under a ref
// of its own, so that a `git gc` of the clone cannot drop what the
// ancestry check needs after a force-push removed it from the remote.
func TestLiveCommitKeptInClone(t *testing.T) {
	h := newHarness(t)
	live := h.remote.commit("one", map[string]string{"a.yaml": configMap("a", "", "1")})
	if _, err := h.sync(); err != nil {
		t.Fatal(err)
	}
	ref, err := h.syncer.fetch.repo.Reference(liveRef, false)
	if err != nil || ref.Hash().String() != live {
		t.Fatalf("%s = %v, %v; want %s", liveRef, ref, err, live)
	}
}

// TestLiveCommitUnknownToNewClone: a clone made anew (its directory
// lost) after a force-push dropped the live commit from the remote cannot
// find the live commit: the head is refused as a rewrite, since the whole
// history of the head was fetched and the live commit is not in it.
func TestLiveCommitUnknownToNewClone(t *testing.T) {
	h := newHarness(t)
	live := h.remote.commit("one", map[string]string{"a.yaml": configMap("a", "", "1")})
	if _, err := h.sync(); err != nil {
		t.Fatal(err)
	}
	head := h.remote.forcePush(map[string]string{"b.yaml": configMap("b", "", "1")})
	if err := os.RemoveAll(h.syncer.cfg.WorkDir); err != nil {
		t.Fatal(err)
	}
	h.syncer.fetch.repo = nil // as after a restart
	body, err := h.sync()
	assertRewriteRefused(t, h, body, err, head, live)
	if !strings.Contains(h.status().Message, "nor in the local clone") {
		t.Errorf("message %q does not say the live commit is unknown", h.status().Message)
	}
}

// TestLocalResetRefused: the same rule for a watched plain repository: a
// `git reset --hard HEAD~1` in it is refused, and the live commit stays.
func TestLocalResetRefused(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "repo")
	if err := InitLocalRepo(dir, seedFS()); err != nil {
		t.Fatal(err)
	}
	h := runWatched(t, dir)
	if err := os.WriteFile(filepath.Join(dir, "b.yaml"), []byte(configMap("b", "", "1")), 0o644); err != nil {
		t.Fatal(err)
	}
	gitCLI(t, dir, "add", "b.yaml")
	gitCLI(t, dir, "commit", "-qm", "add b")
	live := headOf(t, dir)
	testkit.EventuallyTrue(t, "the commit synced", 0, func() bool { return h.statusOrZero().LastAppliedCommit == live })
	gitCLI(t, dir, "reset", "-q", "--hard", "HEAD~1")
	head := headOf(t, dir)
	testkit.EventuallyTrue(t, "the reset refused", 0, func() bool { return h.statusOrZero().LastAttemptedCommit == head })
	st := h.status()
	want := fmt.Sprintf("history rewritten: %s is not a descendant of the live commit %s", short(head), short(live))
	if st.Result != schema.SyncRefused || st.LastAppliedCommit != live || !strings.Contains(st.Message, want) {
		t.Errorf("status = %s live %s: %q; want refused, %s live, saying %q", st.Result, short(st.LastAppliedCommit), st.Message, short(live), want)
	}
	h.get("configmaps", "default", "b")
}
