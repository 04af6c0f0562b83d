package testkit

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"testing"
	"time"
)

// PKI is a CA made for one test and one certificate it signed for
// 127.0.0.1, good for serving and for client authentication: every server
// of a test uses it both ways, as Flotilla's servers do with their peers.
type PKI struct {
	Pool *x509.CertPool
	Cert tls.Certificate
}

// NewPKI makes a PKI valid for an hour around now.
func NewPKI(tb testing.TB) PKI {
	tb.Helper()
	now := time.Now()
	newKey := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			tb.Fatal(err)
		}
		return k
	}
	sign := func(tmpl, parent *x509.Certificate, pub *ecdsa.PublicKey, by *ecdsa.PrivateKey) []byte {
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, by)
		if err != nil {
			tb.Fatal(err)
		}
		return der
	}
	caKey, key := newKey(), newKey()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	ca, err := x509.ParseCertificate(sign(caTmpl, caTmpl, &caKey.PublicKey, caKey))
	if err != nil {
		tb.Fatal(err)
	}
	der := sign(&x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "test server"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
	}, ca, &key.PublicKey, caKey)
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return PKI{Pool: pool, Cert: tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}}
}

// Server is the serving side: the certificate, client certificates of the
// CA required.
func (p PKI) Server() *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{p.Cert}, ClientCAs: p.Pool, ClientAuth: tls.RequireAndVerifyClientCert}
}

// Client presents the certificate and trusts the CA only.
func (p PKI) Client() *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{p.Cert}, RootCAs: p.Pool}
}
