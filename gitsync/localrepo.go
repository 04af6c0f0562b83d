package gitsync

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	git "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
)

// ErrRepoExists is returned by InitLocalRepo when dir already holds a Git
// repository; it is left untouched. Callers of an idempotent setup (`flotilla
// up` run twice) may ignore it.
var ErrRepoExists = errors.New("a git repository already exists")

// LocalBranch is the branch of repositories made by InitLocalRepo.
const LocalBranch = "main"

// InitLocalRepo creates a non-bare Git repository in dir (created if
// missing) on branch LocalBranch, with the files of seed (nil: none)
// committed by "Flotilla <flotilla@localhost>". Only regular files and
// directories of seed are copied.
func InitLocalRepo(dir string, seed fs.FS) error {
	if _, err := git.PlainOpen(dir); err == nil {
		return fmt.Errorf("init repository in %s: %w", dir, ErrRepoExists)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("init repository: %w", err)
	}
	repo, err := git.PlainInitWithOptions(dir, &git.PlainInitOptions{
		InitOptions: git.InitOptions{DefaultBranch: plumbing.NewBranchReferenceName(LocalBranch)},
	})
	if err != nil {
		return fmt.Errorf("init repository in %s: %w", dir, err)
	}
	wt, err := repo.Worktree()
	if err != nil {
		return fmt.Errorf("init repository in %s: %w", dir, err)
	}
	if seed != nil {
		err = fs.WalkDir(seed, ".", func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if p == "." {
				return nil
			}
			if d.IsDir() && d.Name() == ".git" {
				return fs.SkipDir
			}
			dst := filepath.Join(dir, filepath.FromSlash(p)) // p is an fs.ValidPath: no "..", no leading "/"
			if d.IsDir() {
				return os.MkdirAll(dst, 0o755)
			}
			if !d.Type().IsRegular() {
				return nil
			}
			data, err := fs.ReadFile(seed, p)
			if err != nil {
				return err
			}
			if err := os.WriteFile(dst, data, 0o644); err != nil {
				return err
			}
			_, err = wt.Add(p)
			return err
		})
		if err != nil {
			return fmt.Errorf("copy seed files into %s: %w", dir, err)
		}
	}
	sig := &object.Signature{Name: "Flotilla", Email: "flotilla@localhost", When: time.Now()}
	_, err = wt.Commit("Initial manifests, created by flotilla", &git.CommitOptions{
		Author: sig, Committer: sig, AllowEmptyCommits: true,
	})
	if err != nil {
		return fmt.Errorf("commit seed files in %s: %w", dir, err)
	}
	return nil
}

// hookMarker identified the post-commit, post-merge and post-rewrite hooks
// that earlier versions of `flotilla up` wrote into their example
// repository to sync after each commit. The repository's refs are watched
// now (Config.NoWatch), so those hooks are only removed.
const hookMarker = "# Installed by flotilla: syncs the local cluster after each commit."

var hookNames = []string{"post-commit", "post-merge", "post-rewrite"}

// RemoveSyncHooks deletes the sync hooks an earlier flotilla wrote into
// repoDir/.git/hooks (only files that carry its marker; any other hook is
// left alone). A repository without them is fine.
func RemoveSyncHooks(repoDir string) error {
	for _, name := range hookNames {
		p := filepath.Join(repoDir, ".git", "hooks", name)
		data, err := os.ReadFile(p)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			continue
		case err != nil:
			return fmt.Errorf("remove the old sync hook %s: %w", p, err)
		case !bytes.Contains(data, []byte(hookMarker)):
			continue
		}
		if err := os.Remove(p); err != nil {
			return fmt.Errorf("remove the old sync hook %s: %w", p, err)
		}
	}
	return nil
}
