package gitsync

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/internal/testkit"

	"github.com/flotilla-dev/flotilla/schema"
)

func TestFirstSyncAppliesEveryObject(t *testing.T) {
	h := newHarness(t)
	commit := h.remote.commit("Add config\n\nbody", map[string]string{
		"a.yaml":    configMap("a", "", "1"),
		"b.yaml":    configMap("b", "apps", "1"),
		"README.md": "not a manifest",
	})
	body, err := h.sync()
	if err != nil {
		t.Fatal(err)
	}
	if body.Result != schema.SyncApplied || body.LastAppliedCommit != commit || body.LastAppliedMessage != "Add config" {
		t.Fatalf("status = %+v", body)
	}
	if body.Objects != 3 { // a, b, and the namespace apps
		t.Errorf("Objects = %d, want 3", body.Objects)
	}
	a := h.get("configmaps", "default", "a")
	ann := a.GetAnnotations()
	if ann[schema.AnnotationManagedBy] != schema.ManagedByGit || ann[schema.AnnotationSource] != "a.yaml:1" || len(ann[schema.AnnotationAppliedHash]) != 64 {
		t.Errorf("annotations = %v", ann)
	}
	ns := h.get("namespaces", "", "apps")
	if ns.GetAnnotations()[schema.AnnotationManagedBy] != schema.ManagedByGit {
		t.Errorf("auto namespace not marked: %v", ns.GetAnnotations())
	}
	st := h.get("syncstatuses", "", schema.SyncStatusName).(*schema.SyncStatus)
	if st.Status.LastAppliedCommit != commit || st.Spec.Branch != "main" || st.Spec.URL != h.remote.bare || st.Status.LastAppliedTime == nil {
		t.Errorf("stored status = %+v", st)
	}
}

func TestUnchangedCommitWritesNothing(t *testing.T) {
	h := newHarness(t)
	h.remote.commit("one", map[string]string{"a.yaml": configMap("a", "", "1")})
	if _, err := h.sync(); err != nil {
		t.Fatal(err)
	}
	rev := h.store.Revision()
	for i := 0; i < 3; i++ {
		body, err := h.sync() // a full re-evaluation
		if err != nil {
			t.Fatal(err)
		}
		if body.Result != schema.SyncUnchanged {
			t.Errorf("Result = %s, want Unchanged", body.Result)
		}
		h.clock.Step(time.Hour)
		if body, err = h.poll(); err != nil || body.Result != schema.SyncUnchanged {
			t.Errorf("poll = %s, %v", body.Result, err)
		}
	}
	if got := h.store.Revision(); got != rev {
		t.Errorf("store revision moved from %d to %d while idle", rev, got)
	}
}

func TestCommitChangingOneManifestUpdatesOnlyIt(t *testing.T) {
	h := newHarness(t)
	h.remote.commit("one", map[string]string{"a.yaml": configMap("a", "", "1"), "b.yaml": configMap("b", "", "1")})
	if _, err := h.sync(); err != nil {
		t.Fatal(err)
	}
	a0, b0 := h.get("configmaps", "default", "a"), h.get("configmaps", "default", "b")
	// A controller's annotation on a survives Git's update.
	a0.SetAnnotations(mergeMap(a0.GetAnnotations(), map[string]string{"example.kubernetes.io/seen": "yes"}))
	if _, err := h.store.Update(context.Background(), a0); err != nil {
		t.Fatal(err)
	}
	a0 = h.get("configmaps", "default", "a")
	h.remote.commit("two", map[string]string{"a.yaml": configMap("a", "", "2")})
	body, err := h.poll()
	if err != nil || body.Result != schema.SyncApplied {
		t.Fatalf("sync = %+v, %v", body, err)
	}
	a1, b1 := h.get("configmaps", "default", "a"), h.get("configmaps", "default", "b")
	if a1.(*corev1.ConfigMap).Data["key"] != "2" || a1.GetResourceVersion() == a0.GetResourceVersion() {
		t.Errorf("a not updated: %+v", a1)
	}
	if a1.GetAnnotations()["example.kubernetes.io/seen"] != "yes" {
		t.Errorf("system annotation dropped: %v", a1.GetAnnotations())
	}
	if b1.GetResourceVersion() != b0.GetResourceVersion() {
		t.Errorf("b rewritten: rv %s → %s", b0.GetResourceVersion(), b1.GetResourceVersion())
	}
}

func mergeMap(a, b map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		out[k] = v
	}
	return out
}

func TestPruneOnlyWhatGitCreated(t *testing.T) {
	h := newHarness(t)
	h.remote.commit("one", map[string]string{"a.yaml": configMap("a", "", "1"), "b.yaml": configMap("b", "apps", "1")})
	if _, err := h.sync(); err != nil {
		t.Fatal(err)
	}
	manual := &corev1.ConfigMap{}
	manual.Name, manual.Namespace = "manual", "default"
	if _, err := h.store.Create(context.Background(), manual); err != nil {
		t.Fatal(err)
	}
	h.remote.commit("drop b", map[string]string{"b.yaml": ""})
	body, err := h.sync()
	if err != nil || body.Result != schema.SyncApplied || body.Objects != 1 {
		t.Fatalf("sync = %+v, %v", body, err)
	}
	h.absent("configmaps", "apps", "b")
	h.absent("namespaces", "", "apps") // auto-created, no longer used
	h.get("configmaps", "default", "a")
	h.get("configmaps", "default", "manual")
}

func TestTakeOverRefused(t *testing.T) {
	h := newHarness(t)
	h.remote.commit("one", map[string]string{"a.yaml": configMap("a", "", "1")})
	if _, err := h.sync(); err != nil {
		t.Fatal(err)
	}
	manual := &corev1.ConfigMap{Data: map[string]string{"mine": "yes"}}
	manual.Name, manual.Namespace = "x", "default"
	if _, err := h.store.Create(context.Background(), manual); err != nil {
		t.Fatal(err)
	}
	bad := h.remote.commit("take x", map[string]string{"a.yaml": configMap("a", "", "2"), "x.yaml": configMap("x", "", "git")})
	body, err := h.sync()
	if !errors.Is(err, ErrRefused) || body.Result != schema.SyncRefused || body.LastAttemptedCommit != bad {
		t.Fatalf("sync = %+v, %v", body, err)
	}
	if len(body.Problems) != 1 || body.Problems[0].File != "x.yaml" || !strings.Contains(body.Problems[0].Reason, "not created from Git") {
		t.Errorf("problems = %+v", body.Problems)
	}
	if h.get("configmaps", "default", "a").(*corev1.ConfigMap).Data["key"] != "1" {
		t.Error("a changed although the commit was refused")
	}
	if h.get("configmaps", "default", "x").(*corev1.ConfigMap).Data["mine"] != "yes" {
		t.Error("x taken over")
	}
}

func TestBadCommitRefusedWholeThenNextGoodApplies(t *testing.T) {
	h := newHarness(t)
	good := h.remote.commit("one", map[string]string{"a.yaml": configMap("a", "", "1")})
	if _, err := h.sync(); err != nil {
		t.Fatal(err)
	}
	objRev := h.get("configmaps", "default", "a").GetResourceVersion()
	bad := h.remote.commit("broken", map[string]string{
		"a.yaml":   configMap("a", "", "2"),
		"bad.yaml": configMap("ok", "", "1") + "---\n" + configMap("Bad_Name", "", "1"),
		"syn.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: [unclosed\n",
	})
	body, err := h.poll()
	if !errors.Is(err, ErrRefused) {
		t.Fatalf("err = %v", err)
	}
	if body.Result != schema.SyncRefused || body.LastAppliedCommit != good || body.LastAttemptedCommit != bad {
		t.Fatalf("status = %+v", body)
	}
	var files []string
	for _, p := range body.Problems {
		files = append(files, p.String())
	}
	joined := strings.Join(files, "\n")
	if !strings.Contains(joined, "bad.yaml:8:0: metadata.name") || !strings.Contains(joined, "syn.yaml:1:") {
		t.Errorf("problems:\n%s", joined)
	}
	if st := h.status(); st.Result != schema.SyncRefused || len(st.Problems) != len(body.Problems) || st.LastAppliedCommit != good {
		t.Errorf("stored status = %+v", st)
	}
	if got := h.get("configmaps", "default", "a").GetResourceVersion(); got != objRev {
		t.Error("a changed although the commit was refused")
	}
	h.absent("configmaps", "default", "ok")

	// Stalled: polls re-check the head cheaply and write nothing.
	rev := h.store.Revision()
	for i := 0; i < 3; i++ {
		if body, err = h.poll(); body.Result != schema.SyncRefused || !errors.Is(err, ErrRefused) {
			t.Fatalf("poll = %s, %v", body.Result, err)
		}
	}
	if h.store.Revision() != rev {
		t.Error("polling a refused commit wrote to the store")
	}

	fixed := h.remote.commit("fix", map[string]string{"bad.yaml": "", "syn.yaml": ""})
	body, err = h.poll()
	if err != nil || body.Result != schema.SyncApplied || body.LastAppliedCommit != fixed || len(body.Problems) != 0 {
		t.Fatalf("sync = %+v, %v", body, err)
	}
	if h.get("configmaps", "default", "a").(*corev1.ConfigMap).Data["key"] != "2" {
		t.Error("good commit not applied")
	}
}

func TestSubPathAndExplicitBranch(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.Path = "/deploy/"; c.Branch = "main" })
	h.remote.commit("one", map[string]string{
		"deploy/a.yaml": configMap("a", "", "1"),
		"other/b.yaml":  configMap("b", "", "1"),
	})
	body, err := h.sync()
	if err != nil || body.Objects != 1 {
		t.Fatalf("sync = %+v, %v", body, err)
	}
	if src := h.get("configmaps", "default", "a").GetAnnotations()[schema.AnnotationSource]; src != "deploy/a.yaml:1" {
		t.Errorf("source = %q", src)
	}
	h.absent("configmaps", "default", "b")
}

func TestMissingPathRefused(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.Path = "nope" })
	h.remote.commit("one", map[string]string{"a.yaml": configMap("a", "", "1")})
	if body, err := h.sync(); !errors.Is(err, ErrRefused) || body.Problems[0].File != "nope" {
		t.Fatalf("sync = %+v, %v", body, err)
	}
}

func TestFileSizeLimit(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.MaxFileSize = 100 })
	h.remote.commit("one", map[string]string{"a.yaml": configMap("a", "", strings.Repeat("x", 200))})
	body, err := h.sync()
	if !errors.Is(err, ErrRefused) || !errors.Is(err, schema.ErrLimit) || !strings.Contains(body.Message, "a.yaml:0:0: file is 267 bytes, larger than 100 bytes (limit: MaxFileBytes = 100 bytes)") {
		t.Fatalf("sync = %+v, %v", body, err)
	}
	if p := schema.Problems(body.Problems).Errors(); len(p) != 1 || p[0].Limit != schema.LimitFileBytes {
		t.Errorf("problems = %+v, want one naming %s", p, schema.LimitFileBytes)
	}
	if c := condition(h.status(), ConditionStalled); c == nil || c.Reason != ReasonLimitExceeded {
		t.Errorf("Stalled = %+v, want LimitExceeded", c)
	}
}

func TestFetchFailureKeepsLiveCommitAndRecovers(t *testing.T) {
	h := newHarness(t)
	good := h.remote.commit("one", map[string]string{"a.yaml": configMap("a", "", "1")})
	if _, err := h.sync(); err != nil {
		t.Fatal(err)
	}
	moved := h.remote.bare + ".away"
	if err := os.Rename(h.remote.bare, moved); err != nil {
		t.Fatal(err)
	}
	body, err := h.poll()
	if !errors.Is(err, ErrTransient) || body.Result != schema.SyncFetchFailed || body.LastAppliedCommit != good {
		t.Fatalf("poll = %+v, %v", body, err)
	}
	st := h.status()
	if st.Result != schema.SyncFetchFailed || st.Message == "" {
		t.Errorf("stored = %+v", st)
	}
	rev := h.store.Revision()
	h.clock.Step(time.Minute)
	if _, err := h.poll(); !errors.Is(err, ErrTransient) {
		t.Fatal(err)
	}
	if h.store.Revision() != rev {
		t.Error("a repeated fetch failure wrote to the store")
	}
	if err := os.Rename(moved, h.remote.bare); err != nil {
		t.Fatal(err)
	}
	if body, err = h.poll(); err != nil || body.Result != schema.SyncUnchanged {
		t.Fatalf("poll = %+v, %v", body, err)
	}
	if st := h.status(); st.Result != schema.SyncApplied || st.LastAppliedCommit != good {
		t.Errorf("stored after recovery = %+v", st)
	}
}

// TestURLCredentialsRefused: a password or token in the URL is refused,
// naming the flags to use instead, without echoing it.
func TestURLCredentialsRefused(t *testing.T) {
	for _, url := range []string{
		"https://alice:s3cr3tpw@127.0.0.1:1/org/repo.git",
		"https://s3cr3tpw@127.0.0.1:1/org/repo.git",
		"ssh://git:s3cr3tpw@127.0.0.1:1/org/repo.git",
	} {
		_, err := New(Config{URL: url, WorkDir: t.TempDir(), Store: nopStore{}, Loader: yamlLoader{}})
		if !errors.Is(err, ErrURLCredentials) || !strings.Contains(err.Error(), "--git-password-file") || strings.Contains(err.Error(), "s3cr3tpw") {
			t.Errorf("New(%s) = %v; want ErrURLCredentials naming --git-password-file, without the secret", SanitizeURL(url), err)
		}
	}
}

// TestCredentialsNeverShown: a password read from its file is never in the
// error, the status or the clone's config.
func TestCredentialsNeverShown(t *testing.T) {
	pw := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(pw, []byte("s3cr3tpw\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, func(c *Config) { c.URL = "https://127.0.0.1:1/org/repo.git"; c.Username = "alice"; c.PasswordFile = pw })
	body, err := h.sync()
	if err == nil || !errors.Is(err, ErrTransient) {
		t.Fatalf("err = %v", err)
	}
	st := h.get("syncstatuses", "", schema.SyncStatusName).(*schema.SyncStatus)
	for _, s := range []string{err.Error(), body.Message, st.Status.Message, st.Spec.URL} {
		if strings.Contains(s, "s3cr3tpw") {
			t.Errorf("credentials leaked: %q", s)
		}
	}
	if st.Spec.URL != "https://127.0.0.1:1/org/repo.git" {
		t.Errorf("URL = %q", st.Spec.URL)
	}
	cfg, err := os.ReadFile(h.syncer.cfg.WorkDir + "/config")
	if err != nil || strings.Contains(string(cfg), "s3cr3tpw") {
		t.Errorf("clone config holds the password (%v):\n%s", err, cfg)
	}
	if got := h.syncer.remote.sanitize(errors.New("auth s3cr3tpw failed")).Error(); strings.Contains(got, "s3cr3tpw") {
		t.Errorf("an error echoing the password is not scrubbed: %q", got)
	}
}

func TestSanitizeURL(t *testing.T) {
	for in, want := range map[string]string{
		"https://user:pass@example.com/r.git":   "https://example.com/r.git",
		"https://ghp_TOKEN@example.com/r.git":   "https://example.com/r.git",
		"http://example.com/r.git":              "http://example.com/r.git",
		"ssh://git@example.com/r.git":           "ssh://example.com/r.git",
		"git@example.com:org/r.git":             "git@example.com:org/r.git",
		"file:///srv/git/r.git":                 "file:///srv/git/r.git",
		"/srv/git/r.git":                        "/srv/git/r.git",
		"https://user:p%40ss@example.com/r.git": "https://example.com/r.git",
	} {
		if got := SanitizeURL(in); got != want {
			t.Errorf("SanitizeURL(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestRunPollsAndTriggers(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.NoWatch = true }) // polls and triggers only
	first := h.remote.commit("one", map[string]string{"a.yaml": configMap("a", "", "1")})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- h.syncer.Run(ctx) }()
	testkit.EventuallyTrue(t, "the first commit applied", 0, func() bool { return h.statusOrZero().LastAppliedCommit == first })
	second := h.remote.commit("two", map[string]string{"a.yaml": configMap("a", "", "2")})
	h.syncer.Trigger()
	h.syncer.Trigger() // merged with the first
	testkit.EventuallyTrue(t, "the triggered sync applied the second commit", 0, func() bool { return h.statusOrZero().LastAppliedCommit == second })
	third := h.remote.commit("three", map[string]string{"a.yaml": configMap("a", "", "3")})
	testkit.EventuallyTrue(t, "a poll applied the third commit", 0, func() bool {
		h.clock.Step(DefaultInterval * 2)
		return h.statusOrZero().LastAppliedCommit == third
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func (h *harness) statusOrZero() schema.SyncStatusBody {
	obj, err := h.store.Get(context.Background(), "syncstatuses", "", schema.SyncStatusName)
	if err != nil {
		return schema.SyncStatusBody{}
	}
	return obj.(*schema.SyncStatus).Status
}

func TestSyncNowRepairsDrift(t *testing.T) {
	h := newHarness(t)
	h.remote.commit("one", map[string]string{"a.yaml": configMap("a", "", "1")})
	if _, err := h.sync(); err != nil {
		t.Fatal(err)
	}
	if _, err := h.store.Delete(context.Background(), "configmaps", "default", "a", store.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	body, err := h.sync()
	if err != nil || body.Result != schema.SyncApplied {
		t.Fatalf("sync = %+v, %v", body, err)
	}
	h.get("configmaps", "default", "a")
}

func TestManifestWithoutNameRefused(t *testing.T) {
	h := newHarness(t)
	h.remote.commit("one", map[string]string{
		"a.yaml": configMap("a", "", "1"),
		"g.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  generateName: g-\n",
	})
	body, err := h.sync()
	if !errors.Is(err, ErrRefused) || body.Problems[0].File != "g.yaml" || body.Problems[0].Field != "metadata.name" {
		t.Fatalf("sync = %+v, %v", body, err)
	}
	h.absent("configmaps", "default", "a")
}

func TestRestartWritesNothing(t *testing.T) {
	h := newHarness(t)
	h.remote.commit("one", map[string]string{"a.yaml": configMap("a", "", "1"), "b.yaml": configMap("b", "apps", "1")})
	if _, err := h.sync(); err != nil {
		t.Fatal(err)
	}
	rev := h.store.Revision()
	again, err := New(h.syncer.cfg) // same store and clone, fresh memory
	if err != nil {
		t.Fatal(err)
	}
	body, err := again.sync(t.Context(), false)
	if err != nil || body.Result != schema.SyncUnchanged {
		t.Fatalf("sync after restart = %+v, %v", body, err)
	}
	if h.store.Revision() != rev {
		t.Errorf("restart wrote: revision %d → %d", rev, h.store.Revision())
	}
}

func TestApplyErrorClassing(t *testing.T) {
	invalid := &applyError{act: action{op: opCreate, key: objKey{"configmaps", "default", "a"}, file: "a.yaml", line: 3}, err: fmt.Errorf("create: %w", store.ErrInvalid)}
	if p, ok := invalid.problem(); !ok || p.File != "a.yaml" || p.Line != 3 {
		t.Errorf("invalid object: %v %v", p, ok)
	}
	closed := &applyError{act: invalid.act, err: store.ErrClosed}
	if _, ok := closed.problem(); ok {
		t.Error("a closed store is not the commit's fault")
	}
	for key, want := range map[string]bool{"deployment.kubernetes.io/revision": true, "kubernetes.io/x": true, "flotilla.dev/y": true, "example.com/z": false, "plain": false} {
		if schema.SystemAnnotation(key) != want {
			t.Errorf("SystemAnnotation(%q) != %v", key, want)
		}
	}
}
