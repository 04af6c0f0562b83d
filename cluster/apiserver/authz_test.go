package apiserver_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flotilla-dev/flotilla/cluster/apiclient"
	"github.com/flotilla-dev/flotilla/cluster/apiserver"
	"github.com/flotilla-dev/flotilla/cluster/auth"
	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/internal/testkit"
	"github.com/flotilla-dev/flotilla/schema"
)

// authEnv is a server that authenticates client certificates of its CA and
// authorizes with RBAC over its store.
type authEnv struct {
	*env
	rbac *auth.RBAC
}

func newAuthEnv(t *testing.T) *authEnv {
	t.Helper()
	return newAuthEnvOn(t, store.MemoryFor(t), true)
}

// newAuthEnvOn serves st; without rbac the server authenticates but
// authorizes nothing (the authorizer still runs, for put).
func newAuthEnvOn(t testing.TB, st *store.Badger, useRBAC bool, more ...func(*apiserver.Config)) *authEnv {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	rbac, err := auth.NewRBAC(ctx, st, quietLogger())
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { rbac.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	e := newEnvWith(t, st, func(cfg *apiserver.Config) {
		caPEM, _, _, err := apiserver.EnsureCerts(filepath.Dir(cfg.TLSCertFile), []string{"127.0.0.1"})
		if err != nil {
			t.Fatal(err)
		}
		cfg.ClientCA = caPEM
		cfg.Tokens = auth.BootstrapTokens{Store: st}
		if cfg.Signer, err = apiserver.LoadSigner(filepath.Dir(cfg.TLSCertFile)); err != nil {
			t.Fatal(err)
		}
		if useRBAC {
			cfg.Authorizer = auth.NodeAuthorizer{Store: st, Next: rbac}
		}
		for _, change := range more {
			change(cfg)
		}
	})
	return &authEnv{env: e, rbac: rbac}
}

// cred is a client certificate of the cluster CA for user in groups.
func (e *authEnv) cred(t testing.TB, user string, groups ...string) apiclient.Credential {
	t.Helper()
	certPEM, keyPEM, err := apiserver.IssueClientCert(e.dir, user, groups, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return apiclient.Credential{CertPEM: certPEM, KeyPEM: keyPEM}
}

// client is an HTTP client presenting cred.
func (e *authEnv) client(t testing.TB, cred apiclient.Credential) *http.Client {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(e.caPEM)
	cfg := &tls.Config{RootCAs: pool}
	if cred.CertPEM != nil {
		pair, err := tls.X509KeyPair(cred.CertPEM, cred.KeyPEM)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	tr := &http.Transport{TLSClientConfig: cfg}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// put writes an RBAC object into the store (as a commit would) and waits
// until the authorizer has read it.
func (e *authEnv) put(t testing.TB, obj schema.Object) {
	t.Helper()
	k, err := schema.KindOf(obj)
	if err != nil {
		t.Fatal(err)
	}
	schema.SetTypeMeta(obj, k)
	out, err := e.store.Create(context.Background(), obj)
	if err != nil {
		t.Fatal(err)
	}
	rev, err := strconv.ParseInt(out.GetResourceVersion(), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := e.rbac.WaitRevision(ctx, rev); err != nil {
		t.Fatalf("the authorizer did not read revision %d: %v", rev, err)
	}
}

func clusterRoleBinding(name, role string, subjects ...rbacv1.Subject) *rbacv1.ClusterRoleBinding {
	return &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: name},
		RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role}, Subjects: subjects}
}

func roleBinding(ns, name, kind, role string, subjects ...rbacv1.Subject) *rbacv1.RoleBinding {
	return &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: kind, Name: role}, Subjects: subjects}
}

func group(name string) rbacv1.Subject {
	return rbacv1.Subject{APIGroup: rbacv1.GroupName, Kind: rbacv1.GroupKind, Name: name}
}

func user(name string) rbacv1.Subject {
	return rbacv1.Subject{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: name}
}

// TestKubectlRBAC is a view user through the real kubectl: reads work,
// writes are 403 with Kubernetes' wording, `auth can-i` and `auth whoami`
// answer, and a RoleBinding changes the answer.
func TestKubectlRBAC(t *testing.T) {
	e := newAuthEnv(t)
	mustCreate(t, e.store, pod("default", "web-1", "node-a", map[string]string{"app": "web"}))
	mustCreate(t, e.store, &corev1.Secret{TypeMeta: metav1.TypeMeta{Kind: "Secret", APIVersion: "v1"},
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "db"}, Data: map[string][]byte{"pw": []byte("x")}})
	e.put(t, clusterRoleBinding("viewers", "view", group("viewers")))

	k := newKubectlAs(t, e.env, e.cred(t, "vera", "viewers"))
	expect(t, k.run(false, "get", "pods"), "web-1")
	expect(t, k.run(true, "delete", "pod", "web-1"),
		`pods "web-1" is forbidden: User "vera" cannot delete resource "pods" in API group "" in the namespace "default"`)
	expect(t, k.run(true, "get", "secret", "db"), `cannot get resource "secrets"`)
	expect(t, k.run(true, "auth", "can-i", "delete", "pods"), "no")
	expect(t, k.run(false, "auth", "can-i", "watch", "pods"), "yes")
	expect(t, k.run(false, "auth", "whoami"), "vera", "viewers", auth.GroupAuthenticated)
	if _, err := e.store.Get(context.Background(), "pods", "default", "web-1"); err != nil {
		t.Fatalf("the refused delete removed the pod: %v", err)
	}

	// A RoleBinding to edit in default: vera may now delete there, and
	// still not in another namespace.
	e.put(t, roleBinding("default", "vera-edits", "ClusterRole", "edit", user("vera")))
	expect(t, k.run(false, "auth", "can-i", "delete", "pods"), "yes")
	expect(t, k.run(true, "auth", "can-i", "delete", "pods", "-n", "kube-system"), "no")
	expect(t, k.run(false, "delete", "pod", "web-1", "--wait=false"), `pod "web-1" deleted`)
}

// TestAuthorizeEveryDoor: credentials are required, a certificate of
// another CA is refused, an unbound user may only discover the API and ask
// about itself, and watches, logs and the review endpoints are authorized
// like everything else.
func TestAuthorizeEveryDoor(t *testing.T) {
	e := newAuthEnv(t)
	mustCreate(t, e.store, pod("shop", "web-1", "node-a", nil))
	nobody := e.client(t, e.cred(t, "nobody"))
	get := func(hc *http.Client, path string) int {
		t.Helper()
		resp, err := hc.Get(e.url + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for path, want := range map[string]int{
		"/api":                                   http.StatusOK,
		"/apis":                                  http.StatusOK,
		"/api/v1":                                http.StatusOK,
		"/version":                               http.StatusOK,
		"/api/v1/pods":                           http.StatusForbidden,
		"/api/v1/namespaces/shop/pods?watch=1":   http.StatusForbidden,
		"/api/v1/namespaces/shop/pods/web-1/log": http.StatusForbidden,
		"/api/v1/namespaces/shop/secrets":        http.StatusForbidden,
		"/apis/apps/v1/deployments":              http.StatusForbidden,
	} {
		if got := get(nobody, path); got != want {
			t.Errorf("unbound user: GET %s = %d, want %d", path, got, want)
		}
	}
	if got := get(e.client(t, apiclient.Credential{}), "/api/v1/pods"); got != http.StatusUnauthorized {
		t.Errorf("no credential: GET /api/v1/pods = %d, want 401", got)
	}

	// A certificate from another CA authenticates nobody. Go's client sends
	// it only when its issuer's name is one the server asks for (the two
	// CAs' names differ by their second of birth), so the refusal is either
	// the handshake's or the anonymous request's 401.
	other := t.TempDir()
	if _, _, _, err := apiserver.EnsureCerts(other, nil); err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := apiserver.IssueClientCert(other, "mallory", []string{auth.GroupMasters}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if resp, err := e.client(t, apiclient.Credential{CertPEM: certPEM, KeyPEM: keyPEM}).Get(e.url + "/api/v1/pods"); err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("a certificate of another CA: GET /api/v1/pods = %d, want the TLS handshake refused or 401", resp.StatusCode)
		}
	}

	// The review endpoints answer the unbound user about itself.
	resp, err := nobody.Post(e.url+"/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", "application/json",
		strings.NewReader(`{"spec":{"resourceAttributes":{"verb":"watch","resource":"pods","namespace":"shop"}}}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var review struct {
		Status struct{ Allowed bool } `json:"status"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&review); err != nil || resp.StatusCode != http.StatusCreated || review.Status.Allowed {
		t.Errorf("SelfSubjectAccessReview: %d, allowed %v, err %v; want 201, not allowed", resp.StatusCode, review.Status.Allowed, err)
	}

	// Bound to view in shop: the watch and the log are allowed there.
	e.put(t, roleBinding("shop", "nobody-views", "ClusterRole", "view", user("nobody")))
	if got := get(nobody, "/api/v1/namespaces/shop/pods?watch=1&timeoutSeconds=1"); got != http.StatusOK {
		t.Errorf("view in shop: watch = %d, want 200", got)
	}
	if got := get(nobody, "/api/v1/namespaces/default/pods?watch=1&timeoutSeconds=1"); got != http.StatusForbidden {
		t.Errorf("view in shop: watch in default = %d, want 403", got)
	}
	testkit.EventuallyTrue(t, "view in shop lists shop's pods", 10*time.Second, func() bool {
		return get(nobody, "/api/v1/namespaces/shop/pods") == http.StatusOK
	})
}
