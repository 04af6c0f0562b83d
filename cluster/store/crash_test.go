package store

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/flotilla-dev/flotilla/internal/testkit"
	corev1 "k8s.io/api/core/v1"
)

// The crash test: a process applying a large commit is killed with SIGKILL
// at each phase of the commit (and once at a random moment); after a
// restart the store holds all of the commit or none of it, with the
// revision counter and the event log to match.

const (
	crashEnv     = "FLOTILLA_STORE_CRASH" // dir|phase: run TestHelperCrashCommit
	crashOld     = 100                    // objects before the commit
	crashNew     = 5000                   // objects the commit creates
	crashChanged = 50                     // old objects it updates, and as many it deletes
	crashWrites  = crashNew + 2*crashChanged
)

// crashTxn is the commit: update old-00..49, create new-0000..4999, delete
// old-50..99, in that order. Its 1 KiB values make it too big for one
// Badger transaction (about 14 MB with events), so it takes the journal.
func crashTxn(tx Tx) error {
	for i := range crashChanged {
		cm := configMap("web", fmt.Sprintf("old-%02d", i), map[string]string{"v": "2"})
		if _, err := tx.Update(cm); err != nil {
			return err
		}
	}
	value := strings.Repeat("x", 1024)
	for i := range crashNew {
		if _, err := tx.Create(configMap("web", fmt.Sprintf("new-%04d", i), map[string]string{"v": value})); err != nil {
			return err
		}
	}
	for i := crashChanged; i < crashOld; i++ {
		if _, err := tx.Delete("configmaps", "web", fmt.Sprintf("old-%02d", i), DeleteOptions{}); err != nil {
			return err
		}
	}
	return nil
}

// TestHelperCrashCommit is the child process of TestCrashDuringLargeCommit;
// it is skipped in a normal run.
func TestHelperCrashCommit(t *testing.T) {
	spec := os.Getenv(crashEnv)
	if spec == "" {
		t.Skip("the child process of TestCrashDuringLargeCommit")
	}
	dir, phase, _ := strings.Cut(spec, "|")
	cfg := Config{Dir: dir, Logger: slog.New(slog.DiscardHandler)}
	cfg.testHook = func(p commitPhase) {
		if string(p) == phase {
			_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {} // the signal is on its way
		}
	}
	s, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Println("committing") // the parent's cue for a random kill
	if _, err := s.Txn(context.Background(), crashTxn); err != nil {
		t.Fatal(err)
	}
	fmt.Println("committed")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestCrashDuringLargeCommit(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a child process per phase")
	}
	for _, tc := range []struct {
		phase commitPhase
		all   bool // after a restart the store has all of the commit (else none)
	}{
		{phaseJournalHalf, false},
		{phaseJournalWritten, false},
		{phaseSealed, true},
		{phaseApplyHalf, true},
		{phaseApplied, true},
	} {
		t.Run(string(tc.phase), func(t *testing.T) {
			dir := t.TempDir()
			start := seedCrashStore(t, dir)
			if killed, _ := runCrashChild(t, dir, tc.phase, -1); !killed {
				t.Fatalf("the child was not killed at %s", tc.phase)
			}
			if all := checkCrashStore(t, dir, start); all != tc.all {
				t.Errorf("killed at %s: the store has all of the commit: %v, want %v", tc.phase, all, tc.all)
			}
		})
	}
	// Not killed, the commit is whole; killed at a random moment of it
	// (from the start of the Txn to a little past its end), whole or none.
	var took time.Duration
	t.Run("complete", func(t *testing.T) {
		dir := t.TempDir()
		start := seedCrashStore(t, dir)
		var killed bool
		if killed, took = runCrashChild(t, dir, "", -1); killed {
			t.Fatal("the child was killed")
		}
		if !checkCrashStore(t, dir, start) {
			t.Error("a commit that returned is not in the store")
		}
	})
	for i := range 2 {
		t.Run(fmt.Sprintf("random-%d", i), func(t *testing.T) {
			dir := t.TempDir()
			start := seedCrashStore(t, dir)
			after := rand.N(took*6/5 + 1)
			killed, _ := runCrashChild(t, dir, "", after)
			all := checkCrashStore(t, dir, start)
			t.Logf("killed %v after %v of a %v commit: the store has %s of it",
				killed, after, took, map[bool]string{true: "all", false: "none"}[all])
		})
	}
}

// runCrashChild runs TestHelperCrashCommit on the store in dir, to be
// killed at phase by itself, or by this process killAfter (if not
// negative) the child said it starts the commit. It reports whether the
// child was killed, and how long it ran from the start of the commit.
func runCrashChild(t *testing.T, dir string, phase commitPhase, killAfter time.Duration) (bool, time.Duration) {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestHelperCrashCommit$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashEnv+"="+dir+"|"+string(phase))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var output []string
	var began time.Time
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		output = append(output, sc.Text())
		if sc.Text() == "committing" {
			began = time.Now()
			if killAfter >= 0 {
				time.AfterFunc(killAfter, func() { _ = cmd.Process.Kill() })
			}
		}
	}
	err = cmd.Wait()
	took := time.Since(began)
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.Sys().(syscall.WaitStatus).Signal() == syscall.SIGKILL {
		return true, took
	}
	if err != nil || began.IsZero() {
		t.Fatalf("the child failed: %v; its output:\n%s", err, strings.Join(output, "\n"))
	}
	return false, took
}

// seedCrashStore writes the objects before the commit and returns the
// revision.
func seedCrashStore(t *testing.T, dir string) int64 {
	t.Helper()
	s, err := Open(Config{Dir: dir, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for i := range crashOld {
		mustCreate(t, s, configMap("web", fmt.Sprintf("old-%02d", i), map[string]string{"v": "1"}))
	}
	return s.Revision()
}

// checkCrashStore reopens the store after the crash, checks that it holds
// all of the commit or none of it, consistently in its objects, its
// revision, its event log and its journal, and reports which.
func checkCrashStore(t *testing.T, dir string, start int64) (all bool) {
	t.Helper()
	ctx := context.Background()
	s, err := Open(Config{Dir: dir, Logger: testkit.Logger(t)})
	if err != nil {
		t.Fatalf("reopen after the crash: %v", err)
	}
	defer s.Close()

	objs, rev, err := s.List(ctx, "configmaps", ListOptions{Namespace: "web"})
	if err != nil {
		t.Fatal(err)
	}
	var created, updated, old int
	for _, o := range objs {
		cm := o.(*corev1.ConfigMap)
		switch {
		case strings.HasPrefix(cm.Name, "new-"):
			created++
		case cm.Data["v"] == "2":
			updated++
		default:
			old++
		}
	}
	all = rev == start+crashWrites
	switch {
	case all && created == crashNew && updated == crashChanged && old == 0:
	case rev == start && created == 0 && updated == 0 && old == crashOld:
	default:
		t.Fatalf("half a commit: revision %d (before %d, %d writes), %d created, %d updated, %d old objects",
			rev, start, crashWrites, created, updated, old)
	}
	if s.Revision() != rev {
		t.Errorf("Revision() %d, List's revision %d", s.Revision(), rev)
	}
	// Nothing of the journal is left.
	err = s.view(func(btx *badger.Txn) error {
		if _, err := btx.Get(metaPendingKey); !errors.Is(err, badger.ErrKeyNotFound) {
			return fmt.Errorf("the seal is still there: %v", err)
		}
		it := btx.NewIterator(badger.IteratorOptions{Prefix: eventPrefix})
		defer it.Close()
		if it.Seek(eventKey(rev + 1)); it.ValidForPrefix(eventPrefix) {
			return fmt.Errorf("event %q past the revision %d", it.Item().Key(), rev)
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
	// The event log from before the commit: the commit's writes in order
	// (or none), then a write made now.
	w, err := s.Watch(ctx, "configmaps", ListOptions{}, start)
	if err != nil {
		t.Fatal(err)
	}
	mustCreate(t, s, configMap("web", "after", nil))
	if all {
		for i := range crashWrites {
			ev := next(t, w)
			want := fmt.Sprintf("%s web/new-%04d", Added, i-crashChanged)
			switch {
			case i < crashChanged:
				want = fmt.Sprintf("%s web/old-%02d", Modified, i)
			case i >= crashChanged+crashNew:
				want = fmt.Sprintf("%s web/old-%02d", Deleted, i-crashNew)
			}
			got := fmt.Sprintf("%s %s/%s", ev.Type, ev.Object.GetNamespace(), ev.Object.GetName())
			if got != want || ev.Revision != start+int64(i)+1 || rv(t, ev.Object) != ev.Revision {
				t.Fatalf("event %d: %s at revision %d (rv %s), want %s at %d",
					i, got, ev.Revision, ev.Object.GetResourceVersion(), want, start+int64(i)+1)
			}
		}
	}
	if ev := next(t, w); ev.Object.GetName() != "after" || ev.Revision != rev+1 {
		t.Errorf("after the commit: %s %s at revision %d, want ADDED after at %d", ev.Type, ev.Object.GetName(), ev.Revision, rev+1)
	}
	return all
}

// TestLargeCommitFails: when Badger fails in the middle of a large commit
// (here: it is closed under the store), a commit not yet sealed is none of
// it and the store goes on reporting the error; one sealed makes the store
// refuse every read and write (no reader may see half of it) until a
// restart, which finishes it.
func TestLargeCommitFails(t *testing.T) {
	for _, tc := range []struct {
		phase commitPhase
		all   bool
	}{{phaseJournalHalf, false}, {phaseApplyHalf, true}} {
		t.Run(string(tc.phase), func(t *testing.T) {
			dir := t.TempDir()
			start := seedCrashStore(t, dir)
			var s *Badger
			cfg := Config{Dir: dir, Logger: testkit.Logger(t)}
			cfg.testHook = func(p commitPhase) {
				if p == tc.phase {
					if err := s.db.Close(); err != nil {
						t.Errorf("close badger: %v", err)
					}
				}
			}
			s, err := Open(cfg)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s.Txn(context.Background(), crashTxn); err == nil {
				t.Fatal("the txn succeeded on a closed database")
			}
			if s.Revision() != start {
				t.Errorf("a failed commit moved the revision to %d", s.Revision())
			}
			_, err = s.Get(context.Background(), "configmaps", "web", "old-00")
			if tc.all && (err == nil || !strings.Contains(err.Error(), "restart")) {
				t.Errorf("a read after a sealed commit failed to apply: %v, want an error saying to restart", err)
			}
			_ = s.Close()
			if all := checkCrashStore(t, dir, start); all != tc.all {
				t.Errorf("after a failure at %s the store has all of the commit: %v, want %v", tc.phase, all, tc.all)
			}
		})
	}
}
