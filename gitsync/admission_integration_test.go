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
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/flotilla-dev/flotilla/cluster/admission"
	"github.com/flotilla-dev/flotilla/cluster/ipalloc"
	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/gitsync"
	"github.com/flotilla-dev/flotilla/schema"
)

// TestServicesGetStableAddresses runs the write pipeline's Services
// admission (ipalloc) through a real sync: a Git repository, the CUE validator, the Badger store.
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
	pipe, err := admission.New(admission.Config{Allocator: alloc})
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
		s, err := gitsync.New(gitsync.Config{URL: dir, WorkDir: filepath.Join(t.TempDir(), "clone"), Store: st, Loader: v, Admit: gitsync.PipelineAdmit(pipe),
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

// TestCommitPassesThePipeline: a commit's objects are admitted by the
// same pipeline as the API's writes (Kubernetes defaults, stringData,
// immutable fields), and defaults never count as drift: an applied
// object is not rewritten by the next sync, nor by a commit that does not
// change it.
func TestCommitPassesThePipeline(t *testing.T) {
	v, err := schema.NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	pipe, err := admission.New(admission.Config{Validator: v})
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "repo")
	if err := gitsync.InitLocalRepo(dir, nil); err != nil {
		t.Fatal(err)
	}
	repo := localRepo{t: t, dir: dir}
	st, err := store.Open(store.Config{Dir: filepath.Join(t.TempDir(), "db"), Logger: slog.New(slog.NewTextHandler(tlog{t}, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	s, err := gitsync.New(gitsync.Config{URL: dir, WorkDir: filepath.Join(t.TempDir(), "clone"), Store: st, Loader: v,
		Admit: gitsync.PipelineAdmit(pipe), Logger: slog.New(slog.NewTextHandler(tlog{t}, nil))})
	if err != nil {
		t.Fatal(err)
	}
	sync := func(want schema.SyncResult) schema.SyncStatusBody {
		t.Helper()
		body, err := s.SyncNow(t.Context())
		if body.Result != want {
			t.Fatalf("sync = %s (%v), want %s: %s", body.Result, err, want, body.Message)
		}
		return body
	}
	get := func(resource, name string) schema.Object {
		t.Helper()
		obj, err := st.Get(t.Context(), resource, "default", name)
		if err != nil {
			t.Fatal(err)
		}
		return obj
	}
	deploy := func(replicas int, app string) string {
		return fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: %d
  selector: {matchLabels: {app: %s}}
  template:
    metadata: {labels: {app: %[2]s}}
    spec:
      containers:
      - name: web
        image: localhost/busybox:latest
        readinessProbe: {httpGet: {port: 8080}}
`, replicas, app)
	}
	const pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: solo}\nspec:\n  containers: [{name: a, image: \"busybox:%s\"}]\n"
	repo.commit("app", map[string]string{
		"deploy.yaml": deploy(2, "web"),
		"svc.yaml":    service("web", "v1", "", ""),
		"secret.yaml": "apiVersion: v1\nkind: Secret\nmetadata: {name: creds}\nstringData: {password: hunter2}\n",
		"pod.yaml":    fmt.Sprintf(pod, "1"),
	})
	sync(schema.SyncApplied)

	d := get("deployments", "web").(*appsv1.Deployment)
	c := d.Spec.Template.Spec.Containers[0]
	if d.Spec.Strategy.Type != appsv1.RollingUpdateDeploymentStrategyType || *d.Spec.ProgressDeadlineSeconds != 600 ||
		c.ImagePullPolicy != corev1.PullAlways || c.ReadinessProbe.TimeoutSeconds != 1 || c.ReadinessProbe.FailureThreshold != 3 ||
		d.Spec.Template.Spec.DNSPolicy != corev1.DNSClusterFirst {
		t.Fatalf("deployment from Git not defaulted: %+v", d.Spec)
	}
	svc := get("services", "web").(*corev1.Service)
	if svc.Spec.ClusterIP == "" || svc.Spec.Type != corev1.ServiceTypeClusterIP || len(svc.Spec.IPFamilies) != 1 || svc.Spec.SessionAffinity != corev1.ServiceAffinityNone {
		t.Fatalf("service from Git not completed: %+v", svc.Spec)
	}
	if sec := get("secrets", "creds").(*corev1.Secret); sec.StringData != nil || string(sec.Data["password"]) != "hunter2" {
		t.Fatalf("secret from Git: %+v", sec)
	}

	// The next sync finds nothing to do: defaults are not drift.
	rev := st.Revision()
	sync(schema.SyncUnchanged)
	if st.Revision() != rev {
		t.Fatalf("a sync of the same commit wrote (revision %d → %d)", rev, st.Revision())
	}
	// A commit that does not touch the deployment does not rewrite it.
	dRV := d.ResourceVersion
	repo.commit("more", map[string]string{"cm.yaml": configMapManifest("extra")})
	sync(schema.SyncApplied)
	if got := get("deployments", "web").GetResourceVersion(); got != dRV {
		t.Fatalf("untouched deployment rewritten: resourceVersion %s → %s", dRV, got)
	}
	// A changed one is rewritten, defaulted, its generation bumped.
	repo.commit("scale", map[string]string{"deploy.yaml": deploy(3, "web")})
	sync(schema.SyncApplied)
	d = get("deployments", "web").(*appsv1.Deployment)
	if *d.Spec.Replicas != 3 || d.Generation != 2 || *d.Spec.RevisionHistoryLimit != 10 {
		t.Fatalf("scaled deployment: replicas %d generation %d", *d.Spec.Replicas, d.Generation)
	}

	// Immutable fields are refused from Git too, at the manifest.
	repo.commit("reselect", map[string]string{"deploy.yaml": deploy(3, "front")})
	body := sync(schema.SyncRefused)
	probs := schema.Problems(body.Problems).Errors()
	if len(probs) != 1 || !strings.HasPrefix(probs[0].String(), "deploy.yaml:1:0: spec.selector: ") || !strings.Contains(probs[0].Reason, "field is immutable") {
		t.Fatalf("refused with %v", probs)
	}
	repo.commit("back", map[string]string{"deploy.yaml": deploy(3, "web")})
	sync(schema.SyncApplied)

	// A pod from Git keeps the node it was bound to when Git changes it.
	p := schema.Copy(get("pods", "solo").(*corev1.Pod))
	p.Spec.NodeName = "n1"
	if _, err := st.Update(t.Context(), p); err != nil {
		t.Fatal(err)
	}
	repo.commit("new image", map[string]string{"pod.yaml": fmt.Sprintf(pod, "2")})
	sync(schema.SyncApplied)
	if p := get("pods", "solo").(*corev1.Pod); p.Spec.NodeName != "n1" || p.Spec.Containers[0].Image != "busybox:2" {
		t.Fatalf("pod after Git's change: node %q image %s", p.Spec.NodeName, p.Spec.Containers[0].Image)
	}
}

func configMapManifest(name string) string {
	return fmt.Sprintf("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: %s}\ndata: {a: b}\n", name)
}
