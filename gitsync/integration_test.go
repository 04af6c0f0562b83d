package gitsync

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	git "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing/object"
	appsv1 "k8s.io/api/apps/v1"

	"github.com/flotilla-dev/flotilla/examples"
	"github.com/flotilla-dev/flotilla/schema"
)

// TestRealValidatorAndExample runs the whole path with the real parts: the
// examples/hello repository made by InitLocalRepo, the CUE validator, the
// Badger store.
func TestRealValidatorAndExample(t *testing.T) {
	v, err := schema.NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "repo")
	if err := InitLocalRepo(dir, examples.Hello()); err != nil {
		t.Fatal(err)
	}
	st := newTestStore(t)
	s, err := New(Config{URL: dir, WorkDir: filepath.Join(t.TempDir(), "clone"), Store: st, Loader: v, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	body, err := s.SyncNow(t.Context())
	if err != nil || body.Result != schema.SyncApplied || body.Objects != 3 { // ConfigMap, Deployment, Service
		t.Fatalf("first sync = %+v, %v", body, err)
	}
	if _, err := st.Get(t.Context(), "deployments", "default", "hello"); err != nil {
		t.Fatal(err)
	}
	cm0, _ := st.Get(t.Context(), "configmaps", "default", "hello-config")

	rev := st.Revision()
	if body, err = s.SyncNow(t.Context()); err != nil || body.Result != schema.SyncUnchanged || st.Revision() != rev {
		t.Fatalf("idle sync = %+v, %v, revision %d → %d", body, err, rev, st.Revision())
	}

	commit := func(msg string, files map[string]string) string {
		t.Helper()
		repo, err := git.PlainOpen(dir)
		if err != nil {
			t.Fatal(err)
		}
		wt, _ := repo.Worktree()
		for name, content := range files {
			p := filepath.Join(dir, name)
			if content == "" {
				if _, err := wt.Remove(name); err != nil {
					t.Fatal(err)
				}
				continue
			}
			if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
			if _, err := wt.Add(name); err != nil {
				t.Fatal(err)
			}
		}
		sig := &object.Signature{Name: "T", Email: "t@example.com", When: time.Now()}
		h, err := wt.Commit(msg, &git.CommitOptions{Author: sig})
		if err != nil {
			t.Fatal(err)
		}
		return h.String()
	}

	dep, err := os.ReadFile(filepath.Join(dir, "deployment.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	bad := commit("broken", map[string]string{
		"deployment.yaml": strings.Replace(string(dep), "replicas: 2", "replicas: 3", 1),
		"bad.yaml":        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: Bad_Name\ndata:\n  a: b\n",
		"syntax.yaml":     "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: [oops\n",
	})
	body, err = s.SyncNow(t.Context())
	if !errors.Is(err, ErrRefused) || body.Result != schema.SyncRefused || body.LastAttemptedCommit != bad {
		t.Fatalf("bad sync = %+v, %v", body, err)
	}
	var files []string
	for _, p := range schema.Problems(body.Problems).Errors() {
		if p.Line == 0 {
			t.Errorf("problem without a line: %s", p)
		}
		files = append(files, p.File)
	}
	if !contains(files, "bad.yaml") || !contains(files, "syntax.yaml") {
		t.Errorf("problems = %v", body.Problems)
	}
	d, _ := st.Get(t.Context(), "deployments", "default", "hello")
	if *d.(*appsv1.Deployment).Spec.Replicas != 2 {
		t.Error("refused commit changed the deployment")
	}

	good := commit("fix", map[string]string{"bad.yaml": "", "syntax.yaml": ""})
	if body, err = s.SyncNow(t.Context()); err != nil || body.Result != schema.SyncApplied || body.LastAppliedCommit != good {
		t.Fatalf("good sync = %+v, %v", body, err)
	}
	d, _ = st.Get(t.Context(), "deployments", "default", "hello")
	if *d.(*appsv1.Deployment).Spec.Replicas != 3 {
		t.Error("good commit not applied")
	}
	if cm1, _ := st.Get(t.Context(), "configmaps", "default", "hello-config"); cm1.GetResourceVersion() != cm0.GetResourceVersion() {
		t.Error("untouched config map rewritten")
	}
}
