package join

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
	"log/slog"
	"math/big"
	"strings"
	"testing"
	"time"
)

func testToken(t testing.TB) Token {
	t.Helper()
	ca := testCA(t)
	return Token{
		Server:         "https://192.0.2.10:6443",
		BootstrapToken: "abcdef.s3cr3t0123456789",
		GossipAddr:     "192.0.2.10:7946",
		CAFingerprint:  FingerprintDER(ca),
		CA:             ca,
	}
}

// testCA is a self-signed CA certificate, in DER.
func testCA(t testing.TB) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test-ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}
func TestEncodeParseRoundTrip(t *testing.T) {
	tok := testToken(t)
	s := tok.Encode()
	if !strings.HasPrefix(s, Prefix) {
		t.Fatalf("token %q does not start with %q", s, Prefix)
	}
	if strings.ContainsAny(s, " +/=\n") {
		t.Errorf("token %q is not shell- and URL-safe", s)
	}
	got, err := Parse("  " + s + "\n")
	if err != nil {
		t.Fatal(err)
	}
	if got.String() != tok.String() || !bytes.Equal(got.CA, tok.CA) || got.BootstrapToken != tok.BootstrapToken {
		t.Errorf("round trip = %v, want %v", got, tok)
	}
	if got.TokenID() != "abcdef" {
		t.Errorf("TokenID = %q", got.TokenID())
	}
	t.Logf("token: %d bytes", len(s))
}

func TestParseTellsTruncatedFromForeign(t *testing.T) {
	s := testToken(t).Encode()
	for _, tc := range []struct {
		name, in string
		want     error
		text     string
	}{
		{"empty", "", ErrForeign, `should start with "FLO2."`},
		{"kubeadm token", "abcdef.0123456789abcdef", ErrForeign, `should start with "FLO2."`},
		{"k3s token", "K10abc::server:def", ErrForeign, "not a Flotilla join token"},
		{"newer version", "FLO3." + s[len(Prefix):], ErrForeign, "version FLO3"},
		{"older version", "FLO1." + s[len(Prefix):], ErrForeign, "version FLO1"},
		{"truncated in the payload", s[:len(s)/2], ErrDamaged, "truncated"},
		{"truncated checksum", s[:len(s)-3], ErrDamaged, "checksum"},
		{"prefix only", Prefix, ErrDamaged, "truncated"},
		{"typo", s[:20] + flip(s[20]) + s[21:], ErrDamaged, "checksum"},
		{"huge", Prefix + strings.Repeat("A", maxTokenLen), ErrForeign, "bytes long"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(tc.in)
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.text) {
				t.Fatalf("Parse = %v, want %v containing %q", err, tc.want, tc.text)
			}
			if strings.Contains(err.Error(), "s3cr3t") {
				t.Errorf("error leaks the bootstrap token: %v", err)
			}
		})
	}
}

func flip(c byte) string {
	if c == 'A' {
		return "B"
	}
	return "A"
}

// encodeRaw makes a well-formed token around any JSON, bypassing Validate.
func encodeRaw(json string) string {
	var buf bytes.Buffer
	buf.WriteString(json)
	p := b64(buf.Bytes())
	return Prefix + p + "." + checksum(p)
}

func TestParseValidatesFields(t *testing.T) {
	tok := testToken(t)
	for _, tc := range []struct {
		edit func(*Token)
		want string
	}{
		{func(t *Token) { t.Server = "" }, "server is not an http(s) URL"},
		{func(t *Token) { t.Server = "192.0.2.10:6443" }, "server is not an http(s) URL"},
		{func(t *Token) { t.Server = "https://admin:pw@192.0.2.10" }, "must not hold credentials"},
		{func(t *Token) { t.BootstrapToken = "" }, "not of the form ID.SECRET"},
		{func(t *Token) { t.BootstrapToken = "abcdef.S3CR3T0123456789" }, "not of the form ID.SECRET"},
		{func(t *Token) { t.GossipAddr = "192.0.2.10" }, "not host:port"},
		{func(t *Token) { t.GossipAddr = "192.0.2.10:0" }, "no valid port"},
		{func(t *Token) { t.CAFingerprint = "abcd" }, "CA fingerprint"},
		{func(t *Token) { t.CAFingerprint = "" }, "CA fingerprint"},
		{func(t *Token) { t.CAFingerprint = strings.Repeat("ab", 32) }, "does not match its fingerprint"},
		{func(t *Token) { t.CA = []byte("not a certificate") }, "CA certificate cannot be read"},
		{func(t *Token) { t.CAFingerprint = strings.Repeat("AB", 32) }, "lowercase"},
	} {
		bad := tok
		tc.edit(&bad)
		_, err := Parse(bad.Encode())
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Parse(token with %s) = %v", tc.want, err)
		}
		if err != nil && strings.Contains(err.Error(), "s3cr3t") {
			t.Errorf("error leaks the bootstrap token: %v", err)
		}
	}
	if _, err := Parse(encodeRaw(`[1,2]`)); !errors.Is(err, ErrDamaged) {
		t.Errorf("well-formed token around non-token JSON: %v, want ErrDamaged", err)
	}
}

func TestTokenNeverPrintsSecrets(t *testing.T) {
	tok := testToken(t)
	var logBuf bytes.Buffer
	slog.New(slog.NewTextHandler(&logBuf, nil)).Info("joining", "token", tok)
	for _, s := range []string{fmt.Sprint(tok), fmt.Sprintf("%v", tok), fmt.Sprintf("%+v", tok), fmt.Sprintf("%#v", tok), logBuf.String()} {
		if strings.Contains(s, "s3cr3t") {
			t.Errorf("printed token shows a secret: %s", s)
		}
		if !strings.Contains(s, tok.Server) {
			t.Errorf("printed token lacks the server: %s", s)
		}
	}
}

func TestNewGossipKey(t *testing.T) {
	a, err := NewGossipKey()
	if err != nil || len(a) != GossipKeySize {
		t.Fatalf("NewGossipKey = %d bytes, %v", len(a), err)
	}
	b, _ := NewGossipKey()
	if bytes.Equal(a, b) {
		t.Fatal("two keys are equal")
	}
}

// selfSignedCA returns a fresh CA certificate in PEM.
func selfSignedCA(t *testing.T, cn string) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func TestVerifyCA(t *testing.T) {
	ca := selfSignedCA(t, "flotilla-ca")
	other := selfSignedCA(t, "mallory-ca")
	fp, err := Fingerprint(ca)
	if err != nil {
		t.Fatal(err)
	}
	if err := VerifyCA(ca, fp); err != nil {
		t.Errorf("VerifyCA(right CA): %v", err)
	}
	colons := strings.ToUpper(fp[0:2])
	for i := 2; i < len(fp); i += 2 {
		colons += ":" + strings.ToUpper(fp[i:i+2])
	}
	if err := VerifyCA(ca, colons); err != nil {
		t.Errorf("VerifyCA(upper case with colons): %v", err)
	}
	// A key block before the certificate is skipped.
	withKey := append(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: []byte{1}}), ca...)
	if err := VerifyCA(withKey, fp); err != nil {
		t.Errorf("VerifyCA(key then cert): %v", err)
	}
	err = VerifyCA(other, fp)
	if err == nil || !strings.Contains(err.Error(), "is not the one in the token") || !strings.Contains(err.Error(), "mallory-ca") {
		t.Errorf("VerifyCA(other CA) = %v", err)
	}
	for _, tc := range []struct {
		pem  []byte
		fp   string
		want string
	}{
		{ca, "", "no CA fingerprint"},
		{ca, "xyz", "not a hex SHA-256"},
		{[]byte("garbage"), fp, "no PEM CERTIFICATE"},
		{pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1, 2}}), fp, "parsing the CA certificate"},
	} {
		if err := VerifyCA(tc.pem, tc.fp); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("VerifyCA(%q) = %v, want %q", tc.want, err, tc.want)
		}
	}
}

// TestWithServerHost: --join points the token at another address of the
// same server; the ports stay, the rest of the token too.
func TestWithServerHost(t *testing.T) {
	tok := testToken(t)
	got, err := tok.WithServerHost("198.51.100.7")
	if err != nil {
		t.Fatal(err)
	}
	if got.Server != "https://198.51.100.7:6443" || got.GossipAddr != "198.51.100.7:7946" {
		t.Errorf("retargeted to %s, gossip %s; want https://198.51.100.7:6443 and 198.51.100.7:7946", got.Server, got.GossipAddr)
	}
	if got.BootstrapToken != tok.BootstrapToken || got.CAFingerprint != tok.CAFingerprint {
		t.Error("retargeting changed the token's secret or CA")
	}
	tok.Server = "https://server.example"
	if got, err := tok.WithServerHost("2001:db8::7"); err != nil || got.Server != "https://[2001:db8::7]" {
		t.Errorf("no port, IPv6: %q, %v; want https://[2001:db8::7]", got.Server, err)
	}
}
