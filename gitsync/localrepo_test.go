package gitsync

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	git "github.com/go-git/go-git/v5"

	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/schema"
)

// nopStore satisfies store.Interface for tests that never touch the store.
type nopStore struct{ store.Interface }

func seedFS() fstest.MapFS {
	return fstest.MapFS{
		"apps/a.yaml": {Data: []byte(configMap("a", "", "1"))},
		"README.md":   {Data: []byte("# my cluster\n")},
	}
}

func TestInitLocalRepo(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "repo")
	if err := InitLocalRepo(dir, seedFS()); err != nil {
		t.Fatal(err)
	}
	repo, err := git.PlainOpen(dir)
	if err != nil {
		t.Fatal(err)
	}
	head, err := repo.Head()
	if err != nil || head.Name().Short() != LocalBranch {
		t.Fatalf("head = %v, %v", head, err)
	}
	c, err := repo.CommitObject(head.Hash())
	if err != nil {
		t.Fatal(err)
	}
	if c.Author.Name != "Flotilla" || c.Author.Email != "flotilla@localhost" {
		t.Errorf("author = %v", c.Author)
	}
	if _, err := c.File("apps/a.yaml"); err != nil {
		t.Errorf("seed file not committed: %v", err)
	}
	if err := InitLocalRepo(dir, seedFS()); !errors.Is(err, ErrRepoExists) {
		t.Errorf("second init: %v", err)
	}
}

// TestSyncFromLocalRepo syncs a non-bare local repository by path and by
// file:// URL, as `flotilla up` does.
func TestSyncFromLocalRepo(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "repo")
	if err := InitLocalRepo(dir, seedFS()); err != nil {
		t.Fatal(err)
	}
	for _, url := range []string{dir, "file://" + dir} {
		st := newTestStore(t)
		s, err := New(Config{URL: url, WorkDir: filepath.Join(t.TempDir(), "clone"), Store: st, Loader: yamlLoader{}, Logger: testLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		body, err := s.SyncNow(t.Context())
		if err != nil || body.Result != schema.SyncApplied || body.Objects != 1 {
			t.Fatalf("%s: sync = %+v, %v", url, body, err)
		}
		if s.Branch() != LocalBranch {
			t.Errorf("branch = %q", s.Branch())
		}
	}
}

func TestPostCommitHookRunsCommand(t *testing.T) {
	gitBin, err := exec.LookPath("git")
	if err != nil {
		t.Skip("git CLI not installed")
	}
	dir := filepath.Join(t.TempDir(), "my repo's dir")
	if err := InitLocalRepo(dir, seedFS()); err != nil {
		t.Fatal(err)
	}
	marker := filepath.Join(t.TempDir(), "synced 'marker'")
	if err := InstallPostCommitHook(dir, "touch "+ShellQuote(marker)); err != nil {
		t.Fatal(err)
	}
	for _, name := range hookNames {
		fi, err := os.Stat(filepath.Join(dir, ".git", "hooks", name))
		if err != nil || fi.Mode().Perm()&0o111 == 0 {
			t.Fatalf("hook %s not executable: %v %v", name, fi, err)
		}
	}
	// Installing again replaces our own hooks.
	if err := InstallPostCommitHook(dir, "touch "+ShellQuote(marker)); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "b.yaml"), []byte(configMap("b", "", "1")), 0o644); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) {
		cmd := exec.Command(gitBin, append([]string{"-c", "user.name=T", "-c", "user.email=t@example.com"}, args...)...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "HOME="+t.TempDir())
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	run("add", "b.yaml")
	run("commit", "-q", "-m", "add b")
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(marker); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the post-commit hook did not run its command")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestPostCommitHookLeavesForeignHooks(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "repo")
	if err := InitLocalRepo(dir, nil); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, ".git", "hooks", "post-commit")
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte("#!/bin/sh\necho mine\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := InstallPostCommitHook(dir, "true"); !errors.Is(err, ErrForeignHook) {
		t.Fatalf("err = %v", err)
	}
	if data, _ := os.ReadFile(p); !strings.Contains(string(data), "echo mine") {
		t.Error("foreign hook overwritten")
	}
	if err := InstallPostCommitHook(t.TempDir(), "true"); err == nil {
		t.Error("hook installed outside a repository")
	}
}

func TestShellQuote(t *testing.T) {
	out, err := exec.Command("sh", "-c", "printf %s "+ShellQuote(`it's a "test" $HOME; rm -rf /`)).Output()
	if err != nil {
		t.Skip("no sh")
	}
	if string(out) != `it's a "test" $HOME; rm -rf /` {
		t.Errorf("round trip = %q", out)
	}
}
