package gitsync

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	git "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/transport"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
)

const remoteName = "origin"

// remote is where the repository comes from: the URL go-git uses (without
// credentials), the credentials apart, and the URL fit to show.
type remote struct {
	url     string // given to go-git and stored in the clone's config
	display string // for logs, errors and status: no userinfo
	auth    transport.AuthMethod
	secrets []string // strings that must never be shown (password, token)
}

// parseRemote splits credentials out of rawURL. Local paths are made
// absolute so that the clone's config does not depend on the working dir.
func parseRemote(rawURL string) (remote, error) {
	rawURL = strings.TrimSpace(rawURL)
	u, err := url.Parse(rawURL)
	if err != nil || u.Scheme == "" || len(u.Scheme) == 1 { // a local path, scp-like git@host:path, or C:\ on Windows
		if isSCPLike(rawURL) {
			// user@host:path carries a user name at most, never a secret.
			return remote{url: rawURL, display: rawURL}, nil
		}
		abs, aerr := filepath.Abs(rawURL)
		if aerr != nil {
			return remote{}, fmt.Errorf("gitsync: repository path %q: %w", rawURL, aerr)
		}
		return remote{url: abs, display: abs}, nil
	}
	r := remote{}
	if u.User != nil {
		user := u.User.Username()
		pass, hasPass := u.User.Password()
		switch u.Scheme {
		case "http", "https":
			if hasPass {
				r.auth = &githttp.BasicAuth{Username: user, Password: pass}
				r.secrets = append(r.secrets, pass)
			} else {
				// A lone token as user name (https://TOKEN@host/...).
				r.auth = &githttp.BasicAuth{Username: user}
				r.secrets = append(r.secrets, user)
			}
			u.User = nil
		default:
			if hasPass {
				return remote{}, fmt.Errorf("gitsync: a password in a %s:// URL is not supported; use an SSH key (URL %s)", u.Scheme, redact(u))
			}
		}
	}
	r.url = u.String()
	d := *u
	d.User = nil
	r.display = d.String()
	return r, nil
}

func redact(u *url.URL) string {
	d := *u
	d.User = nil
	return d.String()
}

func isSCPLike(s string) bool {
	at := strings.Index(s, "@")
	colon := strings.Index(s, ":")
	slash := strings.Index(s, "/")
	return colon > 0 && at < colon && (slash < 0 || colon < slash) && !strings.Contains(s, "://")
}

// SanitizeURL returns rawURL without any userinfo, as shown in logs, errors
// and the SyncStatus. Unparseable input is replaced by a placeholder rather
// than echoed.
func SanitizeURL(rawURL string) string {
	r, err := parseRemote(rawURL)
	if err != nil {
		return "<invalid URL>"
	}
	return r.display
}

// sanitizedError hides the remote's secrets in an error's text while keeping
// the chain for errors.Is.
type sanitizedError struct {
	msg string
	err error
}

func (e *sanitizedError) Error() string { return e.msg }
func (e *sanitizedError) Unwrap() error { return e.err }

func (r remote) sanitize(err error) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	for _, s := range r.secrets {
		if s != "" {
			msg = strings.ReplaceAll(msg, s, "***")
		}
	}
	return &sanitizedError{msg: msg, err: err}
}

// fetcher owns the local bare clone. Not safe for concurrent use; the Syncer
// serialises syncs.
type fetcher struct {
	dir    string
	remote remote
	repo   *git.Repository
}

// open opens the clone, creating it (an empty bare repository with the
// remote configured) on first use, and repoints the remote if the URL
// changed. Creating it empty and fetching (rather than PlainClone) works
// for empty remotes too and fetches only the branch that is synced.
func (f *fetcher) open() (*git.Repository, error) {
	if f.repo != nil {
		return f.repo, nil
	}
	repo, err := git.PlainOpen(f.dir)
	if errors.Is(err, git.ErrRepositoryNotExists) {
		if err := os.MkdirAll(f.dir, 0o700); err != nil {
			return nil, fmt.Errorf("create clone directory: %w", err)
		}
		repo, err = git.PlainInit(f.dir, true)
	}
	if err != nil {
		return nil, fmt.Errorf("open clone in %s: %w", f.dir, err)
	}
	rem, err := repo.Remote(remoteName)
	switch {
	case errors.Is(err, git.ErrRemoteNotFound):
	case err != nil:
		return nil, fmt.Errorf("read remote of clone: %w", err)
	case len(rem.Config().URLs) == 1 && rem.Config().URLs[0] == f.remote.url:
		f.repo = repo
		return repo, nil
	default:
		if err := repo.DeleteRemote(remoteName); err != nil {
			return nil, fmt.Errorf("repoint remote of clone: %w", err)
		}
	}
	if _, err := repo.CreateRemote(&config.RemoteConfig{Name: remoteName, URLs: []string{f.remote.url}}); err != nil {
		return nil, fmt.Errorf("configure remote of clone: %w", err)
	}
	f.repo = repo
	return repo, nil
}

// resolve lists the remote's refs (one round trip, no objects) and returns
// the branch synced (branch, or the remote HEAD's when empty) and its head.
func (f *fetcher) resolve(ctx context.Context, branch string) (string, plumbing.Hash, error) {
	repo, err := f.open()
	if err != nil {
		return "", plumbing.ZeroHash, err
	}
	rem, err := repo.Remote(remoteName)
	if err != nil {
		return "", plumbing.ZeroHash, fmt.Errorf("read remote of clone: %w", err)
	}
	refs, err := rem.ListContext(ctx, &git.ListOptions{Auth: f.remote.auth})
	if err != nil {
		return "", plumbing.ZeroHash, fmt.Errorf("list refs of %s: %w", f.remote.display, f.remote.sanitize(err))
	}
	byName := make(map[plumbing.ReferenceName]*plumbing.Reference, len(refs))
	for _, r := range refs {
		byName[r.Name()] = r
	}
	if branch == "" {
		head, ok := byName[plumbing.HEAD]
		switch {
		case !ok:
			return "", plumbing.ZeroHash, fmt.Errorf("%s has no HEAD (empty repository?); set a branch", f.remote.display)
		case head.Type() == plumbing.SymbolicReference:
			branch = head.Target().Short()
		default: // no symref capability: the branch whose head is HEAD's
			for _, cand := range []string{"main", "master"} {
				if r, ok := byName[plumbing.NewBranchReferenceName(cand)]; ok && r.Hash() == head.Hash() {
					branch = cand
				}
			}
			if branch == "" {
				return "", plumbing.ZeroHash, fmt.Errorf("cannot tell the default branch of %s; set a branch", f.remote.display)
			}
		}
	}
	ref, ok := byName[plumbing.NewBranchReferenceName(branch)]
	if !ok {
		return branch, plumbing.ZeroHash, fmt.Errorf("branch %q not found in %s", branch, f.remote.display)
	}
	return branch, ref.Hash(), nil
}

// commit returns the commit want of branch, fetching it first unless the
// clone already has it (a re-check of an unchanged branch fetches nothing).
func (f *fetcher) commit(ctx context.Context, branch string, want plumbing.Hash) (*object.Commit, error) {
	repo, err := f.open()
	if err != nil {
		return nil, err
	}
	if c, err := repo.CommitObject(want); err == nil {
		return c, nil
	}
	spec := config.RefSpec(fmt.Sprintf("+refs/heads/%s:refs/remotes/%s/%s", branch, remoteName, branch))
	err = repo.FetchContext(ctx, &git.FetchOptions{
		RemoteName: remoteName,
		RefSpecs:   []config.RefSpec{spec},
		Auth:       f.remote.auth,
		Force:      true,
		Tags:       git.NoTags,
	})
	if err != nil && !errors.Is(err, git.NoErrAlreadyUpToDate) {
		return nil, fmt.Errorf("fetch %s from %s: %w", branch, f.remote.display, f.remote.sanitize(err))
	}
	c, err := repo.CommitObject(want)
	if err != nil {
		// The branch moved between the listing and the fetch: take what came.
		ref, rerr := repo.Reference(plumbing.NewRemoteReferenceName(remoteName, branch), true)
		if rerr != nil {
			return nil, fmt.Errorf("read fetched branch %s: %w", branch, rerr)
		}
		if c, err = repo.CommitObject(ref.Hash()); err != nil {
			return nil, fmt.Errorf("read commit %s: %w", ref.Hash(), err)
		}
	}
	return c, nil
}
