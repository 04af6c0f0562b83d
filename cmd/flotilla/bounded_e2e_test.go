package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"

	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/gitsync"
	"github.com/flotilla-dev/flotilla/schema"
)

// Bounded input through the real binary: a Git remote that accepts TCP and
// never answers fails the fetch within its timeout, and `flotilla sync`
// still answers.

// hungGitServer accepts connections on loopback and never answers.
func hungGitServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return "http://" + ln.Addr().String() + "/org/site.git"
}

// flotillaSync runs `flotilla sync` against c and returns its output and
// exit code; it fails the test if sync does not return within a minute.
func (c *upCluster) flotillaSync() (string, int) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, flotillaBin, "sync", "--kubeconfig", filepath.Join(c.dataDir, "kubeconfig.yaml"))
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		c.t.Fatalf("flotilla sync did not answer within a minute:\n%s", out)
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return string(out), ee.ExitCode()
	}
	if err != nil {
		c.t.Fatalf("flotilla sync: %v", err)
	}
	return string(out), 0
}

func TestUpStalledRemote(t *testing.T) {
	c := newUpCluster(t)
	const timeout = 30 * time.Second // longer than the sync trigger's 20s answer bound
	c.args = append(c.args, "--repo", hungGitServer(t), "--git-timeout", timeout.String())
	c.start() // returns once the first sync's status is written: its fetch failed

	st := c.syncStatus().Status
	if st.Result != schema.SyncFetchFailed || !strings.Contains(st.Message, "no answer within "+timeout.String()) {
		t.Fatalf("status after the first sync = %s: %s", st.Result, st.Message)
	}
	if cond := meta.FindStatusCondition(st.Conditions, gitsync.ConditionReady); cond == nil || cond.Reason != gitsync.ReasonFetchFailed {
		t.Errorf("Ready = %+v, want reason %s", cond, gitsync.ReasonFetchFailed)
	}

	// `flotilla sync` asks for a sync, which stalls on the remote: it
	// answers anyway, saying so, and so do several at once.
	out, code := c.flotillaSync()
	if code != 3 || !strings.Contains(out, "In progress:") {
		t.Fatalf("flotilla sync exited %d, want 3 (still running):\n%s", code, out)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 5)
	for range 5 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if out, code := c.flotillaSync(); code != 3 && code != 1 {
				errs <- fmt.Errorf("flotilla sync exited %d:\n%s", code, out)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	// The API keeps serving meanwhile.
	if _, _, err := c.client.List(context.Background(), "nodes", store.ListOptions{}); err != nil {
		t.Errorf("the API stopped answering: %v", err)
	}
}

// Bounded input through the real binary: a commit of 10,000 ConfigMaps
// applies whole; a commit past a limit, the bombs of issue 9 among them,
// is refused naming it while the server stays small; kill -9 in the middle
// of a big commit leaves all of it or none.

// gitOut runs git in the cluster's repository and returns its output.
func (c *upCluster) gitOut(args ...string) string {
	c.t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = filepath.Join(c.dataDir, "repo")
	out, err := cmd.CombinedOutput()
	if err != nil {
		c.t.Fatalf("git %v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

// commitFiles replaces the directory dir of the repository (removed when
// files is empty) with files, and commits; it returns the commit.
func (c *upCluster) commitFiles(msg, dir string, files map[string]string) string {
	c.t.Helper()
	root := filepath.Join(c.dataDir, "repo", dir)
	if err := os.RemoveAll(root); err != nil {
		c.t.Fatal(err)
	}
	for name, data := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			c.t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			c.t.Fatal(err)
		}
	}
	c.git("add", "-A")
	c.git("commit", "-qm", msg)
	return c.gitOut("rev-parse", "HEAD")
}

// configMapFiles is n ConfigMaps named PREFIX-NNNNN with 200-byte values,
// 100 to a file, as issue 9's commit.
func configMapFiles(prefix string, n int) map[string]string {
	value := strings.Repeat("v", 200)
	files := map[string]string{}
	for f := 0; f*100 < n; f++ {
		var b strings.Builder
		for i := f * 100; i < min(n, (f+1)*100); i++ {
			fmt.Fprintf(&b, "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: %s-%05d\ndata:\n  key: %s\n", prefix, i, value)
		}
		files[fmt.Sprintf("%s-%03d.yaml", prefix, f)] = b.String()
	}
	return files
}

// waitAttempt waits until the sync status is about commit, and returns it.
func (c *upCluster) waitAttempt(commit string, timeout time.Duration) schema.SyncStatusBody {
	c.t.Helper()
	var st schema.SyncStatusBody
	c.eventually("commit "+commit[:12]+" is evaluated", timeout, func() error {
		st = c.syncStatus().Status
		if st.LastAttemptedCommit != commit || (st.Result != schema.SyncApplied && st.Result != schema.SyncRefused) {
			return fmt.Errorf("status: %s of %s", st.Result, st.LastAttemptedCommit)
		}
		return nil
	})
	return st
}

// countConfigMaps counts the ConfigMaps of the default namespace whose
// names start with each prefix, from one list through the API (one
// revision of the store).
func (c *upCluster) countConfigMaps(prefixes ...string) []int {
	c.t.Helper()
	objs, _, err := c.client.List(context.Background(), "configmaps", store.ListOptions{Namespace: "default"})
	if err != nil {
		c.t.Fatalf("list configmaps: %v", err)
	}
	counts := make([]int, len(prefixes))
	for _, o := range objs {
		for i, p := range prefixes {
			if strings.HasPrefix(o.GetName(), p) {
				counts[i]++
			}
		}
	}
	return counts
}

// refusedBy checks that st refuses its commit for one of limits, with one
// problem located in file (a path prefix), the live commit staying live,
// and that `flotilla status` says so.
func (c *upCluster) refusedBy(t *testing.T, st schema.SyncStatusBody, live, file string, limits ...string) schema.Problem {
	t.Helper()
	if st.Result != schema.SyncRefused || st.LastAppliedCommit != live {
		t.Fatalf("status %s, live %s (want Refused, %s live): %s", st.Result, st.LastAppliedCommit, live, st.Message)
	}
	if cond := meta.FindStatusCondition(st.Conditions, gitsync.ConditionStalled); cond == nil || cond.Reason != gitsync.ReasonLimitExceeded {
		t.Errorf("Stalled = %+v, want reason %s", cond, gitsync.ReasonLimitExceeded)
	}
	errs := schema.Problems(st.Problems).Errors()
	if len(errs) != 1 {
		t.Fatalf("problems %v, want one", errs)
	}
	p := errs[0]
	named := false
	for _, l := range limits {
		named = named || p.Limit == l
	}
	if !named || !strings.HasPrefix(p.File, file) || p.Line == 0 || !strings.Contains(p.Reason, "(limit: "+p.Limit+" = ") {
		t.Fatalf("problem %s (limit %q), want one of %v located in %s", p, p.Limit, limits, file)
	}
	out := runCLI(t, c, "status")
	if !strings.Contains(out, "Refused") || !strings.Contains(out, p.String()) {
		t.Errorf("flotilla status does not show the refusal %q:\n%s", p, out)
	}
	return p
}

func TestUpBigCommit(t *testing.T) {
	c := newUpCluster(t)
	c.start()
	base := c.waitAttempt(c.gitOut("rev-parse", "HEAD"), time.Minute)

	// A commit of 10,000 ConfigMaps applies whole.
	const n = 10000
	big := c.commitFiles("10,000 ConfigMaps", "cms", configMapFiles("cm", n))
	st := c.waitAttempt(big, 3*time.Minute)
	if st.Result != schema.SyncApplied || st.Objects != base.Objects+n {
		t.Fatalf("status %s with %d objects, want Applied with %d: %s", st.Result, st.Objects, base.Objects+n, st.Message)
	}
	if got := c.countConfigMaps("cm-")[0]; got != n {
		t.Fatalf("the API lists %d of the %d ConfigMaps", got, n)
	}
	if out := runCLI(t, c, "status"); !strings.Contains(out, fmt.Sprintf("(%d objects", base.Objects+n)) || !strings.Contains(out, "Result:        Applied") {
		t.Errorf("flotilla status:\n%s", out)
	}

	// An object of 2 MiB is refused at its manifest, naming the limit.
	bigObj := c.commitFiles("a 2 MiB ConfigMap", "big", map[string]string{"big.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: big\ndata:\n  key: " + strings.Repeat("x", 2<<20) + "\n"})
	c.refusedBy(t, c.waitAttempt(bigObj, time.Minute), big, "big/big.yaml", schema.LimitObjectBytes)
	if _, err := c.client.Get(t.Context(), "configmaps", "default", "big"); !isNotFound(err) {
		t.Errorf("the refused ConfigMap: %v", err)
	}

	// 25,001 objects are one too many.
	live := c.commitFiles("no big one", "big", nil)
	if st := c.waitAttempt(live, time.Minute); st.Result != schema.SyncApplied {
		t.Fatalf("status %s: %s", st.Result, st.Message)
	}
	more := c.commitFiles("15,001 more", "more", configMapFiles("more", schema.DefaultLimits().MaxObjects-int(base.Objects)-n+1))
	// (Files are read in order: the first object beyond is in service.yaml.)
	p := c.refusedBy(t, c.waitAttempt(more, 3*time.Minute), live, "", schema.LimitObjects)
	if !strings.Contains(p.Reason, "too many objects") {
		t.Errorf("problem %s", p)
	}

	// The live commit is the 10,000 ConfigMaps, whole, and nothing more.
	if got := c.countConfigMaps("cm-", "more-"); got[0] != n || got[1] != 0 {
		t.Errorf("after the refusals the API lists %d ConfigMaps of the live commit and %d of the refused one", got[0], got[1])
	}
}

// cueBomb is a .cue manifest that doubles a string n times (issue 9: 22
// doublings, 280 bytes, allocated 141 MiB). A copy of schema's generator.
func cueBomb(n int) string {
	var b strings.Builder
	b.WriteString("a0: \"xxxxxxxx\"\n")
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&b, "a%d: a%d + a%d\n", i, i-1, i-1)
	}
	fmt.Fprintf(&b, "cm: {apiVersion: \"v1\", kind: \"ConfigMap\", metadata: name: \"bomb\", data: k: a%d}\n", n)
	return b.String()
}

// yamlBomb is a ConfigMap whose n data values are aliases of a 64 KiB
// string: n=1000 is issue 9's 74 KiB file that expands to 62 MiB. A copy
// of schema's generator.
func yamlBomb(n int) string {
	var b strings.Builder
	b.WriteString("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: bomb\n  annotations:\n    x: &a \"")
	b.WriteString(strings.Repeat("x", 64<<10))
	b.WriteString("\"\ndata:\n")
	for i := range n {
		fmt.Fprintf(&b, "  k%d: *a\n", i)
	}
	return b.String()
}

// peakRSS is the peak resident set of process pid (VmHWM), in bytes.
func peakRSS(t testing.TB, pid int) int64 {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err != nil {
				t.Fatalf("VmHWM %q: %v", rest, err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no VmHWM in /proc/%d/status", pid)
	return 0
}

func TestUpBombs(t *testing.T) {
	const maxRSS = 500 << 20
	c := newUpCluster(t)
	c.start()
	live := c.gitOut("rev-parse", "HEAD")
	c.waitAttempt(live, time.Minute)
	for _, tc := range []struct {
		name, file, data string
		limits           []string
	}{
		// 22 doublings: a 32 MiB string, an object too big (or too much
		// memory for the sandbox, should it get less).
		{"cue doubling bomb", "bomb.cue", cueBomb(22), []string{schema.LimitObjectBytes, schema.LimitCUEMemory}},
		// 74 KiB expanding to 62 MiB, refused before anything expands it.
		{"yaml alias bomb", "bomb.yaml", yamlBomb(1000), []string{schema.LimitDocumentExpandedBytes}},
		// Bigger ones: 2 GiB of CUE, stopped at the sandbox's memory
		// limit; 250 MiB of YAML.
		{"bigger cue bomb", "bomb.cue", cueBomb(28), []string{schema.LimitCUEMemory}},
		{"bigger yaml bomb", "bomb.yaml", yamlBomb(4000), []string{schema.LimitDocumentExpandedBytes}},
	} {
		bomb := c.commitFiles(tc.name, "bomb", map[string]string{tc.file: tc.data})
		p := c.refusedBy(t, c.waitAttempt(bomb, 2*time.Minute), live, "bomb/"+tc.file, tc.limits...)
		rss := peakRSS(t, c.cmd.Process.Pid)
		t.Logf("%s (%d bytes): %s; peak RSS of flotilla up so far %d MiB", tc.name, len(tc.data), p, rss>>20)
		if rss > maxRSS {
			t.Errorf("after the %s, flotilla up's peak RSS is %d MiB, over %d MiB", tc.name, rss>>20, maxRSS>>20)
		}
		// The server serves on, the live commit's objects in place.
		if _, err := c.client.Get(t.Context(), "configmaps", "default", "hello-config"); err != nil {
			t.Errorf("after the %s: %v", tc.name, err)
		}
	}
}

// TestUpKilledDuringBigCommit: `flotilla up` killed with -9 while it
// applies a commit of 5,000 ConfigMaps that replaces 5,000 others: after
// a restart the store holds all of one or all of the other, never a part
// or a mix, and its SyncStatus names the commit it holds; once synced, the
// new one. Killed at once when the first object shows in the API, then
// after random delays around the time the commit's store transaction is
// written. (The store's TestCrashDuringLargeCommit crashes each phase of
// it deterministically; this is the user's view through the binary.)
func TestUpKilledDuringBigCommit(t *testing.T) {
	const n = 5000
	c := newUpCluster(t)
	c.start()
	prev := c.commitFiles("round 0", "bulk", configMapFiles("r0", n))
	if st := c.waitAttempt(prev, 3*time.Minute); st.Result != schema.SyncApplied {
		t.Fatalf("status %s: %s", st.Result, st.Message)
	}
	seed := time.Now().UnixNano()
	rng := rand.New(rand.NewPCG(uint64(seed), 0))
	t.Logf("random delays from seed %d", seed)
	var took time.Duration // from a commit to its first object in the API
	for round := 1; round <= 6; round++ {
		prefix, old := fmt.Sprintf("r%d-", round), fmt.Sprintf("r%d-", round-1)
		start := time.Now()
		commit := c.commitFiles(fmt.Sprintf("round %d", round), "bulk", configMapFiles(fmt.Sprintf("r%d", round), n))
		if round == 1 {
			// As soon as the first object of the commit is visible.
			name := prefix + "00000"
			for {
				if _, err := c.client.Get(t.Context(), "configmaps", "default", name); err == nil {
					break
				} else if !isNotFound(err) {
					t.Fatalf("get %s: %v", name, err)
				}
				if time.Since(start) > 3*time.Minute {
					t.Fatal("the commit never showed")
				}
				time.Sleep(5 * time.Millisecond) // polling a condition: the kill must follow it closely
			}
			took = time.Since(start)
		} else {
			// Within the last 300 ms before a commit shows, where its
			// store transaction is written (sometimes before, sometimes
			// after: the time a sync takes varies).
			delay := max(0, took-300*time.Millisecond+time.Duration(rng.Int64N(int64(400*time.Millisecond))))
			time.Sleep(delay) // the kill point itself, not a wait for something
			t.Logf("round %d: kill after %s (a commit shows after about %s)", round, delay.Round(time.Millisecond), took.Round(time.Millisecond))
		}
		c.kill9()
		logBefore, _ := os.ReadFile(filepath.Join(c.dataDir, "flotilla.log"))

		c.start()
		// One list is one revision of the store; the status read before and
		// after it, if the same, is the one of that revision.
		before := c.syncStatus().Status.LastAppliedCommit
		counts := c.countConfigMaps(prefix, old)
		after := c.syncStatus().Status.LastAppliedCommit
		got, had := counts[0], counts[1]
		logAfter, _ := os.ReadFile(filepath.Join(c.dataDir, "flotilla.log"))
		recovery := "none needed"
		if i := len(logBefore); i <= len(logAfter) {
			switch tail := string(logAfter[i:]); {
			case strings.Contains(tail, "finishing a large commit that was interrupted"):
				recovery = "finished a sealed commit"
			case strings.Contains(tail, "discarded a large commit that was interrupted"):
				recovery = "discarded an unsealed commit"
			}
		}
		t.Logf("round %d: after the restart the API lists %d new and %d old ConfigMaps; store recovery: %s", round, got, had, recovery)
		switch {
		case got == n && had == 0:
			if before == after && after != commit {
				t.Errorf("round %d: the store holds the new commit's objects, its status says %s is live", round, after)
			}
		case got == 0 && had == n:
			if before == after && after != prev {
				t.Errorf("round %d: the store holds the old commit's objects, its status says %s is live", round, after)
			}
		default:
			t.Fatalf("round %d: after the restart %d of the new commit's %d ConfigMaps and %d of the old one's", round, got, n, had)
		}
		if st := c.waitAttempt(commit, 3*time.Minute); st.Result != schema.SyncApplied {
			t.Fatalf("round %d: status %s: %s", round, st.Result, st.Message)
		}
		if counts := c.countConfigMaps(prefix, old); counts[0] != n || counts[1] != 0 {
			t.Fatalf("round %d: once synced, %d new and %d old ConfigMaps", round, counts[0], counts[1])
		}
		prev = commit
	}
}
