// Package gitsync keeps the store equal to one Git branch: it fetches the
// repository with go-git (on a poll, a webhook, a `flotilla sync`, or at
// once when a local repository's refs change),
// reads every manifest of the branch head straight from the commit tree, has
// the whole set validated, and applies a valid commit in one store
// transaction (create, update, prune), recording the outcome in the
// cluster's SyncStatus object. A commit with any error is refused whole, and
// so is a head that rewrites the branch's history or (when asked) is not
// signed by a trusted key (trust.go). Credentials come from files only
// (auth.go). SOPS-encrypted files are decrypted in memory with the
// server's age key before validation (sops.go); the clone keeps only the
// ciphertext.
package gitsync

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"path"
	"strings"
	"time"

	"k8s.io/utils/clock"

	"github.com/flotilla-dev/flotilla/cluster/events"
	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/gitsync/sops"
)

// Defaults of Config.
const (
	DefaultInterval     = 15 * time.Second
	DefaultResync       = 10 * time.Minute
	DefaultFetchTimeout = 60 * time.Second
	DefaultMaxFetchSize = 512 << 20 // 512 MiB
)

// Config configures a Syncer. Zero values mean the documented default.
type Config struct {
	// URL of the repository: https://, http://, ssh://, git@host:path,
	// file:// or a local path (bare or not). Credentials in the URL
	// (https://user:token@host/repo) are refused: they come from files
	// (PasswordFile, SSHKeyFile). Required.
	URL string
	// Username is the HTTPS user name sent with the password or token of
	// PasswordFile. Default DefaultHTTPUsername ("git"), which hosting
	// services accept with a token. (--git-username)
	Username string
	// PasswordFile holds the HTTPS password or access token (one line),
	// for http(s):// URLs. Read at each fetch, so a token rotated in place
	// is picked up; never logged or shown. Default: no credentials.
	// (--git-password-file)
	PasswordFile string
	// SSHKeyFile is an unencrypted SSH private key (a deploy key), for
	// ssh:// and user@host:path URLs. Default: go-git's (the SSH agent).
	// (--git-ssh-key-file)
	SSHKeyFile string
	// KnownHostsFile pins the SSH server's host key (known_hosts format,
	// as ssh-keyscan prints it); a server presenting another key is
	// refused (ErrHostKey). Used with SSHKeyFile. Default: go-git's
	// ($SSH_KNOWN_HOSTS, ~/.ssh/known_hosts). (--git-known-hosts-file)
	KnownHostsFile string
	// AllowHistoryRewrite applies a branch head that does not descend
	// from the live commit (after a force-push or a reset). Default false:
	// such a head is refused (stalled, reason HistoryRewritten) and the
	// live commit stays. (--allow-history-rewrite)
	AllowHistoryRewrite bool
	// VerifySignatures applies only a branch head signed by one of
	// TrustedKeys (Flux's spec.verify, mode HEAD); an unsigned or
	// otherwise signed head is refused (stalled, reason
	// VerificationFailed). Requires TrustedKeys. (--verify-signatures)
	VerifySignatures bool
	// TrustedKeys are the keys VerifySignatures accepts
	// (LoadTrustedKeys; --trusted-keys-file).
	TrustedKeys *TrustedKeys
	// SOPSIdentities decrypt the SOPS-encrypted YAML files of a commit
	// (sops --encrypt --age RECIPIENT, as Flux decrypts them), in memory,
	// before validation (sops.LoadIdentities; --sops-age-key-file). A
	// commit with a file they cannot decrypt is refused (reason
	// DecryptionFailed), naming the file's recipients. Default nil: a
	// commit with an encrypted file is refused.
	SOPSIdentities *sops.Identities
	// Branch to sync. Default: the remote's HEAD branch.
	Branch string
	// Path is the sub-directory of the repository holding the manifests.
	// Default: the repository root.
	Path string
	// Interval between polls. Default 15s; each wait adds up to 10% jitter
	// so that many clusters on one Git server do not poll in step. A poll of
	// an unchanged branch is one ref listing and writes nothing. After a
	// transient failure (fetch, store) the next attempt backs off instead:
	// 1s, 2s, 4s, … up to 5 minutes, until one succeeds; a trigger (webhook,
	// `flotilla sync`, a local commit) still syncs at once.
	Interval time.Duration
	// Resync is how often the full manifest set of an unchanged commit is
	// re-applied (repairing objects deleted behind Git's back). Default 10m;
	// negative disables it. A re-apply that finds no drift writes nothing.
	// A refused (stalled) commit is never re-evaluated by polls or
	// resyncs: only a new head, a `flotilla sync` or a restart does.
	Resync time.Duration
	// WebhookSecret authenticates webhook calls (the HMAC key for GitHub and
	// Gitea, the token for GitLab). Empty disables the webhook: every call
	// is answered 403.
	WebhookSecret string
	// WorkDir holds the local clone (a bare repository), under the data dir.
	// Required.
	WorkDir string
	// Store receives the objects and the SyncStatus. Required.
	Store store.Interface
	// Loader validates and decodes the manifests (schema.NewValidator()).
	// Required.
	Loader Loader
	// Admit, when set, completes and checks the objects each commit
	// creates, updates or deletes, inside the apply transaction (see
	// AdmitFunc); its errors refuse the commit. Default nil: objects are
	// written as Git has them. The server sets ipalloc's AdmitGit, which
	// gives Services their cluster IPs and node ports.
	Admit AdmitFunc
	// Logger; default slog.Default(), with subsystem=gitsync added.
	Logger *slog.Logger
	// Events records a Normal "Synced" Event for each applied commit and a
	// Warning "SyncRefused" for each refused one, about the cluster's
	// SyncStatus object (cluster-scoped, so in the default namespace, as
	// Kubernetes does for Nodes): `kubectl get events` shows Git next to
	// what it caused. Default nil: none.
	Events events.Recorder
	// Clock times polls, back-off and the status's timestamps; default the
	// wall clock (tests give testkit.NewFakeClock). Network deadlines
	// (FetchTimeout) are always wall-clock time.
	Clock clock.Clock
	// FetchTimeout bounds each conversation with the remote: one ref
	// listing, one fetch. Default 60s. A remote that accepts the connection
	// and never answers fails the attempt after it (a transient failure,
	// recorded in the SyncStatus); it never blocks later syncs.
	FetchTimeout time.Duration
	// MaxFetchSize limits the bytes one fetch may download (the pack the
	// remote sends, history included). Default 512 MiB, well above the
	// 64 MiB of manifests a commit may hold (schema's MaxCommitBytes). A
	// branch whose fetch would exceed it is refused (stalled until its head
	// moves; Problem.Limit "MaxFetchSize"), so a huge or hostile repository
	// cannot fill the data dir.
	MaxFetchSize int64
	// NoWatch turns off watching a local repository. By default, when URL
	// is a local path or file:// URL, its refs (HEAD, refs/heads/*,
	// packed-refs; also through a worktree's .git file) are watched with
	// inotify and a commit syncs at once instead of at the next poll.
	// Nothing is written into the repository.
	NoWatch bool
	// MaxFileSize limits one manifest file read from the repository: a
	// larger one refuses the commit before it is read (Problem.Limit
	// "MaxFileBytes"); other files are never read. Default: the Loader's
	// MaxFileBytes (schema.Limits, 8 MiB), so the limit is the same
	// whether gitsync or the Loader meets it first.
	MaxFileSize int64
	// MaxTotalSize limits the manifest files read from one commit, in all,
	// and again the objects they make, as JSON with Flotilla's
	// annotations (a YAML file grows as JSON, and through its aliases):
	// past it the commit is refused (Problem.Limit "MaxCommitBytes").
	// Default: the Loader's MaxCommitBytes (schema.Limits, 64 MiB).
	MaxTotalSize int64
}

func (c *Config) setDefaults() error {
	if strings.TrimSpace(c.URL) == "" {
		return errors.New("gitsync: URL is required (--git-url)")
	}
	if c.WorkDir == "" {
		return errors.New("gitsync: WorkDir is required")
	}
	if c.Store == nil {
		return errors.New("gitsync: Store is required")
	}
	if c.Loader == nil {
		return errors.New("gitsync: Loader is required")
	}
	if c.VerifySignatures && c.TrustedKeys.Empty() {
		return errors.New("gitsync: verifying signatures needs trusted keys (--verify-signatures needs --trusted-keys-file)")
	}
	if c.Interval < 0 {
		return fmt.Errorf("gitsync: Interval %s must not be negative (--git-interval)", c.Interval)
	}
	if c.Interval == 0 {
		c.Interval = DefaultInterval
	}
	if c.Resync == 0 {
		c.Resync = DefaultResync
	}
	lim := loaderLimits(c.Loader)
	if c.MaxFileSize <= 0 {
		c.MaxFileSize = lim.MaxFileBytes
	}
	if c.MaxTotalSize <= 0 {
		c.MaxTotalSize = lim.MaxCommitBytes
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	c.Logger = c.Logger.With("subsystem", "gitsync")
	if c.Clock == nil {
		c.Clock = clock.RealClock{}
	}
	if c.FetchTimeout < 0 {
		return fmt.Errorf("gitsync: FetchTimeout %s must not be negative (--git-timeout)", c.FetchTimeout)
	}
	if c.FetchTimeout == 0 {
		c.FetchTimeout = DefaultFetchTimeout
	}
	if c.MaxFetchSize <= 0 {
		c.MaxFetchSize = DefaultMaxFetchSize
	}
	p, err := cleanRepoPath(c.Path)
	if err != nil {
		return err
	}
	c.Path = p
	if c.Branch != "" {
		c.Branch = strings.TrimPrefix(c.Branch, "refs/heads/")
	}
	return nil
}

// cleanRepoPath turns a user's sub-path into an fs.ValidPath ("." for the
// root), refusing paths that climb out of the repository.
func cleanRepoPath(p string) (string, error) {
	p = strings.Trim(strings.TrimSpace(p), "/")
	if p == "" {
		return ".", nil
	}
	p = path.Clean(p)
	if !fs.ValidPath(p) {
		return "", fmt.Errorf("gitsync: Path %q is not a path inside the repository (--git-path)", p)
	}
	return p, nil
}
