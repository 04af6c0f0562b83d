package ingress

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"

	"github.com/flotilla-dev/flotilla/netfabric/svcview"
)

// DefaultCertName is the common name of the self-signed certificate served
// when no Ingress's TLS entry covers the client's SNI.
const DefaultCertName = "Flotilla Ingress Controller Fake Certificate"

// certTable chooses a certificate by SNI. Immutable once built.
type certTable struct {
	exact    map[string]*tls.Certificate // by lower-case host name
	wildcard map[string]*tls.Certificate // "*.foo.com" by "foo.com"
	count    int                         // distinct certificates, for the log
}

// get returns the certificate for sni (exact host first, then wildcard),
// or nil for the default certificate.
func (c *certTable) get(sni string) *tls.Certificate {
	if sni == "" {
		return nil
	}
	sni = strings.TrimSuffix(strings.ToLower(sni), ".")
	if cert := c.exact[sni]; cert != nil {
		return cert
	}
	if i := strings.IndexByte(sni, '.'); i > 0 {
		return c.wildcard[sni[i+1:]]
	}
	return nil
}

func (c *certTable) add(host string, cert *tls.Certificate) {
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	m, key := c.exact, host
	if strings.HasPrefix(host, "*.") {
		m, key = c.wildcard, host[2:]
	}
	if _, taken := m[key]; !taken && key != "" { // the older Ingress keeps it
		m[key] = cert
	}
}

// certEntry is a parsed Secret, kept while the Secret's data is unchanged
// so that an Update does not parse every key again.
type certEntry struct {
	sum  [sha256.Size]byte
	cert *tls.Certificate
	err  error
}

// buildCerts resolves the TLS entries of ings (oldest first) to
// certificates. A Secret that is missing or bad is a problem and its hosts
// get the default certificate. It updates p.certCache; the caller holds
// p.mu.
func (p *Proxy) buildCerts(snap *svcview.Snapshot, ings []*networkingv1.Ingress, now time.Time) (*certTable, []problem) {
	ct := &certTable{exact: map[string]*tls.Certificate{}, wildcard: map[string]*tls.Certificate{}}
	cache := map[nsName]certEntry{}
	counted := map[*tls.Certificate]bool{}
	var probs []problem
	for _, ing := range ings {
		ns := namespaceOf(ing)
		for i, entry := range ing.Spec.TLS {
			if entry.SecretName == "" {
				if len(entry.Hosts) > 0 {
					probs = append(probs, problem{ingressName(ing), fmt.Sprintf("spec.tls[%d] names no secret: hosts %s get the default certificate", i, strings.Join(entry.Hosts, ", "))})
				}
				continue
			}
			key := nsName{ns, entry.SecretName}
			ce, seen := cache[key]
			if !seen {
				ce = p.parseSecret(snap.Secret(ns, entry.SecretName), key)
				cache[key] = ce
			}
			if ce.err != nil {
				probs = append(probs, problem{ingressName(ing), fmt.Sprintf("spec.tls[%d]: %v: its hosts get the default certificate", i, ce.err)})
				continue
			}
			if leaf := ce.cert.Leaf; leaf != nil && now.After(leaf.NotAfter) {
				probs = append(probs, problem{ingressName(ing), fmt.Sprintf("spec.tls[%d]: the certificate of secret %s/%s expired on %s (served anyway)", i, ns, entry.SecretName, leaf.NotAfter.UTC().Format(time.DateOnly))})
			}
			if !counted[ce.cert] {
				counted[ce.cert] = true
				ct.count++
			}
			hosts := entry.Hosts
			if len(hosts) == 0 && ce.cert.Leaf != nil {
				hosts = ce.cert.Leaf.DNSNames // no hosts: the names the certificate is for
			}
			for _, h := range hosts {
				ct.add(h, ce.cert)
			}
		}
	}
	p.certCache = cache
	return ct, probs
}

// parseSecret returns the certificate of a kubernetes.io/tls Secret,
// reusing the cached one when its data has not changed.
func (p *Proxy) parseSecret(sec *corev1.Secret, key nsName) certEntry {
	if sec == nil {
		return certEntry{err: fmt.Errorf("secret %s/%s not found", key.Namespace, key.Name)}
	}
	crt, key1 := secretData(sec, corev1.TLSCertKey), secretData(sec, corev1.TLSPrivateKeyKey)
	if len(crt) == 0 || len(key1) == 0 {
		return certEntry{err: fmt.Errorf("secret %s/%s has no %s and %s (want a secret of type %s)", key.Namespace, key.Name, corev1.TLSCertKey, corev1.TLSPrivateKeyKey, corev1.SecretTypeTLS)}
	}
	h := sha256.New()
	h.Write(crt)
	h.Write([]byte{0})
	h.Write(key1)
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	if old, ok := p.certCache[key]; ok && old.sum == sum {
		return old
	}
	cert, err := tls.X509KeyPair(crt, key1)
	if err != nil {
		return certEntry{sum: sum, err: fmt.Errorf("secret %s/%s: bad certificate or key: %w", key.Namespace, key.Name, err)}
	}
	if cert.Leaf == nil && len(cert.Certificate) > 0 {
		cert.Leaf, _ = x509.ParseCertificate(cert.Certificate[0])
	}
	return certEntry{sum: sum, cert: &cert}
}

// secretData reads a key of data, or of stringData (which a manifest from
// Git may use).
func secretData(sec *corev1.Secret, k string) []byte {
	if v := sec.Data[k]; len(v) > 0 {
		return v
	}
	if v := sec.StringData[k]; v != "" {
		return []byte(v)
	}
	return nil
}

// selfSignedCert makes the default certificate: a fresh P-256 key, valid
// for a year from now, for "ingress.local" (like ingress-nginx's fake
// certificate). Clients that do not trust it see it is not theirs.
func selfSignedCert(now time.Time) (*tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: DefaultCertName, Organization: []string{"Flotilla"}},
		DNSNames:              []string{"ingress.local"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}
