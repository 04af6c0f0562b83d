package apiserver_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flotilla-dev/flotilla/cluster/admission"
	"github.com/flotilla-dev/flotilla/cluster/apiclient"
	"github.com/flotilla-dev/flotilla/cluster/apiserver"
	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/schema"
)

const testToken = "s3cret-token"

// env is a real store behind a real HTTPS server on 127.0.0.1:0.
type env struct {
	store *store.Badger
	url   string
	caPEM []byte
	hc    *http.Client
	dir   string
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

var (
	pipelineOnce sync.Once
	pipelineVal  *admission.Pipeline
	pipelineErr  error
)

// pipeline is the real write pipeline, with the real CUE schema (built
// once: it takes a few hundred milliseconds).
func pipeline(t testing.TB) *admission.Pipeline {
	t.Helper()
	pipelineOnce.Do(func() {
		v, err := schema.NewValidator()
		if err != nil {
			pipelineErr = err
			return
		}
		pipelineVal, pipelineErr = admission.New(admission.Config{Validator: v})
	})
	if pipelineErr != nil {
		t.Fatal(pipelineErr)
	}
	return pipelineVal
}

func newEnv(t *testing.T, logs apiserver.LogSource) *env {
	t.Helper()
	return newEnvOn(t, store.MemoryFor(t), logs)
}

// newEnvOn serves st.
func newEnvOn(t testing.TB, st *store.Badger, logs apiserver.LogSource) *env {
	t.Helper()
	return newEnvWith(t, st, func(cfg *apiserver.Config) { cfg.Logs = logs })
}

// newEnvWith serves st with the test config changed by change (which may
// use the certificate directory in cfg.TLSCertFile's).
func newEnvWith(t testing.TB, st *store.Badger, change func(*apiserver.Config)) *env {
	t.Helper()
	dir := t.TempDir()
	caPEM, certFile, keyFile, err := apiserver.EnsureCerts(dir, []string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	cfg := apiserver.Config{
		Store: st, Admission: pipeline(t), Token: testToken, TLSCertFile: certFile, TLSKeyFile: keyFile,
		Logger: quietLogger(), MaxBodyBytes: 64 << 10,
	}
	change(&cfg)
	srv, err := apiserver.New(cfg)
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
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	return &env{store: st, url: "https://" + ln.Addr().String(), caPEM: caPEM, hc: hc, dir: dir}
}

// do sends a raw request with the test token (unless token is "-").
func (e *env) do(t testing.TB, method, path, body string, hdr ...string) (*http.Response, string) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, e.url+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+testToken)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := e.hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp, string(data)
}

func pod(ns, name, node string, labels map[string]string) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
		Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{
			{Name: "app", Image: "nginx:1.27"}, {Name: "side", Image: "busybox"}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.42.0.7", ContainerStatuses: []corev1.ContainerStatus{
			{Name: "app", Ready: true, RestartCount: 2}, {Name: "side", Ready: true, RestartCount: 1}}},
	}
	k, _ := schema.KindByResource("pods")
	schema.SetTypeMeta(p, k)
	return p
}

func deployment(ns, name string, replicas int32, gitSource string) *appsv1.Deployment {
	d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: appsv1.DeploymentSpec{Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": name}},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "nginx"}}},
			}}}
	if gitSource != "" {
		d.Annotations = map[string]string{schema.AnnotationManagedBy: schema.ManagedByGit, schema.AnnotationSource: gitSource}
	}
	k, _ := schema.KindByResource("deployments")
	schema.SetTypeMeta(d, k)
	return d
}

func mustCreate(t testing.TB, st store.Interface, obj schema.Object) schema.Object {
	t.Helper()
	out, err := st.Create(context.Background(), obj)
	if err != nil {
		t.Fatalf("create %s: %v", obj.GetName(), err)
	}
	if p, ok := obj.(*corev1.Pod); ok {
		// The store keeps status out of Create; write it separately.
		p2 := out.(*corev1.Pod)
		p2.Status = p.Status
		if out, err = st.UpdateStatus(context.Background(), p2); err != nil {
			t.Fatalf("status %s: %v", obj.GetName(), err)
		}
	}
	return out
}

// kubectl runs the real kubectl against e with a kubeconfig of its own.
type kubectl struct {
	t    testing.TB
	bin  string
	kc   string
	home string
}

func newKubectl(t testing.TB, e *env) *kubectl {
	t.Helper()
	return newKubectlAs(t, e, apiclient.Credential{Token: testToken})
}

// newKubectlAs is kubectl with cred for its user.
func newKubectlAs(t testing.TB, e *env, cred apiclient.Credential) *kubectl {
	t.Helper()
	bin, err := exec.LookPath("kubectl")
	if err != nil {
		t.Skip("kubectl not installed")
	}
	home := t.TempDir()
	kc := filepath.Join(home, "kubeconfig.yaml")
	if err := apiclient.WriteKubeconfig(kc, e.url, e.caPEM, cred); err != nil {
		t.Fatal(err)
	}
	return &kubectl{t: t, bin: bin, kc: kc, home: home}
}

// minor is kubectl's minor version (27 for v1.27.16), for the few
// assertions on what older kubectl releases do not print
// (hack/kubectl-versions.sh runs these tests with them).
func (k *kubectl) minor() int {
	k.t.Helper()
	out, err := exec.Command(k.bin, "version", "--client", "-o", "json").Output()
	var v struct {
		ClientVersion struct{ Minor string } `json:"clientVersion"`
	}
	if err != nil || json.Unmarshal(out, &v) != nil {
		k.t.Fatalf("kubectl version: %v\n%s", err, out)
	}
	n, err := strconv.Atoi(strings.TrimRight(v.ClientVersion.Minor, "+"))
	if err != nil {
		k.t.Fatalf("kubectl's minor version %q", v.ClientVersion.Minor)
	}
	return n
}

// run runs kubectl with args; wantFail says whether it should fail.
func (k *kubectl) run(wantFail bool, args ...string) string {
	k.t.Helper()
	cmd := exec.Command(k.bin, append([]string{"--kubeconfig", k.kc, "--cache-dir", filepath.Join(k.home, "cache")}, args...)...)
	cmd.Env = append(os.Environ(), "HOME="+k.home, "KUBECONFIG=")
	out, err := cmd.CombinedOutput()
	if (err != nil) != wantFail {
		k.t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	k.t.Logf("$ kubectl %s\n%s", strings.Join(args, " "), out)
	return string(out)
}

// file writes a manifest for kubectl -f.
func (k *kubectl) file(name, content string) string {
	k.t.Helper()
	p := filepath.Join(k.home, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		k.t.Fatal(err)
	}
	return p
}

// expect fails the test for each wanted string out lacks.
// expectFields is expect for kubectl describe's "Field:  value" lines,
// whatever the alignment (kubectl releases pad them differently).
func expectFields(t testing.TB, out string, want ...string) {
	t.Helper()
	squeeze := func(s string) string { return strings.Join(strings.Fields(s), " ") }
	var lines []string
	for l := range strings.Lines(out) {
		lines = append(lines, squeeze(l))
	}
	for _, w := range want {
		if !slices.Contains(lines, squeeze(w)) {
			t.Errorf("output lacks the line %q:\n%s", w, out)
		}
	}
}

func expect(t testing.TB, out string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("output lacks %q:\n%s", w, out)
		}
	}
}
