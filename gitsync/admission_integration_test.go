package gitsync_test

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	git "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing/object"
	corev1 "k8s.io/api/core/v1"

	"github.com/flotilla-dev/flotilla/cluster/ipalloc"
	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/gitsync"
	"github.com/flotilla-dev/flotilla/schema"
)

// TestServicesGetStableAddresses runs ipalloc's admission hook through a
// real sync: a Git repository, the CUE validator, the Badger store.
// Services get cluster IPs and node ports once; later commits and a
// restarted syncer keep them; a commit asking for a taken address is
// refused whole.
func TestServicesGetStableAddresses(t *testing.T) {
	v, err := schema.NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	alloc, err := ipalloc.New(ipalloc.Config{})
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "repo")
	if err := gitsync.InitLocalRepo(dir, nil); err != nil {
		t.Fatal(err)
	}
	repo := localRepo{t: t, dir: dir}
	st := store.MemoryFor(t)
	newSyncer := func() *gitsync.Syncer {
		s, err := gitsync.New(gitsync.Config{URL: dir, WorkDir: filepath.Join(t.TempDir(), "clone"), Store: st, Loader: v, Admit: alloc.AdmitGit,
			Logger: slog.New(slog.NewTextHandler(tlog{t}, nil))})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	s := newSyncer()
	sync := func(want schema.SyncResult) schema.SyncStatusBody {
		t.Helper()
		body, err := s.SyncNow(t.Context())
		if body.Result != want {
			t.Fatalf("sync = %s (%v), want %s: %s", body.Result, err, want, body.Message)
		}
		return body
	}
	get := func(name string) *corev1.Service {
		t.Helper()
		obj, err := st.Get(t.Context(), "services", "default", name)
		if err != nil {
			t.Fatal(err)
		}
		return obj.(*corev1.Service)
	}
	addr := func(name string) string {
		s := get(name)
		out := s.Spec.ClusterIP
		for _, p := range s.Spec.Ports {
			out += fmt.Sprintf(" %d", p.NodePort)
		}
		return out
	}

	// Two services (and a NodePort one) get the lowest addresses, in name order.
	repo.commit("services", map[string]string{
		"a.yaml":  service("a", "v1", "", ""),
		"b.yaml":  service("b", "v1", "", ""),
		"np.yaml": service("np", "v1", "NodePort", ""),
	})
	sync(schema.SyncApplied)
	want := map[string]string{"a": "10.96.0.1 0", "b": "10.96.0.2 0", "np": "10.96.0.3 30000"}
	check := func() {
		t.Helper()
		for name, w := range want {
			if got := addr(name); got != w {
				t.Errorf("service %s: %q, want %q", name, got, w)
			}
		}
	}
	check()
	if ips := get("a").Spec.ClusterIPs; len(ips) != 1 || ips[0] != "10.96.0.1" {
		t.Errorf("clusterIPs = %v", ips)
	}

	// A label change keeps every address; an untouched service is not rewritten.
	bRV := get("b").ResourceVersion
	repo.commit("relabel", map[string]string{"a.yaml": service("a", "v2", "", ""), "np.yaml": service("np", "v2", "NodePort", "")})
	sync(schema.SyncApplied)
	check()
	if get("a").Labels["version"] != "v2" || get("b").ResourceVersion != bRV {
		t.Errorf("a = %v; b's resourceVersion %s → %s", get("a").Labels, bRV, get("b").ResourceVersion)
	}

	// Asking for a's address is refused whole: a's change is not applied either.
	bad := repo.commit("steal", map[string]string{"a.yaml": service("a", "v3", "", ""), "c.yaml": service("c", "v1", "", "10.96.0.1")})
	body := sync(schema.SyncRefused)
	probs := schema.Problems(body.Problems).Errors()
	wantProblem := "c.yaml:1:0: spec.clusterIP: 10.96.0.1 is already the address of service default/a"
	if len(probs) != 1 || probs[0].String() != wantProblem || body.LastAttemptedCommit != bad {
		t.Fatalf("refused with %v, want %s", probs, wantProblem)
	}
	if !strings.Contains(body.Message, "is already the address of service default/a") {
		t.Errorf("status message: %s", body.Message)
	}
	if _, err := st.Get(t.Context(), "services", "default", "c"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("service c of the refused commit: %v", err)
	}
	if get("a").Labels["version"] != "v2" {
		t.Error("the refused commit changed service a")
	}
	check()

	// Asking for a free address works; nothing else moves.
	repo.commit("fix", map[string]string{"c.yaml": service("c", "v1", "", "10.96.0.50")})
	sync(schema.SyncApplied)
	want["c"], want["a"] = "10.96.0.50 0", "10.96.0.1 0"
	check()

	// Idle, and after a restart of the syncer: nothing is written.
	rev := st.Revision()
	sync(schema.SyncUnchanged)
	s = newSyncer()
	if body, err := s.SyncNow(t.Context()); err != nil || st.Revision() != rev {
		t.Errorf("restarted syncer: %s, %v; revision %d → %d", body.Result, err, rev, st.Revision())
	}
	check()

	// Removing b frees its address for the next new service.
	repo.commit("rename b", map[string]string{"b.yaml": "", "d.yaml": service("d", "v1", "", "")})
	sync(schema.SyncApplied)
	delete(want, "b")
	want["d"] = "10.96.0.2 0"
	check()
}

func service(name, version, typ, clusterIP string) string {
	s := fmt.Sprintf("apiVersion: v1\nkind: Service\nmetadata:\n  name: %s\n  labels: {version: %s}\nspec:\n  selector: {app: %s}\n  ports: [{port: 80}]\n", name, version, name)
	if typ != "" {
		s += "  type: " + typ + "\n"
	}
	if clusterIP != "" {
		s += "  clusterIP: " + clusterIP + "\n"
	}
	return s
}

// localRepo commits to the non-bare repository that the syncer reads.
type localRepo struct {
	t   *testing.T
	dir string
	n   int
}

func (r *localRepo) commit(msg string, files map[string]string) string {
	r.t.Helper()
	repo, err := git.PlainOpen(r.dir)
	if err != nil {
		r.t.Fatal(err)
	}
	wt, err := repo.Worktree()
	if err != nil {
		r.t.Fatal(err)
	}
	for name, content := range files {
		if content == "" {
			if _, err := wt.Remove(name); err != nil {
				r.t.Fatal(err)
			}
			continue
		}
		if err := os.WriteFile(filepath.Join(r.dir, name), []byte(content), 0o644); err != nil {
			r.t.Fatal(err)
		}
		if _, err := wt.Add(name); err != nil {
			r.t.Fatal(err)
		}
	}
	r.n++
	sig := &object.Signature{Name: "T", Email: "t@example.com", When: time.Date(2026, 1, 1, 0, r.n, 0, 0, time.UTC)}
	h, err := wt.Commit(msg, &git.CommitOptions{Author: sig})
	if err != nil {
		r.t.Fatal(err)
	}
	return h.String()
}

type tlog struct{ t *testing.T }

func (w tlog) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}
