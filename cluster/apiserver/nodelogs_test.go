package apiserver

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/internal/testkit"
)

// agentTLS is a cluster CA and what a test needs of it: an agent's serving
// certificate for a node name, and the server's client TLS config.
type agentTLS struct {
	signer *Signer
	roots  *x509.CertPool
}

func newAgentTLS(t *testing.T) agentTLS {
	t.Helper()
	dir := t.TempDir()
	caPEM, _, _, err := EnsureCerts(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := LoadSigner(dir)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	return agentTLS{signer: signer, roots: roots}
}

// pair signs a certificate for a new key.
func (a agentTLS) pair(t *testing.T, req Request) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	req.PublicKey, req.TTL = &key.PublicKey, time.Hour
	certPEM, err := a.signer.Sign(req)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(certPEM)
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{block.Bytes}, PrivateKey: key, Leaf: leaf}
}

// serving is node's serving certificate.
func (a agentTLS) serving(t *testing.T, node string) tls.Certificate {
	return a.pair(t, Request{Subject: pkix.Name{CommonName: "system:node:" + node, Organization: []string{"system:nodes"}},
		Serving: true, DNSNames: []string{node}, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}})
}

// client is the server's TLS config towards agents.
func (a agentTLS) client(t *testing.T) *tls.Config {
	return &tls.Config{RootCAs: a.roots, Certificates: []tls.Certificate{a.pair(t, Request{Subject: pkix.Name{CommonName: "system:flotilla:apiserver"}})}}
}

// startAgent serves h over TLS with cert, requiring client certificates of
// the CA as an agent does; it returns the port.
func (a agentTLS) startAgent(t *testing.T, cert tls.Certificate, h http.Handler) int {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: a.roots}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	p, _ := strconv.Atoi(port)
	return p
}

// logsFixture stores node n1 at 127.0.0.1 and its pod default/web.
func logsFixture(t *testing.T) store.Interface {
	t.Helper()
	st := store.MemoryFor(t)
	ctx := context.Background()
	if _, err := st.Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"},
		Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "127.0.0.1"}}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default"},
		Spec: corev1.PodSpec{NodeName: "n1", Containers: []corev1.Container{{Name: "app", Image: "x"}}}}); err != nil {
		t.Fatal(err)
	}
	return st
}

// TestNodeLogsLeaveNothingBehind: many `flotilla logs` calls proxied to an
// agent, over mutual TLS, reuse connections, so the server's goroutine
// count ends where it was (a transport per call kept each call's
// connection and two goroutines).
func TestNodeLogsLeaveNothingBehind(t *testing.T) {
	ca := newAgentTLS(t)
	port := ca.startAgent(t, ca.serving(t, "n1"), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/containerLogs/default/web/app" || r.TLS.PeerCertificates[0].Subject.CommonName != "system:flotilla:apiserver" {
			http.Error(w, "unexpected "+r.URL.Path, http.StatusBadRequest)
			return
		}
		fmt.Fprintln(w, "hello from the agent")
	}))
	ctx := context.Background()
	logs := NewNodeLogs(logsFixture(t), port, ca.client(t))
	call := func() {
		var buf bytes.Buffer
		if err := logs.PodLogs(ctx, "default", "web", corev1.PodLogOptions{}, &buf); err != nil {
			t.Fatal(err)
		}
		if buf.String() != "hello from the agent\n" {
			t.Fatalf("logs = %q", buf.String())
		}
	}
	call() // the shared client and its first connection
	before := runtime.NumGoroutine()
	for i := 0; i < 500; i++ {
		call()
	}
	testkit.EventuallyTrue(t, "the goroutine count back where it was", 10*time.Second, func() bool {
		return runtime.NumGoroutine() <= before+4
	})
}

// TestNodeLogsRefuseImpostors: whoever answers on a node's log port must
// hold the cluster CA's serving certificate for that node's name. An
// impostor with a self-signed certificate, or another node's, gets a
// certificate error, and never sees the server's client certificate or a
// request.
func TestNodeLogsRefuseImpostors(t *testing.T) {
	ca := newAgentTLS(t)
	other := newAgentTLS(t) // a CA the cluster does not know
	st := logsFixture(t)
	for _, tc := range []struct {
		name string
		cert tls.Certificate
		want string
	}{
		{"a self-signed certificate", other.serving(t, "n1"), "certificate signed by unknown authority"},
		{"another node's certificate", ca.serving(t, "n2"), "not n1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var sawCert, sawRequest atomic.Bool
			srv := httptest.NewUnstartedServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { sawRequest.Store(true) }))
			srv.TLS = &tls.Config{Certificates: []tls.Certificate{tc.cert}, ClientAuth: tls.RequestClientCert,
				VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
					if len(raw) > 0 {
						sawCert.Store(true)
					}
					return nil
				}}
			srv.StartTLS()
			defer srv.Close()
			_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
			p, _ := strconv.Atoi(port)
			err := NewNodeLogs(st, p, ca.client(t)).PodLogs(context.Background(), "default", "web", corev1.PodLogOptions{}, io.Discard)
			if err == nil || !strings.Contains(err.Error(), "certificate") || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("logs through an impostor: %v, want a certificate error (%s)", err, tc.want)
			}
			if sawCert.Load() || sawRequest.Load() {
				t.Errorf("the impostor received the server's certificate (%v) or a request (%v)", sawCert.Load(), sawRequest.Load())
			}
		})
	}
}
