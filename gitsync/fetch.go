package gitsync

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/go-git/go-billy/v5/osfs"
	git "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/cache"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/transport"
	"github.com/go-git/go-git/v5/storage/filesystem"
)

// ErrFetchTimeout is wrapped by a ref listing or fetch that got no (full)
// answer within Config.FetchTimeout. Transient: retried with back-off.
var ErrFetchTimeout = errors.New("the remote did not answer in time")

// ErrFetchTooLarge is wrapped by a fetch that would download more than
// Config.MaxFetchSize. It refuses the branch head (stalled, with the
// LimitExceeded reason) until the head moves.
var ErrFetchTooLarge = errors.New("the fetch exceeds the size limit")

const remoteName = "origin"

// remote is where the repository comes from: the URL go-git uses (never
// with credentials), the URL fit to show, and the credentials, read from
// their files at each conversation.
type remote struct {
	url     string // given to go-git and stored in the clone's config
	display string // for logs, errors and status: no userinfo
	scheme  string // "http", "https", "ssh" (also for git@host:path), "git", "file"; "" for a local path
	creds   *credentials
	local   string // the directory of a local repository (path or file://); "" for a network remote
	// urlCreds is set when the URL itself carries a password or token
	// (https://user:token@host/...): New refuses it.
	urlCreds bool
}

// parseRemote parses rawURL. Local paths are made absolute so that the
// clone's config does not depend on the working dir. Userinfo is kept out
// of url and display; a password or an http(s) user name (often a token)
// marks the remote urlCreds.
func parseRemote(rawURL string) (remote, error) {
	rawURL = strings.TrimSpace(rawURL)
	u, err := url.Parse(rawURL)
	if err != nil || u.Scheme == "" || len(u.Scheme) == 1 { // a local path, scp-like git@host:path, or C:\ on Windows
		if isSCPLike(rawURL) {
			// user@host:path carries a user name at most, never a secret.
			return remote{url: rawURL, display: rawURL, scheme: "ssh", creds: &credentials{}}, nil
		}
		abs, aerr := filepath.Abs(rawURL)
		if aerr != nil {
			return remote{}, fmt.Errorf("gitsync: repository path %q: %w", rawURL, aerr)
		}
		return remote{url: abs, display: abs, local: abs, creds: &credentials{}}, nil
	}
	r := remote{scheme: strings.ToLower(u.Scheme), creds: &credentials{}}
	if r.scheme == "file" {
		r.local = filepath.Clean(u.Path)
	}
	if u.User != nil {
		_, hasPass := u.User.Password()
		switch {
		case hasPass:
			r.urlCreds = true
			u.User = nil
		case r.scheme == "http" || r.scheme == "https":
			r.urlCreds = true // a lone token as user name (https://TOKEN@host/...)
			u.User = nil
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

// InsecureTransport reports whether rawURL is fetched without TLS or SSH
// (http:// or git://): anyone on the path may read the repository or serve
// other commits. It returns the scheme.
func InsecureTransport(rawURL string) (string, bool) {
	scheme, _, ok := strings.Cut(strings.TrimSpace(rawURL), "://")
	if !ok {
		return "", false
	}
	scheme = strings.ToLower(scheme)
	return scheme, scheme == "http" || scheme == "git"
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
	msg := r.creds.scrub(err.Error())
	if msg == err.Error() {
		if _, ok := err.(*sanitizedError); ok {
			return err
		}
	}
	return &sanitizedError{msg: msg, err: err}
}

// fetcher owns the local bare clone. Not safe for concurrent use; the Syncer
// serialises syncs.
type fetcher struct {
	dir     string
	remote  remote
	timeout time.Duration // per ref listing, per fetch
	maxSize int64         // bytes one fetch may write
	repo    *git.Repository
}

// open opens the clone, creating it (an empty bare repository with the
// remote configured) on first use, and repoints the remote if the URL
// changed. Creating it empty and fetching (rather than PlainClone) works
// for empty remotes too and fetches only the branch that is synced.
func (f *fetcher) open() (*git.Repository, error) {
	if f.repo != nil {
		return f.repo, nil
	}
	if err := os.MkdirAll(f.dir, 0o700); err != nil {
		return nil, fmt.Errorf("create clone directory: %w", err)
	}
	st := &cappedStorage{Storage: filesystem.NewStorage(osfs.New(f.dir), cache.NewObjectLRUDefault()), limit: f.maxSize}
	repo, err := git.Open(st, nil)
	if errors.Is(err, git.ErrRepositoryNotExists) {
		repo, err = git.Init(st, nil) // bare
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
	auth, err := f.remote.auth()
	if err != nil {
		return "", plumbing.ZeroHash, err
	}
	lctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	refs, err := rem.ListContext(lctx, &git.ListOptions{Auth: auth})
	if err != nil {
		return "", plumbing.ZeroHash, fmt.Errorf("list refs of %s: %w", f.remote.display, f.timedOut(ctx, lctx, f.remote.sanitize(authHint(err))))
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
	auth, err := f.remote.auth()
	if err != nil {
		return nil, err
	}
	spec := config.RefSpec(fmt.Sprintf("+refs/heads/%s:refs/remotes/%s/%s", branch, remoteName, branch))
	fctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	err = repo.FetchContext(fctx, &git.FetchOptions{
		RemoteName: remoteName,
		RefSpecs:   []config.RefSpec{spec},
		Auth:       auth,
		Force:      true,
		Tags:       git.NoTags,
	})
	if err != nil && !errors.Is(err, git.NoErrAlreadyUpToDate) {
		f.removePartialPacks()
		return nil, fmt.Errorf("fetch %s from %s: %w", branch, f.remote.display, f.timedOut(ctx, fctx, f.remote.sanitize(err)))
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

// authHint says which settings to check when the remote refused the
// credentials.
func authHint(err error) error {
	switch {
	case errors.Is(err, transport.ErrAuthenticationRequired), errors.Is(err, transport.ErrAuthorizationFailed):
		return fmt.Errorf("%w (check the user name and the token: --git-username, --git-password-file, or the deploy key: --git-ssh-key-file)", err)
	case strings.Contains(err.Error(), "unable to authenticate"): // SSH: no key the server accepts
		return fmt.Errorf("%w (the server did not accept the SSH key: check --git-ssh-key-file and that the key is a deploy key of the repository)", err)
	case strings.Contains(err.Error(), "known_hosts"): // SSH without --git-known-hosts-file and no ~/.ssh/known_hosts
		return fmt.Errorf("%w (pin the server's host key with --git-known-hosts-file)", err)
	}
	return err
}

// timedOut names the deadline when the conversation's own context (inner)
// expired while the caller's (outer) did not: go-git's error then only
// says that a read was cancelled.
func (f *fetcher) timedOut(outer, inner context.Context, err error) error {
	if outer.Err() == nil && errors.Is(inner.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("%w: no answer within %s (FetchTimeout): %w", ErrFetchTimeout, f.timeout, err)
	}
	return err
}

// removePartialPacks deletes what an interrupted fetch left of its pack
// (go-git leaves its temporary file behind when the pack is cut short).
func (f *fetcher) removePartialPacks() {
	tmps, _ := filepath.Glob(filepath.Join(f.dir, "objects", "pack", "tmp_pack_*"))
	for _, p := range tmps {
		_ = os.Remove(p)
	}
}

// cappedStorage is the clone's storage with a limit on the bytes of each
// pack a fetch writes: go-git streams a fetched pack into PackfileWriter,
// so this is where the download can be cut off.
type cappedStorage struct {
	*filesystem.Storage
	limit int64
}

func (s *cappedStorage) PackfileWriter() (io.WriteCloser, error) {
	w, err := s.Storage.PackfileWriter()
	if err != nil {
		return nil, err
	}
	return &cappedWriter{WriteCloser: w, limit: s.limit}, nil
}

type cappedWriter struct {
	io.WriteCloser
	limit, n int64
}

func (w *cappedWriter) Write(p []byte) (int, error) {
	if w.n+int64(len(p)) > w.limit {
		return 0, fmt.Errorf("%w of %d bytes (MaxFetchSize)", ErrFetchTooLarge, w.limit)
	}
	n, err := w.WriteCloser.Write(p)
	w.n += int64(n)
	return n, err
}

// IsLocal reports whether rawURL names a repository on this machine (a
// path or a file:// URL): Run watches such a repository's refs.
func IsLocal(rawURL string) bool {
	r, err := parseRemote(rawURL)
	return err == nil && r.local != ""
}
