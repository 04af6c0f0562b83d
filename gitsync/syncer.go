package gitsync

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-git/go-git/v5/plumbing/object"

	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/schema"
)

// Outcome classes, as in Flux: a refused commit is stalled (nothing helps
// but a new commit, so it is not retried; the next poll re-checks the branch
// head cheaply); a fetch failure is transient (the live commit stays, the
// next poll retries).
var (
	// ErrRefused is wrapped by SyncNow's error when the commit is invalid;
	// errors.As on *schema.InvalidError gives the problems.
	ErrRefused = errors.New("commit refused")
	// ErrTransient is wrapped by SyncNow's error when the repository could
	// not be fetched or read, or the store not written (Result FetchFailed;
	// retried on the next poll). Its text never contains credentials.
	ErrTransient = errors.New("sync failed, will retry")
)

// Syncer keeps the store equal to the configured branch. Create it with
// New; Run polls, Trigger and SyncNow sync on demand. Safe for concurrent
// use: syncs are serialised.
type Syncer struct {
	cfg     Config
	log     *slog.Logger
	remote  remote
	trigger chan struct{}
	branch  atomic.Pointer[string] // resolved branch, for the webhook filter

	mu    sync.Mutex // serialises syncs; guards the fields below
	fetch fetcher
	last  *lastSync
}

// lastSync is what the last full evaluation of a commit found, so that an
// unchanged branch is not loaded and validated again on every poll.
type lastSync struct {
	commit string
	body   schema.SyncStatusBody // the status it led to (result Applied or Refused)
	at     time.Time
}

// New checks cfg and returns a Syncer. It does no I/O.
func New(cfg Config) (*Syncer, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	r, err := parseRemote(cfg.URL)
	if err != nil {
		return nil, err
	}
	s := &Syncer{
		cfg:     cfg,
		log:     cfg.Logger.With("repo", r.display),
		remote:  r,
		trigger: make(chan struct{}, 1),
		fetch:   fetcher{dir: cfg.WorkDir, remote: r},
	}
	if cfg.Branch != "" {
		b := cfg.Branch
		s.branch.Store(&b)
	}
	return s, nil
}

// Trigger asks Run for a sync soon. Pokes that arrive while one is pending
// merge into one sync. Never blocks.
func (s *Syncer) Trigger() {
	select {
	case s.trigger <- struct{}{}:
	default:
	}
}

// Run syncs at once, then on every poll interval (with jitter) and on every
// Trigger, until ctx ends. Failures are recorded in the SyncStatus and
// logged; they never stop the loop. Returns nil when ctx ends.
func (s *Syncer) Run(ctx context.Context) error {
	for {
		if _, err := s.sync(ctx, false); err != nil && ctx.Err() == nil {
			s.log.Debug("sync did not apply", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-s.cfg.Clock.After(s.jittered()):
		case <-s.trigger:
		}
	}
}

func (s *Syncer) jittered() time.Duration {
	return s.cfg.Interval + rand.N(s.cfg.Interval/10+1)
}

// SyncNow fetches the branch and applies its head (what `flotilla sync`
// asks for). Unlike a poll it re-evaluates an unchanged commit in full,
// repairing drift. It returns the resulting status, with Result Unchanged
// when the live commit already matched; the error wraps ErrRefused or
// ErrFetch when the commit was not applied.
func (s *Syncer) SyncNow(ctx context.Context) (schema.SyncStatusBody, error) {
	return s.sync(ctx, true)
}

// Branch is the branch synced: the configured one, or the remote HEAD's
// once a fetch has resolved it ("" before).
func (s *Syncer) Branch() string {
	if b := s.branch.Load(); b != nil {
		return *b
	}
	return ""
}

// sync is one reconcile: resolve → (fetch) → read → validate → plan →
// apply, each step small; the status is written on the way out.
func (s *Syncer) sync(ctx context.Context, full bool) (body schema.SyncStatusBody, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.cfg.Clock.Now()
	stored, err := s.readStatus(ctx)
	if err != nil {
		return schema.SyncStatusBody{}, err
	}
	var next schema.SyncStatusBody // what the status should say; written in the defer
	persist := true
	defer func() {
		if !persist {
			return
		}
		if ctx.Err() != nil || sameStatus(stored, next) {
			return // shutting down, or nothing new to say: write nothing
		}
		if werr := s.putStatus(ctx, stamp(stored, next, now)); werr != nil {
			s.log.Error("write sync status", "err", werr)
			if err == nil {
				err = werr
			}
		}
	}()

	branch, head, err := s.fetch.resolve(ctx, s.cfg.Branch)
	if err == nil {
		b := branch
		s.branch.Store(&b)
	}
	if err != nil {
		return s.fetchFailed(stored, &next, err)
	}
	commit := head.String()
	if l := s.last; l != nil && l.commit == commit && !full && (s.cfg.Resync < 0 || now.Sub(l.at) < s.cfg.Resync) {
		next = l.body // recovering from a fetch failure restores the real result
		out := l.body
		if out.Result == schema.SyncApplied {
			out.Result = schema.SyncUnchanged
		}
		return out, l.err()
	}

	c, err := s.fetch.commit(ctx, branch, head)
	if err != nil {
		return s.fetchFailed(stored, &next, err)
	}
	commit = c.Hash.String()
	log := s.log.With("commit", short(commit), "branch", branch)

	fsys, probs, err := commitFS(c, s.cfg.Path, s.cfg.MaxFileSize, s.cfg.MaxTotalSize)
	if err != nil {
		return s.fetchFailed(stored, &next, err)
	}
	var set desiredSet
	wrote := false
	if probs.Err() == nil {
		ms, lp := s.cfg.Loader.Load(fsys, s.cfg.Path)
		probs = append(probs, lp...)
		if probs.Err() == nil {
			var bp schema.Problems
			set, bp = buildDesired(ms)
			probs = append(probs, bp...)
		}
	}
	if probs.Err() == nil {
		var pp schema.Problems
		next, pp, wrote, err = s.apply(ctx, stored, c, set, probs)
		probs = append(probs, pp...)
		var ae *applyError
		if errors.As(err, &ae) {
			if p, ok := ae.problem(); ok {
				probs, err = append(probs, p), nil
			}
		}
		if err != nil {
			return s.fetchFailed(stored, &next, err)
		}
		persist = false // apply wrote the status, or found nothing to write
	}
	if probs.Err() != nil {
		persist = true
		next = refusedBody(stored, commit, probs)
		if !sameStatus(stored, next) { // once per commit, not once per poll
			log.Warn("commit refused", "problems", len(probs.Errors()), "first", probs.Errors()[0].String())
		}
	} else if wrote {
		log.Info("commit applied", "objects", next.Objects, "manifests", short(set.hash))
	}
	s.last = &lastSync{commit: commit, body: next, at: now}
	out := next
	if out.Result == schema.SyncApplied && !wrote {
		out.Result = schema.SyncUnchanged
	}
	return out, s.last.err()
}

func (l *lastSync) err() error {
	if l.body.Result == schema.SyncRefused {
		return fmt.Errorf("%w: %s: %w", ErrRefused, short(l.commit), schema.Problems(l.body.Problems).Err())
	}
	return nil
}

// fetchFailed records a transient failure (fetch, read or store write):
// the live commit stays, and the next poll retries.
func (s *Syncer) fetchFailed(stored schema.SyncStatusBody, next *schema.SyncStatusBody, err error) (schema.SyncStatusBody, error) {
	err = s.remote.sanitize(err)
	*next = stored
	next.Result = schema.SyncFetchFailed
	next.Message = err.Error()
	if stored.Result != schema.SyncFetchFailed || stored.Message != next.Message {
		s.log.Warn("sync failed; keeping the live commit, retrying on the next poll", "err", next.Message, "commit", short(stored.LastAppliedCommit))
	}
	return *next, fmt.Errorf("%w: %w", ErrTransient, err)
}

func refusedBody(stored schema.SyncStatusBody, commit string, probs schema.Problems) schema.SyncStatusBody {
	b := stored
	b.LastAttemptedCommit = commit
	b.Result = schema.SyncRefused
	errs := probs.Errors()
	b.Message = fmt.Sprintf("commit %s refused (%d problem(s)); %s stays live: %s", short(commit), len(errs), orNone(short(stored.LastAppliedCommit)), errs[0].String())
	b.Problems = append([]schema.Problem(nil), probs...)
	return b
}

func orNone(s string) string {
	if s == "" {
		return "no commit"
	}
	return "commit " + s
}

func short(commit string) string {
	if len(commit) > 12 {
		return commit[:12]
	}
	return commit
}

func subject(c *object.Commit) string {
	msg, _, _ := strings.Cut(strings.TrimSpace(c.Message), "\n")
	if len(msg) > 200 {
		msg = msg[:200] + "…"
	}
	return msg
}

// errPlanRefused aborts the transaction when, inside it, the plan finds an
// object Git may not take over, or the admission hook refuses an object.
var errPlanRefused = errors.New("plan refused")

// apply makes the store match set in one transaction together with the
// status, or writes nothing at all when both already match.
func (s *Syncer) apply(ctx context.Context, stored schema.SyncStatusBody, c *object.Commit, set desiredSet, warnings schema.Problems) (next schema.SyncStatusBody, probs schema.Problems, wrote bool, err error) {
	commit := c.Hash.String()
	acts, owned, probs, err := plan(ctxReader{ctx, s.cfg.Store}, set)
	if err != nil || len(probs) > 0 {
		return stored, probs, false, err
	}
	next = stored
	next.LastAppliedCommit = commit
	next.LastAppliedMessage = subject(c)
	next.LastAttemptedCommit = commit
	next.Result = schema.SyncApplied
	next.Message = fmt.Sprintf("commit %s is live", short(commit))
	next.Problems = append([]schema.Problem(nil), warnings...)
	next.Objects = owned
	if len(acts) == 0 && sameStatus(stored, next) {
		return next, nil, false, nil
	}
	next = stamp(stored, next, s.cfg.Clock.Now())
	var inTxProbs schema.Problems
	var statusDone bool
	_, err = s.cfg.Store.Txn(ctx, func(tx store.Tx) error {
		var err error
		acts, owned, inTxProbs, err = plan(tx, set)
		if err != nil {
			return err
		}
		if len(inTxProbs) > 0 {
			return errPlanRefused
		}
		if inTxProbs, err = admit(s.cfg.Admit, tx, acts); err != nil {
			return err
		} else if len(inTxProbs) > 0 {
			return errPlanRefused
		}
		next.Objects = owned
		if err := applyActions(tx, acts); err != nil {
			return err
		}
		statusDone, err = s.putStatusTx(tx, next)
		return err
	})
	if errors.Is(err, errPlanRefused) {
		return stored, inTxProbs, false, nil
	}
	if err != nil {
		return stored, nil, false, fmt.Errorf("apply commit %s: %w", short(commit), err)
	}
	if !statusDone {
		if err := s.putStatus(ctx, next); err != nil {
			return next, nil, true, err
		}
	}
	return next, nil, true, nil
}

// ctxReader is the store seen as a planner reader, outside a transaction.
type ctxReader struct {
	ctx context.Context
	st  store.Interface
}

func (r ctxReader) Get(resource, namespace, name string) (schema.Object, error) {
	return r.st.Get(r.ctx, resource, namespace, name)
}

func (r ctxReader) List(resource string, opts store.ListOptions) ([]schema.Object, error) {
	objs, _, err := r.st.List(r.ctx, resource, opts)
	return objs, err
}
