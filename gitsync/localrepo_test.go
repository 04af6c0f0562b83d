package gitsync

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"

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

func TestRemoveSyncHooks(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "repo")
	if err := InitLocalRepo(dir, nil); err != nil {
		t.Fatal(err)
	}
	hooks := filepath.Join(dir, ".git", "hooks")
	if err := os.MkdirAll(hooks, 0o755); err != nil {
		t.Fatal(err)
	}
	ours := "#!/bin/sh\n" + hookMarker + "\n(\n'/usr/bin/flotilla' sync --quiet\n) &\n"
	files := map[string]string{"post-commit": ours, "post-merge": ours, "post-rewrite": "#!/bin/sh\necho mine\n"}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(hooks, name), []byte(data), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := RemoveSyncHooks(dir); err != nil {
		t.Fatal(err)
	}
	for name, data := range files {
		_, err := os.Stat(filepath.Join(hooks, name))
		if mine := strings.Contains(data, hookMarker); mine != errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: flotilla's = %v, stat after removal: %v", name, mine, err)
		}
	}
	if err := RemoveSyncHooks(dir); err != nil {
		t.Errorf("a second removal: %v", err)
	}
}
