package ingress

import (
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"strings"
	"testing"

	networkingv1 "k8s.io/api/networking/v1"
)

func TestTLSBySNI(t *testing.T) {
	var o objects
	o.webService("secure", newBackend(t, "secure"))
	o.webService("wild", newBackend(t, "wild"))
	secureCrt, secureKey := genCert(t, "secure-cert", "secure.example.com")
	wildCrt, wildKey := genCert(t, "wild-cert", "*.wild.example.com")
	sansCrt, sansKey := genCert(t, "sans-cert", "sans.example.com")
	o.secrets = append(o.secrets,
		tlsSecret("secure-tls", secureCrt, secureKey),
		tlsSecret("wild-tls", wildCrt, wildKey),
		tlsSecret("sans-tls", sansCrt, sansKey),
		tlsSecret("broken-tls", []byte("not a certificate"), secureKey),
	)
	ing := ingress("tls", 0,
		rule("secure.example.com", httpPath("/", prefix, "secure", 80)),
		rule("*.wild.example.com", httpPath("/", prefix, "wild", 80)))
	ing.Spec.TLS = []networkingv1.IngressTLS{
		{Hosts: []string{"secure.example.com"}, SecretName: "secure-tls"},
		{Hosts: []string{"*.wild.example.com"}, SecretName: "wild-tls"},
		{SecretName: "sans-tls"}, // no hosts: the certificate's own names
		{Hosts: []string{"broken.example.com"}, SecretName: "broken-tls"},
		{Hosts: []string{"missing.example.com"}, SecretName: "missing-tls"},
	}
	o.ingresses = append(o.ingresses, ing)

	log, warnings := newRecorder(t)
	p, err := New(Config{HTTPAddr: "127.0.0.1:0", HTTPSAddr: "127.0.0.1:0", Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	p.Update(o.snapshot())
	_, httpsAddr := serve(t, p)

	for sni, wantCN := range map[string]string{
		"secure.example.com":   "secure-cert",
		"SECURE.example.com":   "secure-cert",
		"a.wild.example.com":   "wild-cert",
		"sans.example.com":     "sans-cert",
		"a.b.wild.example.com": DefaultCertName,
		"unknown.example.com":  DefaultCertName,
		"broken.example.com":   DefaultCertName,
		"missing.example.com":  DefaultCertName,
		"":                     DefaultCertName,
	} {
		if got := servedCert(t, httpsAddr, sni).Subject.CommonName; got != wantCN {
			t.Errorf("SNI %q: served %q, want %q", sni, got, wantCN)
		}
	}

	// A verifying client reaches the backend over HTTPS, and the backend is
	// told the client used HTTPS.
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(secureCrt)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: "secure.example.com"}}}
	defer client.CloseIdleConnections()
	r := get(t, client, "https://"+httpsAddr, "secure.example.com", "/page")
	if r.code != 200 || r.body != "secure" || r.header.Get("X-Seen-XFP") != "https" {
		t.Errorf("HTTPS: %d %q X-Forwarded-Proto %q, want 200 secure https", r.code, r.body, r.header.Get("X-Seen-XFP"))
	}

	// Each bad secret is logged once, not again on an unchanged Update.
	p.Update(o.snapshot())
	w := warnings()
	if len(w) != 2 || !strings.Contains(strings.Join(w, "\n"), "broken-tls: bad certificate") ||
		!strings.Contains(strings.Join(w, "\n"), "secret default/missing-tls not found") {
		t.Errorf("warnings = %q, want one for broken-tls and one for missing-tls", w)
	}

	// Fixing the secret takes effect at the next Update.
	brokenCrt, brokenKey := genCert(t, "fixed-cert", "broken.example.com")
	o.secrets[3] = tlsSecret("broken-tls", brokenCrt, brokenKey)
	p.Update(o.snapshot())
	if got := servedCert(t, httpsAddr, "broken.example.com").Subject.CommonName; got != "fixed-cert" {
		t.Errorf("after the fix: served %q, want fixed-cert", got)
	}
	if w := warnings(); len(w) != 2 {
		t.Errorf("warnings after the fix = %q, want no new one", w)
	}
}

func TestTLSOldestIngressKeepsHost(t *testing.T) {
	var o objects
	oldCrt, oldKey := genCert(t, "old", "x.example.com")
	newCrt, newKey := genCert(t, "new", "x.example.com")
	o.secrets = append(o.secrets, tlsSecret("old", oldCrt, oldKey), tlsSecret("new", newCrt, newKey))
	older, newer := ingress("b-older", 0), ingress("a-newer", 1)
	older.Spec.TLS = []networkingv1.IngressTLS{{Hosts: []string{"x.example.com"}, SecretName: "old"}}
	newer.Spec.TLS = []networkingv1.IngressTLS{{Hosts: []string{"x.example.com"}, SecretName: "new"}}
	o.ingresses = append(o.ingresses, newer, older)
	p, err := New(Config{HTTPAddr: Off, HTTPSAddr: "127.0.0.1:0", Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	p.Update(o.snapshot())
	c, _ := p.getCertificate(&tls.ClientHelloInfo{ServerName: "x.example.com"})
	if c.Leaf.Subject.CommonName != "old" {
		t.Errorf("served %q, want the older Ingress's certificate", c.Leaf.Subject.CommonName)
	}
}
