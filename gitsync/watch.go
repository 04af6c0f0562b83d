package gitsync

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/fsnotify/fsnotify"
)

// A local repository (`flotilla up --repo DIR`, a file:// URL) is watched
// rather than only polled: a commit, merge, reset or push into it moves a
// ref, and the ref files are watched with inotify. Nothing is written into
// the repository (no hooks).
//
// What moves when a branch head moves: HEAD (in the git dir; for a linked
// worktree, its own git dir under the main one's worktrees/), the loose
// ref under refs/heads/ (in the common dir, shared by all worktrees), or
// packed-refs (after `git pack-refs` or a gc). Git replaces each by
// renaming a NAME.lock over it, so the watches are on the directories and
// the lock files are ignored; the rename itself is the event.
//
// Bursts (a rebase moves HEAD many times, a pull several refs) are
// debounced by Trigger: pokes arriving while a sync is pending or running
// merge into one more sync, so a burst costs at most two syncs and the
// first starts at once.

// watchLocal watches the refs of the repository in dir and triggers a sync
// when one changes, until ctx ends or stop is called (stop waits for the
// watcher to end).
func (s *Syncer) watchLocal(ctx context.Context, dir string) (stop func(), err error) {
	gitDir, commonDir, err := gitDirs(dir)
	if err != nil {
		return nil, err
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, fmt.Errorf("watch %s: %w", dir, err)
	}
	rw := &refWatcher{w: w, gitDir: gitDir, commonDir: commonDir, heads: filepath.Join(commonDir, "refs", "heads"), poke: s.Trigger, log: s.log}
	if err := rw.addAll(); err != nil {
		w.Close()
		return nil, fmt.Errorf("watch %s: %w", dir, err)
	}
	s.log.Info("watching the local repository; a commit syncs at once", "gitdir", gitDir)
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		rw.loop(ctx)
	}()
	return func() {
		cancel()
		w.Close()
		<-done
	}, nil
}

// gitDirs finds the git dir of the repository in dir (dir/.git, the
// directory a .git file names, or dir itself when bare) and its common dir
// (where refs/ and packed-refs are: the main repository's git dir for a
// linked worktree, the git dir otherwise).
func gitDirs(dir string) (gitDir, commonDir string, err error) {
	dotgit := filepath.Join(dir, ".git")
	fi, err := os.Stat(dotgit)
	switch {
	case err == nil && fi.IsDir():
		gitDir = dotgit
	case err == nil: // "gitdir: PATH", written by `git worktree add` and for submodules
		p, err := readPointer(dotgit, "gitdir:")
		if err != nil {
			return "", "", err
		}
		gitDir = relTo(dir, p)
	case errors.Is(err, fs.ErrNotExist):
		gitDir = dir // bare
	default:
		return "", "", fmt.Errorf("find the git dir of %s: %w", dir, err)
	}
	if _, err := os.Stat(filepath.Join(gitDir, "HEAD")); err != nil {
		return "", "", fmt.Errorf("%s is not a git repository: %w", dir, err)
	}
	commonDir = gitDir
	if p, err := readPointer(filepath.Join(gitDir, "commondir"), ""); err == nil {
		commonDir = relTo(gitDir, p)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", "", err
	}
	return filepath.Clean(gitDir), filepath.Clean(commonDir), nil
}

// readPointer reads a one-line pointer file of git (.git, commondir) and
// returns its path after prefix.
func readPointer(file, prefix string) (string, error) {
	f, err := os.Open(file)
	if err != nil {
		return "", err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, 4096))
	if err != nil {
		return "", fmt.Errorf("read %s: %w", file, err)
	}
	line, _, _ := strings.Cut(string(data), "\n")
	p, ok := strings.CutPrefix(strings.TrimSpace(line), prefix)
	if p = strings.TrimSpace(p); !ok || p == "" {
		return "", fmt.Errorf("read %s: not a git pointer file", file)
	}
	return p, nil
}

func relTo(base, p string) string {
	if filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(base, p)
}

// refWatcher turns fsnotify events on a repository's ref files into pokes.
type refWatcher struct {
	w                        *fsnotify.Watcher
	gitDir, commonDir, heads string
	poke                     func()
	log                      *slog.Logger
}

// addAll watches the git dir, the common dir and every directory under
// refs/heads (branch names with slashes are subdirectories).
func (r *refWatcher) addAll() error {
	for _, d := range []string{r.gitDir, r.commonDir} {
		if err := r.w.Add(d); err != nil {
			return err
		}
	}
	if err := r.w.Add(filepath.Dir(r.heads)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return r.addTree(r.heads)
}

func (r *refWatcher) addTree(root string) error {
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return r.w.Add(p)
		}
		return nil
	})
	if errors.Is(err, fs.ErrNotExist) {
		return nil // no loose branch yet (packed-refs only): refs/ is created with the first
	}
	return err
}

func (r *refWatcher) loop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-r.w.Events:
			if !ok {
				return
			}
			if r.relevant(ev) {
				r.poke()
			}
		case err, ok := <-r.w.Errors:
			if !ok {
				return
			}
			if errors.Is(err, fsnotify.ErrEventOverflow) {
				r.poke() // events were lost: one of them may have been a ref
				continue
			}
			r.log.Warn("watching the local repository", "err", err)
		}
	}
}

// relevant reports whether ev may have moved a branch head, and watches a
// new directory under refs/heads.
func (r *refWatcher) relevant(ev fsnotify.Event) bool {
	if !ev.Has(fsnotify.Create) && !ev.Has(fsnotify.Write) && !ev.Has(fsnotify.Rename) && !ev.Has(fsnotify.Remove) {
		return false
	}
	name := filepath.Clean(ev.Name)
	if strings.HasSuffix(name, ".lock") {
		return false
	}
	dir, base := filepath.Dir(name), filepath.Base(name)
	if dir == r.gitDir || dir == r.commonDir {
		if base == "refs" && ev.Has(fsnotify.Create) {
			_ = r.w.Add(name)
			_ = r.addTree(r.heads)
		}
		return base == "HEAD" || base == "packed-refs"
	}
	if dir == filepath.Dir(r.heads) { // refs/: only refs/heads matters
		if name != r.heads {
			return false
		}
	}
	if name != r.heads && !strings.HasPrefix(name, r.heads+string(filepath.Separator)) {
		return false
	}
	if ev.Has(fsnotify.Create) {
		if fi, err := os.Stat(name); err == nil && fi.IsDir() {
			if err := r.addTree(name); err != nil {
				r.log.Warn("watching a new branch directory", "dir", name, "err", err)
			}
		}
	}
	return true
}
