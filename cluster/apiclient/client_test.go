package apiclient_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flotilla-dev/flotilla/cluster/apiclient"
	"github.com/flotilla-dev/flotilla/cluster/apiserver"
	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/schema"
)

const token = "t0ken"

// serve runs a real HTTPS API server on st and returns a client for it,
// built through a kubeconfig as the CLI builds it.
func serve(t *testing.T, st store.Interface, logs apiserver.LogSource) *apiclient.Client {
	t.Helper()
	url, caPEM := serveAPI(t, st, logs)
	kc := filepath.Join(t.TempDir(), "kubeconfig.yaml")
	if err := apiclient.WriteKubeconfig(kc, url, caPEM, apiclient.Credential{Token: token}); err != nil {
		t.Fatal(err)
	}
	c, err := apiclient.FromKubeconfig(kc)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// serveAPI runs a real HTTPS API server on st, with a CA of its own and
// the bearer token token, until the test ends; it returns its URL and CA.
func serveAPI(t *testing.T, st store.Interface, logs apiserver.LogSource) (url string, caPEM []byte) {
	t.Helper()
	dir := t.TempDir()
	caPEM, certFile, keyFile, err := apiserver.EnsureCerts(dir, []string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := apiserver.New(apiserver.Config{Store: st, Token: token, TLSCertFile: certFile, TLSKeyFile: keyFile,
		Logs: logs, Logger: slog.New(slog.NewTextHandler(testOut(io.Discard), nil))})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() { cancel(); <-done })
	return "https://" + ln.Addr().String(), caPEM
}

func newPod(ns, name string, labels map[string]string) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "nginx"}}}}
	k, _ := schema.KindByResource("pods")
	schema.SetTypeMeta(p, k)
	return p
}

// runningPod is newPod with its container started, as its node reports
// it: what has logs.
func runningPod(ns, name string) *corev1.Pod {
	p := newPod(ns, name, nil)
	p.Status = corev1.PodStatus{Phase: corev1.PodRunning, ContainerStatuses: []corev1.ContainerStatus{{Name: "app",
		State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: metav1.Now()}}}}}
	return p
}

func TestCRUDAndStatus(t *testing.T) {
	ctx := context.Background()
	c := serve(t, store.MemoryFor(t), nil)

	created, err := c.Create(ctx, newPod("", "web-1", map[string]string{"app": "web"}))
	if err != nil {
		t.Fatal(err)
	}
	if created.GetNamespace() != "default" || created.GetUID() == "" || created.GetResourceVersion() == "" {
		t.Fatalf("created: %+v", created)
	}
	if _, err := c.Create(ctx, newPod("default", "web-1", nil)); !errors.Is(err, store.ErrExists) {
		t.Fatalf("duplicate create: %v", err)
	}
	if _, err := c.Create(ctx, newPod("default", "db-1", map[string]string{"app": "db"})); err != nil {
		t.Fatal(err)
	}

	got, err := c.Get(ctx, "pods", "default", "web-1")
	if err != nil || got.(*corev1.Pod).Spec.Containers[0].Image != "nginx" {
		t.Fatalf("get: %v %v", got, err)
	}
	_, err = c.Get(ctx, "pods", "default", "nope")
	if !errors.Is(err, store.ErrNotFound) || !strings.Contains(err.Error(), `pods "nope" not found`) {
		t.Fatalf("get missing: %v", err)
	}

	items, rev, err := c.List(ctx, "pods", store.ListOptions{LabelSelector: "app=web"})
	if err != nil || len(items) != 1 || items[0].GetName() != "web-1" || rev == 0 {
		t.Fatalf("list: %v %d %v", items, rev, err)
	}
	if rev != c.Revision() {
		t.Fatalf("list revision %d, store revision %d", rev, c.Revision())
	}

	upd := schema.Copy(got.(*corev1.Pod))
	upd.Spec.Containers[0].Image = "nginx:2"
	updated, err := c.Update(ctx, upd)
	if err != nil || updated.GetResourceVersion() == got.GetResourceVersion() {
		t.Fatalf("update: %v %v", updated, err)
	}
	upd.Spec.Containers[0].Image = "nginx:3" // stale resourceVersion
	if _, err := c.Update(ctx, upd); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("stale update: %v", err)
	}

	st := schema.Copy(updated.(*corev1.Pod))
	st.Status.Phase = corev1.PodRunning
	withStatus, err := c.UpdateStatus(ctx, st)
	if err != nil || withStatus.(*corev1.Pod).Status.Phase != corev1.PodRunning {
		t.Fatalf("status: %v %v", withStatus, err)
	}

	if _, err := c.Delete(ctx, "pods", "default", "web-1", store.DeleteOptions{UID: "wrong"}); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("delete with wrong uid: %v", err)
	}
	gone, err := c.Delete(ctx, "pods", "default", "web-1", store.DeleteOptions{UID: string(created.GetUID())})
	if err != nil || gone.GetName() != "web-1" {
		t.Fatalf("delete: %v %v", gone, err)
	}
	if _, err := c.Get(ctx, "pods", "default", "web-1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("get after delete: %v", err)
	}
	if _, err := c.Txn(ctx, func(store.Tx) error { return nil }); !errors.Is(err, errors.ErrUnsupported) {
		t.Fatalf("txn: %v", err)
	}
}

func TestGitOwnedRefused(t *testing.T) {
	ctx := context.Background()
	st := store.MemoryFor(t)
	p := newPod("default", "static", nil)
	p.Annotations = map[string]string{schema.AnnotationManagedBy: schema.ManagedByGit, schema.AnnotationSource: "apps/static.yaml:7"}
	if _, err := st.Create(ctx, p); err != nil {
		t.Fatal(err)
	}
	c := serve(t, st, nil)
	_, err := c.Delete(ctx, "pods", "default", "static", store.DeleteOptions{})
	var se *apiclient.StatusError
	if !errors.As(err, &se) || se.Code() != 403 ||
		err.Error() != `pods "static" is managed by Git (apps/static.yaml); change it in the repository and commit` {
		t.Fatalf("delete of a Git object: %v", err)
	}
}

func next(t *testing.T, ch <-chan store.Event) store.Event {
	t.Helper()
	select {
	case ev, ok := <-ch:
		if !ok {
			t.Fatal("watch closed")
		}
		return ev
	case <-time.After(5 * time.Second):
		t.Fatal("no watch event")
	}
	return store.Event{}
}

func TestWatchResume(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := serve(t, store.MemoryFor(t), nil)

	live, err := c.Watch(ctx, "pods", store.ListOptions{Namespace: "default"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	a, err := c.Create(ctx, newPod("default", "a", nil))
	if err != nil {
		t.Fatal(err)
	}
	if ev := next(t, live); ev.Type != store.Added || ev.Object.GetName() != "a" || ev.Revision == 0 {
		t.Fatalf("live: %+v", ev)
	}
	if _, err := c.Create(ctx, newPod("default", "b", nil)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Delete(ctx, "pods", "default", "a", store.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	// Resume after a's creation: b's creation, then a's deletion.
	aRev := ev0(t, a)
	resumed, err := c.Watch(ctx, "pods", store.ListOptions{}, aRev)
	if err != nil {
		t.Fatal(err)
	}
	if ev := next(t, resumed); ev.Type != store.Added || ev.Object.GetName() != "b" || ev.Revision <= aRev {
		t.Fatalf("resumed 1: %+v", ev)
	}
	if ev := next(t, resumed); ev.Type != store.Deleted || ev.Object.GetName() != "a" {
		t.Fatalf("resumed 2: %+v", ev)
	}
	// A selector narrows the watch.
	sel, err := c.Watch(ctx, "pods", store.ListOptions{FieldSelector: "metadata.name=b"}, aRev)
	if err != nil {
		t.Fatal(err)
	}
	if ev := next(t, sel); ev.Object.GetName() != "b" {
		t.Fatalf("selected: %+v", ev)
	}
	cancel()
	for range live {
	}
}

func ev0(t *testing.T, obj schema.Object) int64 {
	t.Helper()
	var rev int64
	for _, ch := range obj.GetResourceVersion() {
		rev = rev*10 + int64(ch-'0')
	}
	return rev
}

func TestWatchCompacted(t *testing.T) {
	ctx := context.Background()
	st, err := store.Open(store.Config{History: 10})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	c := serve(t, st, nil)
	first, err := c.Create(ctx, newPod("default", "churn", nil))
	if err != nil {
		t.Fatal(err)
	}
	cur := first
	for i := range 40 {
		p := schema.Copy(cur.(*corev1.Pod))
		p.Labels = map[string]string{"i": string(rune('a' + i%26))}
		if cur, err = c.Update(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	_, err = c.Watch(ctx, "pods", store.ListOptions{}, ev0(t, first))
	var se *apiclient.StatusError
	if !errors.Is(err, store.ErrCompacted) || !errors.As(err, &se) || se.Code() != 410 {
		t.Fatalf("watch from a compacted revision: %v", err)
	}
}

func TestPodLogs(t *testing.T) {
	ctx := context.Background()
	st := store.MemoryFor(t)
	if _, err := st.Create(ctx, runningPod("default", "web-1")); err != nil {
		t.Fatal(err)
	}
	c := serve(t, st, apiserver.StaticLogs{"default/web-1/app": "a\nb\nc\n"})
	var b strings.Builder
	one := int64(1)
	if err := c.PodLogs(ctx, "default", "web-1", corev1.PodLogOptions{Container: "app", TailLines: &one}, &b); err != nil {
		t.Fatal(err)
	}
	if b.String() != "c\n" {
		t.Fatalf("logs %q", b.String())
	}
	// Kubernetes' 400 for a container the pod does not have.
	if err := c.PodLogs(ctx, "default", "web-1", corev1.PodLogOptions{Container: "other"}, &b); err == nil || !strings.Contains(err.Error(), "container other is not valid for pod web-1") {
		t.Fatalf("logs of a missing container: %v", err)
	}
}

func TestBadToken(t *testing.T) {
	c := serve(t, store.MemoryFor(t), nil)
	bad, err := apiclient.New(apiclient.Config{Server: c.Server(), Token: "nope", InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = bad.List(context.Background(), "pods", store.ListOptions{})
	var se *apiclient.StatusError
	if !errors.As(err, &se) || se.Code() != 401 {
		t.Fatalf("bad token: %v", err)
	}
}

func TestKubeconfigPaths(t *testing.T) {
	t.Setenv("KUBECONFIG", "")
	def := apiclient.DefaultKubeconfigPath("")
	if def != filepath.Join(apiclient.DefaultDataDir(), "kubeconfig.yaml") {
		t.Fatalf("default: %s", def)
	}
	t.Setenv("KUBECONFIG", "/x/a.yaml"+string(os.PathListSeparator)+"/x/b.yaml")
	if p := apiclient.DefaultKubeconfigPath(""); p != "/x/a.yaml" {
		t.Fatalf("env: %s", p)
	}
	if p := apiclient.DefaultKubeconfigPath("/flag.yaml"); p != "/flag.yaml" {
		t.Fatalf("flag: %s", p)
	}
	path := filepath.Join(t.TempDir(), "sub", "kc.yaml")
	if err := apiclient.WriteKubeconfig(path, "https://10.0.0.1:6443", []byte("not pem"), apiclient.Credential{Token: "tok"}); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode: %v %v", fi, err)
	}
	data, _ := os.ReadFile(path)
	for _, want := range []string{"current-context: flotilla", "server: https://10.0.0.1:6443", "token: tok"} {
		if !strings.Contains(string(data), want) {
			t.Errorf("kubeconfig lacks %q:\n%s", want, data)
		}
	}
}

// testOut sends server logs to stderr when FLOTILLA_TEST_LOGS is set.
func testOut(w io.Writer) io.Writer {
	if os.Getenv("FLOTILLA_TEST_LOGS") != "" {
		return os.Stderr
	}
	return w
}

// tickingLogs writes a line, then waits for ctx: a follow that never ends.
type tickingLogs struct{}

func (tickingLogs) PodLogs(ctx context.Context, ns, pod string, opts corev1.PodLogOptions, w io.Writer) error {
	if _, err := io.WriteString(w, "first line\n"); err != nil {
		return err
	}
	<-ctx.Done()
	return ctx.Err()
}

func TestPodLogsFollowStreams(t *testing.T) {
	st := store.MemoryFor(t)
	if _, err := st.Create(context.Background(), runningPod("default", "web-1")); err != nil {
		t.Fatal(err)
	}
	c := serve(t, st, tickingLogs{})
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- c.PodLogs(ctx, "default", "web-1", corev1.PodLogOptions{Follow: true}, pw)
		pw.Close()
	}()
	buf := make([]byte, 64)
	n, err := pr.Read(buf) // arrives while the source still streams: flushed
	if err != nil || string(buf[:n]) != "first line\n" {
		t.Fatalf("read %q %v", buf[:n], err)
	}
	cancel()
	go io.Copy(io.Discard, pr)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("follow ended with %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("follow did not end with its context")
	}
}
