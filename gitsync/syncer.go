package gitsync

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-git/go-git/v5/plumbing/object"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/schema"
)

// Outcome classes, as in Flux: a refused commit is stalled (nothing helps
// but a new commit, so no poll or resync evaluates it again; the next poll
// re-checks the branch head cheaply); a fetch or store failure is transient
// (the live commit stays, and the sync is retried with back-off).
var (
	// ErrRefused is wrapped by SyncNow's error when the commit is refused:
	// invalid, over a limit, refused by admission, or a sync of it panicked.
	// errors.As on *schema.InvalidError gives the problems.
	ErrRefused = errors.New("commit refused")
	// ErrTransient is wrapped by SyncNow's error when the repository could
	// not be fetched or read, or the store not written (Result FetchFailed;
	// retried with back-off). Its text never contains credentials.
	ErrTransient = errors.New("sync failed, will retry")
)

// Back-off of the retries after transient failures.
const (
	retryBase = time.Second
	retryMax  = 5 * time.Minute
)

// Syncer keeps the store equal to the configured branch. Create it with
// New; Run polls and serves Trigger and Request; SyncNow syncs on the
// caller's goroutine. Safe for concurrent use: syncs are serialised, and a
// caller waiting for its turn gives up when its context ends.
type Syncer struct {
	cfg     Config
	log     *slog.Logger
	remote  remote
	trigger chan struct{}          // pokes for Run; capacity 1, so pokes merge
	sem     chan struct{}          // capacity 1: held by the running sync
	branch  atomic.Pointer[string] // resolved branch, for the webhook filter
	metrics *syncMetrics           // nil until RegisterMetrics

	mu       sync.Mutex // guards the fields below
	wantFull bool       // a Request waits for a full sync that has not started
	state    State
	finished chan struct{} // closed, and replaced, when a sync ends
	failures int           // consecutive transient failures, for the back-off

	// Owned by the holder of sem.
	fetch fetcher
	last  *lastSync

	onStart func() // tests: called as each sync starts, holding sem
}

// State is what a Syncer is doing.
type State struct {
	// Syncing is true while a sync runs; Since is when it started.
	Syncing bool
	Since   time.Time
	// Started and Finished count the syncs since New.
	Started, Finished uint64
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
	if err := r.setCredentials(&cfg); err != nil {
		return nil, err
	}
	s := &Syncer{
		cfg:      cfg,
		log:      cfg.Logger.With("repo", r.display),
		remote:   r,
		trigger:  make(chan struct{}, 1),
		sem:      make(chan struct{}, 1),
		finished: make(chan struct{}),
		fetch:    fetcher{dir: cfg.WorkDir, remote: r, timeout: cfg.FetchTimeout, maxSize: cfg.MaxFetchSize},
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

// Run syncs at once, then on every poll interval (with jitter; with
// back-off after a transient failure) and on every Trigger, until ctx ends.
// A local repository's refs are watched meanwhile (see Config.NoWatch).
// Failures are recorded in the SyncStatus and logged; they never stop the
// loop. Returns nil when ctx ends.
func (s *Syncer) Run(ctx context.Context) error {
	if scheme, insecure := InsecureTransport(s.cfg.URL); insecure {
		s.log.Warn("the repository is fetched without encryption or server authentication: anyone on the path can read it or serve other commits; use https:// or ssh://",
			"scheme", scheme, "repo", SanitizeURL(s.cfg.URL))
	}
	if s.remote.local != "" && !s.cfg.NoWatch {
		stop, err := s.watchLocal(ctx, s.remote.local)
		if err != nil {
			s.log.Warn("cannot watch the local repository; commits sync at the next poll", "err", err, "interval", s.cfg.Interval)
		} else {
			defer stop()
		}
	}
	for {
		if _, err := s.sync(ctx, false); err != nil && ctx.Err() == nil {
			s.log.Debug("sync did not apply", "err", err)
		}
		t := s.cfg.Clock.NewTimer(s.nextWait())
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C():
		case <-s.trigger:
			t.Stop()
		}
	}
}

// nextWait is the time to the next poll: the interval with up to 10%
// jitter, or the back-off after consecutive transient failures.
func (s *Syncer) nextWait() time.Duration {
	s.mu.Lock()
	n := s.failures
	s.mu.Unlock()
	d := s.cfg.Interval
	if n > 0 {
		d = retryMax
		if n <= 16 {
			d = min(retryBase<<(n-1), retryMax)
		}
	}
	return d + rand.N(d/10+1)
}

// SyncNow fetches the branch and applies its head, on the caller's
// goroutine, after any running sync (giving up when ctx ends first).
// Unlike a poll it re-evaluates an unchanged commit in full, repairing
// drift, and re-evaluates a refused commit (the store may have changed: an
// object in the way deleted). It returns the resulting status, with Result
// Unchanged when the live commit already matched; the error wraps
// ErrRefused or ErrTransient when the commit was not applied.
func (s *Syncer) SyncNow(ctx context.Context) (schema.SyncStatusBody, error) {
	return s.sync(ctx, true)
}

// Request asks Run for a full sync (what `flotilla sync` asks for: as
// SyncNow, but on Run's goroutine) and waits until a sync that started
// after the request has finished, or ctx ends. Requests that arrive while
// one is pending merge into one sync. It returns the SyncStatus as stored
// after that sync; if ctx ends first, the stored one with a Reconciling
// condition (reason Progressing) saying since when a sync has been running,
// so that a stalled remote never holds a caller longer than its ctx. Run
// must be running. The error is only for a status that cannot be read.
func (s *Syncer) Request(ctx context.Context) (*schema.SyncStatus, error) {
	s.mu.Lock()
	s.wantFull = true
	ticket := s.state.Started + 1 // syncs run one after the other
	s.mu.Unlock()
	s.Trigger()
	for {
		s.mu.Lock()
		st, finished := s.state, s.finished
		s.mu.Unlock()
		if st.Finished >= ticket {
			return s.statusNow(ctx, nil)
		}
		select {
		case <-finished:
		case <-ctx.Done():
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			return s.statusNow(rctx, &st)
		}
	}
}

// statusNow reads the SyncStatus object; with running, it adds the
// Reconciling condition of the sync in progress.
func (s *Syncer) statusNow(ctx context.Context, running *State) (*schema.SyncStatus, error) {
	var ss *schema.SyncStatus
	obj, err := s.cfg.Store.Get(ctx, statusKind.Resource, "", schema.SyncStatusName)
	switch {
	case errors.Is(err, store.ErrNotFound):
		ss = s.statusObject(schema.SyncStatusBody{})
	case err != nil:
		return nil, fmt.Errorf("read sync status: %w", err)
	default:
		var ok bool
		if ss, ok = obj.(*schema.SyncStatus); !ok {
			return nil, fmt.Errorf("read sync status: store returned %T", obj)
		}
	}
	if running == nil {
		return ss, nil
	}
	c := metav1.Condition{Type: ConditionReconciling, Status: metav1.ConditionTrue, Reason: ReasonProgressing,
		Message: "a sync is pending", LastTransitionTime: metav1.NewTime(s.cfg.Clock.Now().Truncate(time.Second))}
	if running.Syncing {
		c.Message = fmt.Sprintf("a sync has been running for %s; its outcome will be in the status (flotilla status)",
			s.cfg.Clock.Since(running.Since).Round(time.Second))
		c.LastTransitionTime = metav1.NewTime(running.Since.Truncate(time.Second))
	}
	meta.SetStatusCondition(&ss.Status.Conditions, c)
	return ss, nil
}

// State says whether a sync is running, and how many have run.
func (s *Syncer) State() State {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state
}

// Branch is the branch synced: the configured one, or the remote HEAD's
// once a fetch has resolved it ("" before).
func (s *Syncer) Branch() string {
	if b := s.branch.Load(); b != nil {
		return *b
	}
	return ""
}

// sync is one reconcile, holding sem: resolve → (fetch) → read → validate
// → plan → admit → apply, each step small; the status is written on the
// way out.
func (s *Syncer) sync(ctx context.Context, full bool) (schema.SyncStatusBody, error) {
	select {
	case s.sem <- struct{}{}:
	case <-ctx.Done():
		return schema.SyncStatusBody{}, fmt.Errorf("wait for the running sync: %w", ctx.Err())
	}
	defer func() { <-s.sem }()
	full = s.begin(full)
	if s.onStart != nil {
		s.onStart()
	}
	start := time.Now()
	body, err := s.syncLocked(ctx, full)
	s.metrics.observe(string(body.Result), err, time.Since(start))
	s.end(errors.Is(err, ErrTransient))
	return body, err
}

// begin records a sync's start; the first sync to start after a Request
// is a full one.
func (s *Syncer) begin(full bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	full = full || s.wantFull
	s.wantFull = false
	s.state.Syncing = true
	s.state.Since = s.cfg.Clock.Now()
	s.state.Started++
	return full
}

// end records a sync's end, and whether it failed transiently.
func (s *Syncer) end(transient bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if transient {
		s.failures++
	} else {
		s.failures = 0
	}
	s.state.Syncing = false
	s.state.Finished++
	close(s.finished)
	s.finished = make(chan struct{})
}

// class is an outcome's class.
type class int

const (
	classApplied   class = iota // the commit is live (written now or before)
	classStalled                // refused: not evaluated again until the head moves
	classTransient              // failed: retried with back-off
)

// outcome is what evaluating the branch head came to.
type outcome struct {
	class  class
	next   schema.SyncStatusBody // what the status should say
	wrote  bool                  // the apply wrote objects (and the status)
	cached bool                  // from lastSync: nothing was evaluated
	err    error
	set    string // hash of the applied manifests, for the log
}

func (s *Syncer) syncLocked(ctx context.Context, full bool) (schema.SyncStatusBody, error) {
	now := s.cfg.Clock.Now()
	stored, err := s.readStatus(ctx)
	if err != nil {
		return schema.SyncStatusBody{}, fmt.Errorf("%w: %w", ErrTransient, err)
	}
	var commit string // the commit being evaluated, for a panic's report
	out := s.safeEvaluate(ctx, stored, now, full, &commit)
	next := out.next
	log := s.log.With("commit", short(next.LastAttemptedCommit))

	switch out.class {
	case classStalled:
		if !out.cached && !sameStatus(stored, next) { // once per commit, not once per poll
			first := ""
			if errs := schema.Problems(next.Problems).Errors(); len(errs) > 0 {
				first = errs[0].String()
			}
			log.Warn("commit refused", "reason", conditionReason(next, ConditionStalled), "problems", len(schema.Problems(next.Problems).Errors()), "first", first,
				"limited", schema.Problems(next.Problems).Limited())
			s.event(corev1.EventTypeWarning, "SyncRefused", "Refused commit %s (%s): %s", short(next.LastAttemptedCommit), conditionReason(next, ConditionStalled), first)
		}
	case classApplied:
		if out.wrote {
			log.Info("commit applied", "objects", next.Objects, "manifests", short(out.set))
			s.event(corev1.EventTypeNormal, "Synced", "Applied commit %s: %d objects", short(next.LastAttemptedCommit), next.Objects)
		}
	}
	if out.class != classTransient && !out.cached {
		s.last = &lastSync{commit: next.LastAttemptedCommit, body: next, at: now}
	}
	// The status, unless the apply wrote it with the objects.
	if !out.wrote && ctx.Err() == nil && !sameStatus(stored, next) {
		if werr := s.putStatus(ctx, stamp(stored, next, now)); werr != nil {
			s.log.Error("write sync status", "err", werr)
			if out.err == nil {
				out.err = fmt.Errorf("%w: %w", ErrTransient, werr)
			}
		}
	}
	ret := next
	if ret.Result == schema.SyncApplied && !out.wrote {
		ret.Result = schema.SyncUnchanged
	}
	return ret, out.err
}

// safeEvaluate is evaluate with crash isolation: a panic anywhere in it
// (fetch, load, plan, admission, apply) refuses the commit being evaluated
// as an internal error, logged with its stack; the process goes on, and
// the next commit is evaluated normally. A panic before the head is known
// is transient.
func (s *Syncer) safeEvaluate(ctx context.Context, stored schema.SyncStatusBody, now time.Time, full bool, commit *string) (out outcome) {
	defer func() {
		r := recover()
		if r == nil {
			return
		}
		s.log.Error("sync panicked; refusing the commit", "commit", short(*commit), "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
		if *commit == "" {
			out = s.transient(stored, fmt.Errorf("internal error: %v", r), ReasonInternalError)
			return
		}
		msg := fmt.Sprintf("internal error while syncing commit %s: %v; this is a bug in Flotilla (the log has its stack): please report it", short(*commit), r)
		out = s.stalled(stored, *commit, ReasonInternalError, schema.Problems{{Reason: msg}})
	}()
	return s.evaluate(ctx, stored, now, full, commit)
}

// evaluate finds the branch head and, unless lastSync already knows it,
// fetches, reads, validates and applies it.
func (s *Syncer) evaluate(ctx context.Context, stored schema.SyncStatusBody, now time.Time, full bool, commit *string) outcome {
	branch, head, err := s.fetch.resolve(ctx, s.cfg.Branch)
	if err != nil {
		return s.transient(stored, err, ReasonFetchFailed)
	}
	b := branch
	s.branch.Store(&b)
	*commit = head.String()
	if l := s.last; l != nil && l.commit == *commit {
		refused := l.body.Result == schema.SyncRefused
		if (refused && !full) || (!refused && !full && (s.cfg.Resync < 0 || now.Sub(l.at) < s.cfg.Resync)) {
			// Recovering from a fetch failure restores the real result.
			o := outcome{class: classApplied, next: l.body, cached: true}
			if refused {
				o.class, o.err = classStalled, refusedErr(l.body)
			}
			return o
		}
	}

	c, err := s.fetch.commit(ctx, branch, head)
	if errors.Is(err, ErrFetchTooLarge) {
		return s.stalled(stored, *commit, ReasonLimitExceeded, schema.Problems{{Limit: LimitFetchSize, Reason: s.remote.sanitize(err).Error()}})
	}
	if err != nil {
		return s.transient(stored, err, ReasonFetchFailed)
	}
	*commit = c.Hash.String()
	if o, refused := s.checkTrust(stored, c); refused {
		return o
	}

	fsys, probs, err := commitFS(c, s.cfg.Path, s.cfg.MaxFileSize, s.cfg.MaxTotalSize)
	if err != nil {
		return s.transient(stored, err, ReasonFetchFailed)
	}
	var set desiredSet
	var secrets []string
	if probs.Err() == nil {
		var dp schema.Problems
		dp, secrets = decryptSOPS(fsys, s.cfg.Path, s.cfg.SOPSIdentities)
		if dp.Err() != nil {
			return s.stalled(stored, *commit, ReasonDecryptionFailed, append(probs, dp...))
		}
	}
	if probs.Err() == nil {
		ms, lp := s.cfg.Loader.Load(fsys, s.cfg.Path)
		fsys = nil // the files are the manifests now: let a big commit's go
		probs = append(probs, lp...)
		if probs.Err() == nil {
			var bp schema.Problems
			set, bp = buildDesired(ms)
			probs = append(probs, bp...)
		}
		if probs.Err() == nil {
			if p, over := objectBytesProblem(set, s.cfg.MaxTotalSize); over {
				probs = append(probs, p)
			}
		}
	}
	probs = redactSecrets(probs, secrets)
	if probs.Err() != nil {
		return s.stalled(stored, *commit, problemsReason(probs), probs)
	}
	next, pp, wrote, err := s.apply(ctx, stored, c, set, probs)
	pp = redactSecrets(pp, secrets)
	if p, ok := storeLimit(err, len(set.objs)); ok { // past the store's limits: as past schema's
		return s.stalled(stored, *commit, ReasonLimitExceeded, append(probs, p))
	}
	var ae *applyError
	if errors.As(err, &ae) {
		if p, ok := ae.problem(); ok { // the store refused one object
			return s.stalled(stored, *commit, ReasonValidationFailed, redactSecrets(append(probs, p), secrets))
		}
	}
	if err != nil {
		return s.transient(stored, err, ReasonStoreFailed)
	}
	if len(pp) > 0 {
		return s.stalled(stored, *commit, ReasonAdmissionRefused, append(probs, pp...))
	}
	if err := keepLive(s.fetch.repo, next.LastAppliedCommit); err != nil {
		s.log.Warn("cannot mark the live commit in the clone; a force-push that drops it from the remote will be refused as a history rewrite", "err", err)
	}
	return outcome{class: classApplied, next: next, wrote: wrote, set: set.hash}
}

// checkTrust refuses a head that is not signed by a trusted key (with
// VerifySignatures) or does not descend from the live commit (unless
// AllowHistoryRewrite); see trust.go.
func (s *Syncer) checkTrust(stored schema.SyncStatusBody, c *object.Commit) (outcome, bool) {
	commit := c.Hash.String()
	if s.cfg.VerifySignatures {
		if msg := s.cfg.TrustedKeys.verifyCommit(c); msg != nil {
			return s.stalled(stored, commit, ReasonSignatureRefused, schema.Problems{{Reason: *msg}}), true
		}
	}
	if !s.cfg.AllowHistoryRewrite {
		msg, err := checkHistory(s.fetch.repo, c, stored.LastAppliedCommit)
		if err != nil {
			return s.transient(stored, err, ReasonFetchFailed), true
		}
		if msg != nil {
			return s.stalled(stored, commit, ReasonHistoryRewritten, schema.Problems{{Reason: *msg}}), true
		}
	}
	return outcome{}, false
}

func refusedErr(b schema.SyncStatusBody) error {
	return fmt.Errorf("%w: %s: %w", ErrRefused, short(b.LastAttemptedCommit), schema.Problems(b.Problems).Err())
}

// transient records a failure that a retry may cure (fetch, read or store
// write): the live commit stays, and Run retries with back-off.
func (s *Syncer) transient(stored schema.SyncStatusBody, err error, reason string) outcome {
	err = s.remote.sanitize(err)
	next := stored
	next.Result = schema.SyncFetchFailed
	next.Message = err.Error()
	next.Conditions = transientConditions(reason, next.Message, stored.LastAppliedCommit)
	if stored.Result != schema.SyncFetchFailed || stored.Message != next.Message {
		s.log.Warn("sync failed; keeping the live commit, retrying with back-off", "reason", reason, "err", next.Message, "commit", short(stored.LastAppliedCommit))
	}
	return outcome{class: classTransient, next: next, err: fmt.Errorf("%w: %w", ErrTransient, err)}
}

// stalled records a refused commit: the live commit stays, and the commit
// is not evaluated again by polls (only a new head, a `flotilla sync` or a
// restart evaluates it again).
func (s *Syncer) stalled(stored schema.SyncStatusBody, commit, reason string, probs schema.Problems) outcome {
	for i := range probs {
		if probs[i].File == "" { // a problem of the whole commit
			probs[i].File = "commit " + short(commit)
		}
	}
	b := stored
	b.LastAttemptedCommit = commit
	b.Result = schema.SyncRefused
	errs := probs.Errors()
	b.Message = fmt.Sprintf("commit %s refused (%d problem(s)); %s stays live: %s", short(commit), len(errs), orNone(short(stored.LastAppliedCommit)), errs[0].String())
	b.Problems = append([]schema.Problem(nil), probs...)
	b.Conditions = stalledConditions(reason, b.Message)
	return outcome{class: classStalled, next: b, err: refusedErr(b)}
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
	next.Conditions = appliedConditions(next.Message)
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
		admitted, err := admit(s.cfg.Admit, tx, acts)
		if err != nil {
			return err
		}
		if inTxProbs = admitted.Errors(); len(inTxProbs) > 0 {
			return errPlanRefused
		}
		next.Problems = append(append([]schema.Problem(nil), warnings...), admitted...)
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
