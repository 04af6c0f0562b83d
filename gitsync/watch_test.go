package gitsync

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/fsnotify/fsnotify"
	git "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing/object"

	"github.com/flotilla-dev/flotilla/internal/testkit"
	"github.com/flotilla-dev/flotilla/schema"
)

// gitCLI runs the git command in dir as a user would.
func gitCLI(t testing.TB, dir string, args ...string) {
	t.Helper()
	cmd := exec.Command("git", append([]string{"-c", "user.name=T", "-c", "user.email=t@example.com"}, args...)...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "HOME="+t.TempDir())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("git %v: %v\n%s", args, err, out)
	}
}

// runWatched runs a Syncer of url on a fake clock that the test never
// moves: the poll never fires, so whatever syncs after the first sync was
// noticed by the watch.
func runWatched(t *testing.T, url string, mutate ...func(*Config)) *harness {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git CLI not installed")
	}
	h := newHarness(t, append([]func(*Config){func(c *Config) { c.URL = url }}, mutate...)...)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.syncer.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	testkit.EventuallyTrue(t, "the first sync", 0, func() bool { return h.statusOrZero().Result == schema.SyncApplied })
	return h
}

func headOf(t testing.TB, dir string) string {
	t.Helper()
	repo, err := git.PlainOpenWithOptions(dir, &git.PlainOpenOptions{EnableDotGitCommonDir: true})
	if err != nil {
		t.Fatal(err)
	}
	ref, err := repo.Head()
	if err != nil {
		t.Fatal(err)
	}
	return ref.Hash().String()
}

// TestWatchPlainRepo: `git commit` in a user's repository syncs without
// waiting for the poll, and nothing is written into the repository. It
// switches branches and resets, so it allows history rewrites
// (TestLocalResetRefused shows the default).
func TestWatchPlainRepo(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "repo")
	if err := InitLocalRepo(dir, seedFS()); err != nil {
		t.Fatal(err)
	}
	h := runWatched(t, dir, func(c *Config) { c.AllowHistoryRewrite = true })
	if err := os.WriteFile(filepath.Join(dir, "b.yaml"), []byte(configMap("b", "", "1")), 0o644); err != nil {
		t.Fatal(err)
	}
	gitCLI(t, dir, "add", "b.yaml")
	gitCLI(t, dir, "commit", "-qm", "add b")
	head := headOf(t, dir)
	testkit.EventuallyTrue(t, "the commit synced without a poll", 0, func() bool { return h.statusOrZero().LastAppliedCommit == head })
	h.get("configmaps", "default", "b")

	// Branch names with slashes live in subdirectories of refs/heads.
	gitCLI(t, dir, "checkout", "-qb", "team/feature")
	gitCLI(t, dir, "commit", "-q", "--allow-empty", "-m", "on a branch")
	gitCLI(t, dir, "checkout", "-q", "main")
	if err := os.WriteFile(filepath.Join(dir, "c.yaml"), []byte(configMap("c", "", "1")), 0o644); err != nil {
		t.Fatal(err)
	}
	gitCLI(t, dir, "add", "c.yaml")
	gitCLI(t, dir, "commit", "-qm", "add c")
	// The reset below returns to a commit that was live before, so the
	// sync of "add c" must be seen first: else the status would already
	// name the reset's target while "add c" is still on its way.
	withC := headOf(t, dir)
	testkit.EventuallyTrue(t, "the commit on main synced", 0, func() bool { return h.statusOrZero().LastAppliedCommit == withC })
	h.get("configmaps", "default", "c")
	gitCLI(t, dir, "pack-refs", "--all") // the head now lives in packed-refs
	gitCLI(t, dir, "reset", "-q", "--hard", "HEAD~1")
	head = headOf(t, dir)
	testkit.EventuallyTrue(t, "a reset synced", 0, func() bool { return h.statusOrZero().LastAppliedCommit == head })
	h.absent("configmaps", "default", "c")
	if hooks, _ := filepath.Glob(filepath.Join(dir, ".git", "hooks", "post-*")); len(hooks) > 0 {
		t.Errorf("hooks written into the repository: %v", hooks)
	}
}

// TestWatchWorktree: a linked worktree (a .git file) is watched through
// its own HEAD and the main repository's refs.
func TestWatchWorktree(t *testing.T) {
	base := t.TempDir()
	main := filepath.Join(base, "repo")
	if err := InitLocalRepo(main, seedFS()); err != nil {
		t.Fatal(err)
	}
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git CLI not installed")
	}
	wt := filepath.Join(base, "wt")
	gitCLI(t, main, "worktree", "add", "-q", "-b", "edge", wt)
	h := runWatched(t, wt)
	if h.syncer.Branch() != "edge" {
		t.Fatalf("branch = %q, want the worktree's", h.syncer.Branch())
	}
	if err := os.WriteFile(filepath.Join(wt, "e.yaml"), []byte(configMap("e", "", "1")), 0o644); err != nil {
		t.Fatal(err)
	}
	gitCLI(t, wt, "add", "e.yaml")
	gitCLI(t, wt, "commit", "-qm", "edge only")
	head := headOf(t, wt)
	testkit.EventuallyTrue(t, "the worktree's commit synced", 0, func() bool { return h.statusOrZero().LastAppliedCommit == head })
	h.get("configmaps", "default", "e")
}

// TestWatchBareRepo: a push into a local bare repository syncs at once.
func TestWatchBareRepo(t *testing.T) {
	h := newHarness(t)
	h.remote.commit("one", map[string]string{"a.yaml": configMap("a", "", "1")})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.syncer.Run(ctx) }()
	defer func() { cancel(); <-done }()
	testkit.EventuallyTrue(t, "the first sync", 0, func() bool { return h.statusOrZero().Result == schema.SyncApplied })
	second := h.remote.commit("two", map[string]string{"a.yaml": configMap("a", "", "2")})
	testkit.EventuallyTrue(t, "the push synced without a poll", 0, func() bool { return h.statusOrZero().LastAppliedCommit == second })
}

func TestGitDirs(t *testing.T) {
	base := t.TempDir()
	main := filepath.Join(base, "repo")
	if err := InitLocalRepo(main, nil); err != nil {
		t.Fatal(err)
	}
	if g, c, err := gitDirs(main); err != nil || g != filepath.Join(main, ".git") || c != g {
		t.Errorf("plain repo: %q %q %v", g, c, err)
	}
	wtGit := filepath.Join(main, ".git", "worktrees", "wt")
	if err := os.MkdirAll(wtGit, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string]string{"HEAD": "ref: refs/heads/wt\n", "commondir": "../..\n"} {
		if err := os.WriteFile(filepath.Join(wtGit, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	wt := filepath.Join(base, "wt")
	if err := os.MkdirAll(wt, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(wt, ".git"), []byte("gitdir: "+wtGit+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if g, c, err := gitDirs(wt); err != nil || g != wtGit || c != filepath.Join(main, ".git") {
		t.Errorf("worktree: %q %q %v", g, c, err)
	}
	if _, _, err := gitDirs(t.TempDir()); err == nil {
		t.Error("a directory without a repository was accepted")
	}
}

func TestRelevantEvents(t *testing.T) {
	g := "/r/.git"
	r := &refWatcher{gitDir: g, commonDir: g, heads: g + "/refs/heads", log: testLogger(t)}
	for name, want := range map[string]bool{
		g + "/HEAD":                  true,
		g + "/packed-refs":           true,
		g + "/refs/heads/main":       true,
		g + "/refs/heads/team/x":     true,
		g + "/refs/heads/main.lock":  false,
		g + "/HEAD.lock":             false,
		g + "/index":                 false,
		g + "/ORIG_HEAD":             false,
		g + "/refs/tags/v1":          false,
		g + "/refs/remotes/o/main":   false,
		g + "/logs/refs/heads/main":  false,
		g + "/objects/ab/cdef":       false,
		"/elsewhere/refs/heads/main": false,
	} {
		if got := r.relevant(fsnotify.Event{Name: name, Op: fsnotify.Create}); got != want {
			t.Errorf("%s: relevant = %v, want %v", name, got, want)
		}
	}
	if r.relevant(fsnotify.Event{Name: g + "/HEAD", Op: fsnotify.Chmod}) {
		t.Error("a chmod is not a ref change")
	}
}

// BenchmarkCommitToSyncStart measures the time from a commit in a watched
// local repository (go-git writes the ref) to the start of the sync it
// causes; the poll interval is an hour.
//
//	go test -run '^$' -bench CommitToSyncStart ./gitsync/
func BenchmarkCommitToSyncStart(b *testing.B) {
	dir := filepath.Join(b.TempDir(), "repo")
	if err := InitLocalRepo(dir, seedFS()); err != nil {
		b.Fatal(err)
	}
	st := newTestStore(b)
	s, err := New(Config{URL: dir, WorkDir: filepath.Join(b.TempDir(), "clone"), Store: st, Loader: yamlLoader{},
		Logger: testkit.Logger(b), Interval: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	started := make(chan time.Time, 16)
	s.onStart = func() { started <- time.Now() }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	defer func() { cancel(); <-done }()
	<-started // the first sync
	testkit.EventuallyTrue(b, "the first sync ends", 0, func() bool { return s.State().Finished >= 1 })
	repo, err := git.PlainOpen(dir)
	if err != nil {
		b.Fatal(err)
	}
	wt, err := repo.Worktree()
	if err != nil {
		b.Fatal(err)
	}
	var total time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		sig := &object.Signature{Name: "B", Email: "b@example.com", When: t0}
		if _, err := wt.Commit("bench", &git.CommitOptions{Author: sig, AllowEmptyCommits: true}); err != nil {
			b.Fatal(err)
		}
		t1 := <-started
		total += t1.Sub(t0)
		// Let the sync (and a merged follow-up) end before the next commit.
		testkit.EventuallyTrue(b, "the sync ends", 0, func() bool { st := s.State(); return !st.Syncing && len(s.trigger) == 0 })
		for len(started) > 0 {
			<-started
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(total.Microseconds())/float64(b.N)/1000, "ms-commit-to-sync-start")
}
