package apiserver

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/flotilla-dev/flotilla/internal/atomicfile"
)

// Files EnsureCerts keeps in its directory.
const (
	CAFile         = "ca.crt"
	CAKeyFile      = "ca.key"
	ServerCertFile = "server.crt"
	ServerKeyFile  = "server.key"
)

const (
	caValidity     = 10 * 365 * 24 * time.Hour
	serverValidity = 2 * 365 * 24 * time.Hour
	renewBefore    = 30 * 24 * time.Hour
)

// EnsureCerts makes sure dir holds a self-signed CA (ECDSA P-256) and a
// server certificate it signed for hosts (DNS names or IP addresses;
// "localhost" and 127.0.0.1 are always added). Existing files are reused
// on restart; the server certificate is reissued from the same CA when it
// does not cover every host or is about to expire, so clients holding the CA
// keep working. It returns the CA certificate in PEM (for kubeconfigs) and
// the paths of the server certificate and key (for Config).
func EnsureCerts(dir string, hosts []string) (caPEM []byte, certFile, keyFile string, err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, "", "", fmt.Errorf("certs: %w", err)
	}
	hosts = append([]string{"localhost", "127.0.0.1"}, hosts...)
	slices.Sort(hosts)
	hosts = slices.Compact(hosts)

	caCert, caKey, caPEM, err := loadCA(dir)
	if err != nil {
		return nil, "", "", err
	}
	certFile, keyFile = filepath.Join(dir, ServerCertFile), filepath.Join(dir, ServerKeyFile)
	cert, _, _, err := loadPair(certFile, keyFile)
	if err == nil && cert.CheckSignatureFrom(caCert) == nil && covers(cert, hosts) &&
		time.Until(cert.NotAfter) > renewBefore {
		return caPEM, certFile, keyFile, nil
	}
	if err := newServerCert(dir, caCert, caKey, hosts); err != nil {
		return nil, "", "", err
	}
	return caPEM, certFile, keyFile, nil
}

// ErrCA is the error of a cluster CA that exists but cannot be used. The
// CA is never replaced silently: every agent and kubeconfig trusts it, and
// a new one would lock them all out.
var ErrCA = errors.New("the cluster CA cannot be used")

// loadCA reads the cluster CA of dir, or makes one when neither of its files
// exists (a new cluster). A CA that is unreadable, half there, damaged or
// expired is an error that says what to do, never a new CA.
func loadCA(dir string) (*x509.Certificate, *ecdsa.PrivateKey, []byte, error) {
	certPath, keyPath := filepath.Join(dir, CAFile), filepath.Join(dir, CAKeyFile)
	_, certErr := os.Stat(certPath)
	_, keyErr := os.Stat(keyPath)
	if errors.Is(certErr, fs.ErrNotExist) && errors.Is(keyErr, fs.ErrNotExist) {
		return newCA(dir)
	}
	cert, key, certPEM, err := loadPair(certPath, keyPath)
	if err == nil && time.Now().After(cert.NotAfter) {
		err = fmt.Errorf("it expired on %s", cert.NotAfter.Format(time.DateOnly))
	}
	if err != nil {
		return nil, nil, nil, fmt.Errorf("%w: %s and %s: %w; restore both files from a backup, "+
			"or remove both to create a new cluster CA (every agent must then join again with a new token)",
			ErrCA, certPath, keyPath, err)
	}
	return cert, key, certPEM, nil
}

func covers(cert *x509.Certificate, hosts []string) bool {
	for _, h := range hosts {
		if cert.VerifyHostname(h) != nil {
			return false
		}
	}
	return true
}

func loadPair(certPath, keyPath string) (*x509.Certificate, *ecdsa.PrivateKey, []byte, error) {
	certPEM, err := os.ReadFile(certPath)
	if err != nil {
		return nil, nil, nil, err
	}
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, nil, nil, err
	}
	cb, _ := pem.Decode(certPEM)
	kb, _ := pem.Decode(keyPEM)
	if cb == nil || kb == nil {
		return nil, nil, nil, errors.New("certs: bad PEM")
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, nil, nil, err
	}
	key, err := x509.ParseECPrivateKey(kb.Bytes)
	if err != nil {
		return nil, nil, nil, err
	}
	pub, ok := cert.PublicKey.(*ecdsa.PublicKey)
	if !ok || !pub.Equal(&key.PublicKey) {
		return nil, nil, nil, errors.New("certs: key does not match certificate")
	}
	return cert, key, certPEM, nil
}

func serial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
}

func newCA(dir string) (*x509.Certificate, *ecdsa.PrivateKey, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("certs: %w", err)
	}
	sn, err := serial()
	if err != nil {
		return nil, nil, nil, fmt.Errorf("certs: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          sn,
		Subject:               pkix.Name{CommonName: fmt.Sprintf("flotilla-ca@%d", now.Unix())},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(caValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("certs: create CA: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("certs: %w", err)
	}
	certPEM, err := writePair(dir, CAFile, CAKeyFile, der, key)
	if err != nil {
		return nil, nil, nil, err
	}
	return cert, key, certPEM, nil
}

func newServerCert(dir string, ca *x509.Certificate, caKey *ecdsa.PrivateKey, hosts []string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("certs: %w", err)
	}
	sn, err := serial()
	if err != nil {
		return fmt.Errorf("certs: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: sn,
		Subject:      pkix.Name{CommonName: "flotilla-apiserver"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(serverValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if h != "" {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return fmt.Errorf("certs: create server certificate: %w", err)
	}
	_, err = writePair(dir, ServerCertFile, ServerKeyFile, der, key)
	return err
}

// writePair writes a certificate (0644) and its key (0600) atomically and
// returns the certificate's PEM.
func writePair(dir, certName, keyName string, der []byte, key *ecdsa.PrivateKey) ([]byte, error) {
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("certs: %w", err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
	if err := writeAtomic(filepath.Join(dir, keyName), keyPEM, 0o600); err != nil {
		return nil, err
	}
	if err := writeAtomic(filepath.Join(dir, certName), certPEM, 0o644); err != nil {
		return nil, err
	}
	return bytes.Clone(certPEM), nil
}

func writeAtomic(path string, data []byte, mode os.FileMode) error {
	if err := atomicfile.WriteFile(path, data, mode); err != nil {
		return fmt.Errorf("certs: %w", err)
	}
	return nil
}

// DefaultClientCertTTL is how long a user's client certificate is valid
// when no TTL is asked for (a year, as kubeadm's admin.conf).
const DefaultClientCertTTL = 365 * 24 * time.Hour

// IssueClientCert signs a client certificate for user (the common name)
// in groups (the organizations) with the cluster CA of dir, valid for ttl
// (never past the CA's own end). It returns the certificate and its new
// key in PEM, for a kubeconfig. The CA must exist (EnsureCerts).
func IssueClientCert(dir, user string, groups []string, ttl time.Duration) (certPEM, keyPEM []byte, err error) {
	if user == "" {
		return nil, nil, errors.New("certs: a client certificate needs a user name")
	}
	signer, err := LoadSigner(dir)
	if err != nil {
		return nil, nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("certs: %w", err)
	}
	certPEM, err = signer.Sign(Request{Subject: pkix.Name{CommonName: user, Organization: groups}, PublicKey: &key.PublicKey, TTL: ttl})
	if err != nil {
		return nil, nil, err
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("certs: %w", err)
	}
	return certPEM, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), nil
}

// Signer signs certificates with the cluster CA.
type Signer struct {
	ca    *x509.Certificate
	key   *ecdsa.PrivateKey
	caPEM []byte
}

// LoadSigner reads the cluster CA of dir (made by EnsureCerts).
func LoadSigner(dir string) (*Signer, error) {
	if _, err := os.Stat(filepath.Join(dir, CAKeyFile)); err != nil {
		return nil, fmt.Errorf("%w: %w (is this the server's data directory? the CA is made by `flotilla up` or `flotilla server`)", ErrCA, err)
	}
	ca, key, caPEM, err := loadCA(dir)
	if err != nil {
		return nil, err
	}
	return &Signer{ca: ca, key: key, caPEM: caPEM}, nil
}

// CAPEM is the CA's certificate.
func (s *Signer) CAPEM() []byte { return s.caPEM }

// Request is what a certificate is signed for.
type Request struct {
	Subject   pkix.Name
	PublicKey any
	// Serving makes a TLS server certificate for DNSNames and IPs; else a
	// client certificate.
	Serving  bool
	DNSNames []string
	IPs      []net.IP
	// TTL is how long it is valid from now (never past the CA's end).
	TTL time.Duration
}

// Sign issues the certificate of req, in PEM.
func (s *Signer) Sign(req Request) ([]byte, error) {
	if req.TTL <= 0 {
		return nil, fmt.Errorf("certs: ttl %s: want a positive duration", req.TTL)
	}
	sn, err := serial()
	if err != nil {
		return nil, fmt.Errorf("certs: %w", err)
	}
	now := time.Now()
	notAfter := now.Add(req.TTL)
	if notAfter.After(s.ca.NotAfter) {
		notAfter = s.ca.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: sn,
		Subject:      req.Subject,
		// Backdated for clocks a little behind, by a tenth of the life at
		// most: a short-lived certificate's renewal time (a share of its
		// life) stays after its issue.
		NotBefore:   now.Add(-min(5*time.Minute, req.TTL/10)),
		NotAfter:    notAfter,
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if req.Serving {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.DNSNames, tmpl.IPAddresses = req.DNSNames, req.IPs
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, s.ca, req.PublicKey, s.key)
	if err != nil {
		return nil, fmt.Errorf("certs: create certificate: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}
