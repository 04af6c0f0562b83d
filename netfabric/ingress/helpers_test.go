package ingress

import (
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
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flotilla-dev/flotilla/internal/testkit"
	"github.com/flotilla-dev/flotilla/netfabric/svcview"
)

// testLogger logs at info: the proxy's debug lines (one per routing table
// update, net/http's complaints) would drown a test that updates it
// thousands of times.
func testLogger(t testing.TB) *slog.Logger { return testkit.LoggerAt(t, slog.LevelInfo) }

// backend is an httptest server standing in for one endpoint; it answers
// with its name and echoes what the proxy sent.
type backend struct {
	name string
	srv  *httptest.Server
	hits atomic.Int64
}

func newBackend(t testing.TB, name string) *backend {
	b := &backend{name: name}
	b.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.hits.Add(1)
		h := w.Header()
		h.Set("X-Seen-Host", r.Host)
		h.Set("X-Seen-Path", r.URL.Path)
		h.Set("X-Seen-XFF", r.Header.Get("X-Forwarded-For"))
		h.Set("X-Seen-XFP", r.Header.Get("X-Forwarded-Proto"))
		h.Set("X-Seen-XFH", r.Header.Get("X-Forwarded-Host"))
		io.WriteString(w, b.name)
	}))
	t.Cleanup(b.srv.Close)
	return b
}

func (b *backend) port() int32 {
	u, _ := url.Parse(b.srv.URL)
	p, _ := strconv.Atoi(u.Port())
	return int32(p)
}

var epoch = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

func service(name string, ports ...corev1.ServicePort) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
		Spec:       corev1.ServiceSpec{ClusterIP: "10.96.0.10", Ports: ports},
	}
}

func svcPort(name string, port int32) corev1.ServicePort {
	return corev1.ServicePort{Name: name, Port: port, Protocol: corev1.ProtocolTCP}
}

// endpointSlice is one slice of service svc for port portName with one
// endpoint at addr:port.
func endpointSlice(svc, portName, addr string, port int32, ready bool) *discoveryv1.EndpointSlice {
	return &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: "default",
			Name:      fmt.Sprintf("%s-%s-%d", svc, addr, port),
			Labels:    map[string]string{discoveryv1.LabelServiceName: svc},
		},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: &portName, Port: &port}},
		Endpoints: []discoveryv1.Endpoint{{
			Addresses:  []string{addr},
			Conditions: discoveryv1.EndpointConditions{Ready: &ready},
		}},
	}
}

// slicesOf makes the slices of service svc's port portName whose endpoints
// are the backends' servers on loopback.
func slicesOf(svc, portName string, ready bool, bs ...*backend) []*discoveryv1.EndpointSlice {
	var out []*discoveryv1.EndpointSlice
	for _, b := range bs {
		out = append(out, endpointSlice(svc, portName, "127.0.0.1", b.port(), ready))
	}
	return out
}

func ptr[T any](v T) *T { return &v }

// ingress makes an Ingress created age seconds after epoch.
func ingress(name string, age int, rules ...networkingv1.IngressRule) *networkingv1.Ingress {
	return &networkingv1.Ingress{
		ObjectMeta: metav1.ObjectMeta{
			Namespace:         "default",
			Name:              name,
			CreationTimestamp: metav1.NewTime(epoch.Add(time.Duration(age) * time.Second)),
		},
		Spec: networkingv1.IngressSpec{Rules: rules},
	}
}

func rule(host string, paths ...networkingv1.HTTPIngressPath) networkingv1.IngressRule {
	return networkingv1.IngressRule{
		Host:             host,
		IngressRuleValue: networkingv1.IngressRuleValue{HTTP: &networkingv1.HTTPIngressRuleValue{Paths: paths}},
	}
}

func svcBackend(svc string, port int32) networkingv1.IngressBackend {
	return networkingv1.IngressBackend{Service: &networkingv1.IngressServiceBackend{
		Name: svc, Port: networkingv1.ServiceBackendPort{Number: port},
	}}
}

func httpPath(p string, typ networkingv1.PathType, svc string, port int32) networkingv1.HTTPIngressPath {
	return networkingv1.HTTPIngressPath{Path: p, PathType: &typ, Backend: svcBackend(svc, port)}
}

const (
	exact  = networkingv1.PathTypeExact
	prefix = networkingv1.PathTypePrefix
	implSp = networkingv1.PathTypeImplementationSpecific
)

// objects gathers a snapshot's objects.
type objects struct {
	services  []*corev1.Service
	slices    []*discoveryv1.EndpointSlice
	ingresses []*networkingv1.Ingress
	secrets   []*corev1.Secret
}

func (o *objects) snapshot() *svcview.Snapshot {
	return svcview.NewSnapshot(
		append([]*corev1.Service(nil), o.services...),
		append([]*discoveryv1.EndpointSlice(nil), o.slices...),
		append([]*networkingv1.Ingress(nil), o.ingresses...),
		append([]*corev1.Secret(nil), o.secrets...))
}

// webService adds service name, port 80 "http", whose ready endpoints are
// the backends.
func (o *objects) webService(name string, bs ...*backend) {
	o.services = append(o.services, service(name, svcPort("http", 80)))
	o.slices = append(o.slices, slicesOf(name, "http", true, bs...)...)
}

// newProxy makes a Proxy, updated with snap unless nil, and a loopback
// front server for its Handler (Run is not called).
func newProxy(t testing.TB, snap *svcview.Snapshot) (*Proxy, *httptest.Server) {
	t.Helper()
	p, err := New(Config{HTTPAddr: "127.0.0.1:0", HTTPSAddr: Off, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if snap != nil {
		p.Update(snap)
	}
	front := httptest.NewServer(p.Handler())
	t.Cleanup(front.Close)
	return p, front
}

type reply struct {
	code   int
	body   string
	header http.Header
}

// get requests path on front with the Host header host.
func get(t testing.TB, c *http.Client, base, host, path string) reply {
	t.Helper()
	req, err := http.NewRequest("GET", base+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	if c == nil {
		c = http.DefaultClient
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s%s (Host %s): %v", base, path, host, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return reply{resp.StatusCode, strings.TrimSpace(string(body)), resp.Header}
}

// genCert makes a self-signed certificate for hosts: PEM certificate and
// key.
func genCert(t testing.TB, cn string, hosts ...string) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: cn},
		DNSNames:     hosts,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
}

func tlsSecret(name string, crt, key []byte) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
		Type:       corev1.SecretTypeTLS,
		Data:       map[string][]byte{corev1.TLSCertKey: crt, corev1.TLSPrivateKeyKey: key},
	}
}

// servedCert connects to addr with SNI sni and returns the certificate it
// is shown.
func servedCert(t testing.TB, addr, sni string) *x509.Certificate {
	t.Helper()
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr,
		&tls.Config{ServerName: sni, InsecureSkipVerify: true})
	if err != nil {
		t.Fatalf("TLS dial %s (SNI %q): %v", addr, sni, err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0]
}

// serve runs p.Serve on loopback listeners until the test ends and
// returns their addresses.
func serve(t testing.TB, p *Proxy) (httpAddr, httpsAddr string) {
	t.Helper()
	hl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Serve(ctx, hl, sl) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return hl.Addr().String(), sl.Addr().String()
}

// recordingHandler keeps the records logged at Warn or above, as
// "message key=value...".
type recordingHandler struct {
	slog.Handler
	mu   *sync.Mutex
	msgs *[]string
}

func newRecorder(t testing.TB) (*slog.Logger, func() []string) {
	var mu sync.Mutex
	var msgs []string
	h := recordingHandler{Handler: slog.NewTextHandler(t.Output(), nil), mu: &mu, msgs: &msgs}
	return slog.New(h), func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), msgs...)
	}
}

func (h recordingHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level >= slog.LevelWarn {
		h.mu.Lock()
		msg := r.Message
		r.Attrs(func(a slog.Attr) bool {
			msg += " " + a.String()
			return true
		})
		*h.msgs = append(*h.msgs, msg)
		h.mu.Unlock()
	}
	return h.Handler.Handle(ctx, r)
}

func (h recordingHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return recordingHandler{h.Handler.WithAttrs(as), h.mu, h.msgs}
}

func (h recordingHandler) WithGroup(name string) slog.Handler {
	return recordingHandler{h.Handler.WithGroup(name), h.mu, h.msgs}
}
