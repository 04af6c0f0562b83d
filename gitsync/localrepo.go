package gitsync

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/flotilla-dev/flotilla/internal/atomicfile"

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

// hookMarker identifies hooks written by InstallPostCommitHook; only those
// are ever overwritten.
const hookMarker = "# Installed by flotilla: syncs the local cluster after each commit."

// hookNames are the hooks that change the checked-out branch's head
// locally: commit, merge/pull, and amend/rebase.
var hookNames = []string{"post-commit", "post-merge", "post-rewrite"}

// ErrForeignHook is returned by InstallPostCommitHook when a hook that
// flotilla did not write is in the way.
var ErrForeignHook = errors.New("a git hook not written by flotilla exists")

// InstallPostCommitHook writes executable post-commit, post-merge and
// post-rewrite hooks into repoDir/.git/hooks that run command with sh in
// the background, its output discarded, so that a commit never waits for
// it. command is shell text: quote its arguments with ShellQuote. Hooks
// written earlier by this function are replaced; another hook in the way
// is left alone and ErrForeignHook returned.
func InstallPostCommitHook(repoDir, command string) error {
	if strings.TrimSpace(command) == "" || strings.ContainsRune(command, 0) {
		return errors.New("install git hook: command is empty or contains a NUL byte")
	}
	hooks := filepath.Join(repoDir, ".git", "hooks")
	if fi, err := os.Stat(filepath.Join(repoDir, ".git")); err != nil || !fi.IsDir() {
		return fmt.Errorf("install git hook: %s is not a non-bare git repository", repoDir)
	}
	if err := os.MkdirAll(hooks, 0o755); err != nil {
		return fmt.Errorf("install git hook: %w", err)
	}
	script := "#!/bin/sh\n" + hookMarker + "\n(\n" + command + "\n) </dev/null >/dev/null 2>&1 &\nexit 0\n"
	for _, name := range hookNames {
		p := filepath.Join(hooks, name)
		old, err := os.ReadFile(p)
		switch {
		case errors.Is(err, fs.ErrNotExist):
		case err != nil:
			return fmt.Errorf("install git hook %s: %w", p, err)
		case !bytes.Contains(old, []byte(hookMarker)):
			return fmt.Errorf("install git hook %s: %w; add this line to it instead: %s", p, ErrForeignHook, strings.TrimSpace(command))
		}
		if err := atomicfile.WriteFile(p, []byte(script), 0o755); err != nil {
			return fmt.Errorf("install git hook: %w", err)
		}
	}
	return nil
}

// ShellQuote quotes s as one POSIX shell word ('…', with embedded single
// quotes escaped), for building a hook command from paths.
func ShellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
