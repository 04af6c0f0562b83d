package apiserver_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	bootstrapapi "k8s.io/cluster-bootstrap/token/api"

	"github.com/flotilla-dev/flotilla/cluster/apiclient"
	"github.com/flotilla-dev/flotilla/cluster/auth"
	"github.com/flotilla-dev/flotilla/cluster/events"
	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/internal/testkit"
)

// csrBody is a CertificateSigningRequest of key for cn in orgs (naming
// dns as hosts), to signer.
func csrBody(t testing.TB, key *ecdsa.PrivateKey, signer, cn string, orgs, dns []string) string {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: cn, Organization: orgs}, DNSNames: dns}, key)
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(certificatesv1.CertificateSigningRequest{Spec: certificatesv1.CertificateSigningRequestSpec{
		Request: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), SignerName: signer}})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestNodeBootstrap: a join token can do nothing but get a node its client
// certificate; the first certificate binds the name to the node's key; the
// node's certificate gets its serving certificate and renews itself, and
// is not another node's.
func TestNodeBootstrap(t *testing.T) {
	e := newAuthEnv(t)
	ctx := context.Background()
	token, secret, err := auth.NewBootstrapToken(time.Now(), time.Hour, "test")
	if err != nil {
		t.Fatal(err)
	}
	mustCreate(t, e.store, secret)
	anon := e.client(t, apiclient.Credential{})
	send := func(hc *http.Client, bearer, method, path, body string) (int, string) {
		t.Helper()
		req, err := http.NewRequest(method, e.url+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if bearer != "" {
			req.Header.Set("Authorization", "Bearer "+bearer)
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	const csrPath = "/apis/certificates.k8s.io/v1/certificatesigningrequests"
	client, serving := certificatesv1.KubeAPIServerClientKubeletSignerName, certificatesv1.KubeletServingSignerName
	nodes := []string{auth.GroupNodes}
	// sign returns the certificate of a CSR that must be signed.
	sign := func(hc *http.Client, bearer, body string) (*x509.Certificate, []byte) {
		t.Helper()
		code, out := send(hc, bearer, http.MethodPost, csrPath, body)
		if code != http.StatusCreated {
			t.Fatalf("CSR = %d %s, want 201", code, out)
		}
		var csr certificatesv1.CertificateSigningRequest
		if err := json.Unmarshal([]byte(out), &csr); err != nil {
			t.Fatal(err)
		}
		block, _ := pem.Decode(csr.Status.Certificate)
		if block == nil {
			t.Fatalf("no certificate in %s", out)
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		return cert, csr.Status.Certificate
	}
	refused := func(hc *http.Client, bearer, body string, wantCode int, want string) {
		t.Helper()
		if code, out := send(hc, bearer, http.MethodPost, csrPath, body); code != wantCode || !strings.Contains(out, want) {
			t.Errorf("CSR = %d %s, want %d with %q", code, out, wantCode, want)
		}
	}

	// The token alone lists nothing.
	if code, out := send(anon, token, http.MethodGet, "/api/v1/pods", ""); code != http.StatusForbidden {
		t.Errorf("join token: GET pods = %d %s, want 403", code, out)
	}
	if code, _ := send(anon, token, http.MethodGet, "/api/v1/namespaces/kube-system/secrets", ""); code != http.StatusForbidden {
		t.Errorf("join token: GET secrets = %d, want 403", code)
	}

	// The token buys n1 its client certificate; the Node is bound to the key.
	key := newKey(t)
	cert, certPEM := sign(anon, token, csrBody(t, key, client, "system:node:n1", nodes, nil))
	if cert.Subject.CommonName != "system:node:n1" || len(cert.ExtKeyUsage) != 1 || cert.ExtKeyUsage[0] != x509.ExtKeyUsageClientAuth {
		t.Errorf("node certificate: %v %v", cert.Subject, cert.ExtKeyUsage)
	}
	obj, err := e.store.Get(ctx, "nodes", "", "n1")
	if err != nil {
		t.Fatalf("the first certificate made no Node: %v", err)
	}
	if obj.(*corev1.Node).Annotations[auth.AnnotationNodeKey] == "" {
		t.Errorf("Node n1 is not bound to a key: %v", obj.(*corev1.Node).Annotations)
	}

	// As n1: it reads, gets its serving certificate, renews, and is no
	// other node.
	keyDER, _ := x509.MarshalECPrivateKey(key)
	n1 := e.client(t, apiclient.Credential{CertPEM: certPEM, KeyPEM: pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})})
	if code, out := send(n1, "", http.MethodGet, "/api/v1/pods", ""); code != http.StatusOK {
		t.Errorf("n1: GET pods = %d %s", code, out)
	}
	srv, _ := sign(n1, "", csrBody(t, newKey(t), serving, "system:node:n1", nodes, []string{"n1"}))
	if srv.VerifyHostname("n1") != nil || srv.ExtKeyUsage[0] != x509.ExtKeyUsageServerAuth {
		t.Errorf("serving certificate: %v %v", srv.DNSNames, srv.ExtKeyUsage)
	}
	sign(n1, "", csrBody(t, key, client, "system:node:n1", nodes, nil))
	refused(n1, "", csrBody(t, newKey(t), client, "system:node:n2", nodes, nil), http.StatusForbidden, `it is node \"n1\"`)
	refused(n1, "", csrBody(t, newKey(t), serving, "system:node:n1", nodes, []string{"n2"}), http.StatusUnprocessableEntity, "exactly one DNS name")

	// Another machine (another key) with a valid token cannot take n1; the
	// same machine (same key) may come back with a token.
	refused(anon, token, csrBody(t, newKey(t), client, "system:node:n1", nodes, nil), http.StatusForbidden, "already in the cluster")
	sign(anon, token, csrBody(t, key, client, "system:node:n1", nodes, nil))
	// A token gets no serving certificate, and only node certificates.
	refused(anon, token, csrBody(t, newKey(t), serving, "system:node:n9", nodes, []string{"n9"}), http.StatusForbidden, "only the node itself")
	refused(anon, token, csrBody(t, newKey(t), client, "admin", []string{auth.GroupMasters}, nil), http.StatusUnprocessableEntity, "common name")
	refused(anon, token, csrBody(t, newKey(t), client, "system:node:n9", []string{auth.GroupMasters}, nil), http.StatusUnprocessableEntity, "organization")
	refused(anon, token, `{"spec":{"signerName":"`+client+`","request":"bm90IGEgQ1NS"}}`, http.StatusUnprocessableEntity, "PEM CERTIFICATE REQUEST")
	refused(anon, token, csrBody(t, newKey(t), "example.com/any", "system:node:n9", nodes, nil), http.StatusUnprocessableEntity, "signerName")

	// Expired, revoked and made-up tokens authenticate nobody.
	expired, old, err := auth.NewBootstrapToken(time.Now().Add(-2*time.Hour), time.Hour, "")
	if err != nil {
		t.Fatal(err)
	}
	mustCreate(t, e.store, old)
	refused(anon, expired, csrBody(t, newKey(t), client, "system:node:n9", nodes, nil), http.StatusUnauthorized, "Unauthorized")
	if _, err := e.store.Delete(ctx, "secrets", auth.SystemNamespace, secret.Name, store.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	refused(anon, token, csrBody(t, newKey(t), client, "system:node:n9", nodes, nil), http.StatusUnauthorized, "Unauthorized")
	refused(anon, "abcdef.0123456789abcdef", csrBody(t, newKey(t), client, "system:node:n9", nodes, nil), http.StatusUnauthorized, "Unauthorized")
	if string(old.Data[bootstrapapi.BootstrapTokenUsageAuthentication]) != "true" {
		t.Errorf("a new token is not for authentication: %v", old.Data)
	}
}

// TestNodeRights: with its own certificate a node reads the Secrets,
// ConfigMaps and claims of its pods and no others, lists Secrets only as
// the ingresses' certificates, writes the status of its own pods and its
// own Node (not the server's decisions about it), and creates no pod and
// touches no other Node.
func TestNodeRights(t *testing.T) {
	e := newAuthEnv(t)
	ctx := context.Background()
	uses := func(p *corev1.Pod, secret, cm, claim string) *corev1.Pod {
		p.Spec.Volumes = []corev1.Volume{
			{Name: "s", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: secret}}},
			{Name: "v", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: claim}}},
		}
		p.Spec.Containers[0].EnvFrom = []corev1.EnvFromSource{{ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: cm}}}}
		return p
	}
	mustCreate(t, e.store, uses(pod("shop", "p1", "n1", nil), "s1", "c1", "v1"))
	mustCreate(t, e.store, uses(pod("shop", "p2", "n2", nil), "s2", "c2", "v2"))
	for _, n := range []string{"n1", "n2"} {
		mustCreate(t, e.store, &corev1.Node{TypeMeta: metav1.TypeMeta{Kind: "Node", APIVersion: "v1"},
			ObjectMeta: metav1.ObjectMeta{Name: n, Annotations: map[string]string{auth.AnnotationNodeKey: "k-" + n}},
			Spec:       corev1.NodeSpec{PodCIDR: "10.244.1.0/24", PodCIDRs: []string{"10.244.1.0/24"}}})
	}
	for _, name := range []string{"s1", "s2"} {
		mustCreate(t, e.store, &corev1.Secret{TypeMeta: metav1.TypeMeta{Kind: "Secret", APIVersion: "v1"},
			ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name}, Data: map[string][]byte{"k": []byte("v")}})
	}
	for _, name := range []string{"c1", "c2"} {
		mustCreate(t, e.store, &corev1.ConfigMap{TypeMeta: metav1.TypeMeta{Kind: "ConfigMap", APIVersion: "v1"},
			ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name}})
	}
	cred := e.cred(t, "system:node:n1", auth.GroupNodes)
	n1, err := apiclient.New(apiclient.Config{Server: e.url, CAData: e.caPEM, CertData: cred.CertPEM, KeyData: cred.KeyPEM})
	if err != nil {
		t.Fatal(err)
	}
	code := func(err error) int {
		var se *apiclient.StatusError
		switch {
		case err == nil:
			return 200
		case errors.As(err, &se):
			return int(se.Status.Code)
		}
		t.Fatalf("not an API error: %v", err)
		return 0
	}
	check := func(what string, err error, want int) {
		t.Helper()
		if got := code(err); got != want {
			t.Errorf("node n1: %s = %d (%v), want %d", what, got, err, want)
		}
	}
	get := func(res, ns, name string) error { _, err := n1.Get(ctx, res, ns, name); return err }
	check("get its pod's Secret", get("secrets", "shop", "s1"), 200)
	check("get another node's pod's Secret", get("secrets", "shop", "s2"), 403)
	check("get its pod's ConfigMap", get("configmaps", "shop", "c1"), 200)
	check("get another node's pod's ConfigMap", get("configmaps", "shop", "c2"), 403)
	check("get another node's pod's claim", get("persistentvolumeclaims", "shop", "v2"), 403)
	_, _, err = n1.List(ctx, "secrets", store.ListOptions{})
	check("list every Secret", err, 403)
	_, _, err = n1.List(ctx, "secrets", store.ListOptions{FieldSelector: auth.TLSSecretsSelector})
	check("list the TLS Secrets", err, 200)
	_, _, err = n1.List(ctx, "pods", store.ListOptions{FieldSelector: "spec.nodeName=n1"})
	check("list its pods", err, 200)

	_, err = n1.Create(ctx, pod("shop", "mine", "n1", nil))
	check("create a pod", err, 403)
	_, err = n1.Create(ctx, &corev1.Node{TypeMeta: metav1.TypeMeta{Kind: "Node", APIVersion: "v1"}, ObjectMeta: metav1.ObjectMeta{Name: "n3"}})
	check("register another Node", err, 403)
	lease := func(ns, name string) *coordinationv1.Lease {
		holder := name
		return &coordinationv1.Lease{TypeMeta: metav1.TypeMeta{Kind: "Lease", APIVersion: "coordination.k8s.io/v1"},
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: coordinationv1.LeaseSpec{HolderIdentity: &holder}}
	}
	_, err = n1.Create(ctx, lease("kube-node-lease", "n1"))
	check("create its Lease", err, 200)
	_, err = n1.Create(ctx, lease("kube-node-lease", "n2"))
	check("create another node's Lease", err, 403)
	ownLease, err := e.store.Get(ctx, "leases", "kube-node-lease", "n1")
	if err != nil {
		t.Fatal(err)
	}
	_, err = n1.Update(ctx, ownLease)
	check("renew its Lease", err, 200)
	obj, err := e.store.Get(ctx, "pods", "shop", "p1")
	if err != nil {
		t.Fatal(err)
	}
	p1 := obj.(*corev1.Pod).DeepCopy()
	p1.Status.Message = "seen by n1"
	_, err = n1.UpdateStatus(ctx, p1)
	check("update its pod's status", err, 200)
	p1.Labels = map[string]string{"x": "y"}
	_, err = n1.Update(ctx, p1)
	check("update its pod", err, 403)
	obj, _ = e.store.Get(ctx, "pods", "shop", "p2")
	_, err = n1.UpdateStatus(ctx, obj)
	check("update another node's pod's status", err, 403)
	_, err = n1.Delete(ctx, "pods", "shop", "p1", store.DeleteOptions{})
	check("delete its pod", err, 403)

	obj, _ = e.store.Get(ctx, "nodes", "", "n2")
	n2 := obj.(*corev1.Node).DeepCopy()
	n2.Labels = map[string]string{"taken": "yes"}
	_, err = n1.Update(ctx, n2)
	check("update another Node", err, 403)
	_, err = n1.UpdateStatus(ctx, n2)
	check("update another Node's status", err, 403)
	_, err = n1.Delete(ctx, "nodes", "", "n2", store.DeleteOptions{})
	check("delete another Node", err, 403)
	obj, _ = e.store.Get(ctx, "nodes", "", "n1")
	own := obj.(*corev1.Node).DeepCopy()
	own.Labels = map[string]string{"kubernetes.io/hostname": "n1"}
	_, err = n1.Update(ctx, own)
	check("label its own Node", err, 200)
	obj, _ = e.store.Get(ctx, "nodes", "", "n1")
	own = obj.(*corev1.Node).DeepCopy()
	own.Spec.PodCIDR, own.Spec.PodCIDRs = "10.244.2.0/24", []string{"10.244.2.0/24"}
	_, err = n1.Update(ctx, own)
	check("take another pod CIDR", err, 403)
	own = obj.(*corev1.Node).DeepCopy()
	own.Annotations[auth.AnnotationNodeKey] = "another key"
	_, err = n1.Update(ctx, own)
	check("rebind its name to another key", err, 403)

	// The node's recorder, through the API with the node's rights (which
	// do not include reading Events): a repeated Event about its pod is
	// one Event with a count.
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	b := events.New(rctx, events.Config{Store: n1, Host: "n1"})
	defer b.Shutdown()
	mine, err := e.store.Get(ctx, "pods", "shop", "p1")
	if err != nil {
		t.Fatal(err)
	}
	rec := b.Recorder("kubelet")
	for range 3 {
		rec.Eventf(mine, corev1.EventTypeWarning, "Unhealthy", "Readiness probe failed: HTTP probe failed with statuscode: 500")
	}
	testkit.EventuallyWhy(t, "one Event counted 3 times", time.Minute, func() string {
		objs, _, err := e.store.List(ctx, "events", store.ListOptions{Namespace: "shop"})
		if err != nil {
			return err.Error()
		}
		if len(objs) != 1 || objs[0].(*corev1.Event).Count != 3 {
			return fmt.Sprintf("%d events: %+v", len(objs), objs)
		}
		return ""
	})
}
