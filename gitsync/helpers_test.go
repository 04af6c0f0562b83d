package gitsync

import (
	"context"
	"fmt"
	"io/fs"
	"log/slog"
	"path"
	"path/filepath"
	"strings"
	"testing"
	"time"

	git "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"

	clocktesting "k8s.io/utils/clock/testing"

	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/internal/testkit"
	"github.com/flotilla-dev/flotilla/schema"
)

// yamlLoader is a tiny Loader for unit tests: multi-document YAML, decoded
// with schema.DecodeAny, names checked as DNS subdomains. The integration
// tests use the real schema validator.
type yamlLoader struct{}

func (yamlLoader) Load(fsys fs.FS, paths ...string) ([]schema.Manifest, schema.Problems) {
	var ms []schema.Manifest
	var probs schema.Problems
	for _, root := range paths {
		_ = fs.WalkDir(fsys, root, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || (path.Ext(p) != ".yaml" && path.Ext(p) != ".yml") {
				return err
			}
			data, err := fs.ReadFile(fsys, p)
			if err != nil {
				probs = append(probs, schema.Problem{File: p, Reason: err.Error()})
				return nil
			}
			line := 1
			for _, doc := range strings.Split(string(data), "\n---\n") {
				start := line
				line += strings.Count(doc, "\n") + 2
				if strings.TrimSpace(doc) == "" {
					continue
				}
				js, err := yaml.YAMLToJSON([]byte(doc))
				if err != nil {
					probs = append(probs, schema.Problem{File: p, Line: start, Reason: "YAML: " + err.Error()})
					continue
				}
				obj, err := schema.DecodeAny(js)
				if err != nil {
					probs = append(probs, schema.Problem{File: p, Line: start, Reason: err.Error()})
					continue
				}
				for _, msg := range nameProblems(obj.GetName()) {
					probs = append(probs, schema.Problem{File: p, Line: start, Field: "metadata.name", Reason: msg})
				}
				ms = append(ms, schema.Manifest{Object: obj, File: p, Line: start})
			}
			return nil
		})
	}
	return ms, probs
}

func testLogger(t testing.TB) *slog.Logger { return testkit.Logger(t) }

// gitRemote is a bare repository in a temp dir and a working clone that
// commits and pushes to it, as a user would.
type gitRemote struct {
	t     testing.TB
	bare  string
	work  string
	repo  *git.Repository
	clock time.Time
}

func newGitRemote(t testing.TB) *gitRemote {
	t.Helper()
	dir := t.TempDir()
	g := &gitRemote{t: t, bare: filepath.Join(dir, "remote.git"), work: filepath.Join(dir, "work"), clock: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	main := plumbing.NewBranchReferenceName("main")
	if _, err := git.PlainInitWithOptions(g.bare, &git.PlainInitOptions{Bare: true, InitOptions: git.InitOptions{DefaultBranch: main}}); err != nil {
		t.Fatal(err)
	}
	repo, err := git.PlainInitWithOptions(g.work, &git.PlainInitOptions{InitOptions: git.InitOptions{DefaultBranch: main}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := repo.CreateRemote(&config.RemoteConfig{Name: "origin", URLs: []string{g.bare}}); err != nil {
		t.Fatal(err)
	}
	g.repo = repo
	return g
}

// commit writes files (content "" deletes), commits and pushes; it returns
// the commit hash.
func (g *gitRemote) commit(msg string, files map[string]string) string {
	g.t.Helper()
	wt, err := g.repo.Worktree()
	if err != nil {
		g.t.Fatal(err)
	}
	for name, content := range files {
		if content == "" {
			if _, err := wt.Remove(name); err != nil {
				g.t.Fatalf("remove %s: %v", name, err)
			}
			continue
		}
		f, err := wt.Filesystem.Create(name)
		if err != nil {
			g.t.Fatal(err)
		}
		if _, err := f.Write([]byte(content)); err != nil {
			g.t.Fatal(err)
		}
		f.Close()
		if _, err := wt.Add(name); err != nil {
			g.t.Fatal(err)
		}
	}
	g.clock = g.clock.Add(time.Minute)
	sig := &object.Signature{Name: "Test", Email: "test@example.com", When: g.clock}
	h, err := wt.Commit(msg, &git.CommitOptions{Author: sig, AllowEmptyCommits: true})
	if err != nil {
		g.t.Fatal(err)
	}
	err = g.repo.Push(&git.PushOptions{RemoteName: "origin", RefSpecs: []config.RefSpec{"+refs/heads/main:refs/heads/main"}})
	if err != nil && err != git.NoErrAlreadyUpToDate {
		g.t.Fatalf("push: %v", err)
	}
	return h.String()
}

func configMap(name, ns, value string) string {
	s := fmt.Sprintf("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: %s\n", name)
	if ns != "" {
		s += fmt.Sprintf("  namespace: %s\n", ns)
	}
	return s + fmt.Sprintf("data:\n  key: %q\n", value)
}

type harness struct {
	t      *testing.T
	remote *gitRemote
	store  *store.Badger
	syncer *Syncer
	clock  *clocktesting.FakeClock
}

func newHarness(t *testing.T, mutate ...func(*Config)) *harness {
	t.Helper()
	h := &harness{t: t, remote: newGitRemote(t), store: newTestStore(t), clock: testkit.NewFakeClock(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))}
	cfg := Config{
		URL:     h.remote.bare,
		WorkDir: filepath.Join(t.TempDir(), "clone"),
		Store:   h.store,
		Loader:  yamlLoader{},
		Logger:  testLogger(t),
		Clock:   h.clock,
	}
	for _, m := range mutate {
		m(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	h.syncer = s
	return h
}

func (h *harness) sync() (schema.SyncStatusBody, error) {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return h.syncer.SyncNow(ctx)
}

func (h *harness) poll() (schema.SyncStatusBody, error) {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return h.syncer.sync(ctx, false)
}

func (h *harness) get(resource, ns, name string) schema.Object {
	h.t.Helper()
	obj, err := h.store.Get(context.Background(), resource, ns, name)
	if err != nil {
		h.t.Fatalf("get %s %s/%s: %v", resource, ns, name, err)
	}
	return obj
}

func (h *harness) absent(resource, ns, name string) {
	h.t.Helper()
	if _, err := h.store.Get(context.Background(), resource, ns, name); err == nil {
		h.t.Fatalf("%s %s/%s still exists", resource, ns, name)
	}
}

func (h *harness) status() schema.SyncStatusBody {
	h.t.Helper()
	return h.get("syncstatuses", "", schema.SyncStatusName).(*schema.SyncStatus).Status
}

// newTestStore is the real Badger store, in memory; on disk in a temp dir
// should the in-memory mode be unavailable.
func newTestStore(t testing.TB) (s *store.Badger) {
	t.Helper()
	func() {
		defer func() {
			if r := recover(); r != nil {
				t.Logf("in-memory store unavailable (%v); using a temp dir", r)
			}
		}()
		s = store.MemoryFor(t)
	}()
	if s != nil {
		return s
	}
	s, err := store.Open(store.Config{Dir: t.TempDir(), Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func nameProblems(name string) []string {
	if name == "" {
		return nil // left to buildDesired
	}
	return validation.IsDNS1123Subdomain(name)
}
