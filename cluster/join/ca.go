package join

import (
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
)

// Fingerprint returns the token's form of a CA fingerprint: the SHA-256 of
// the first certificate in caPEM (DER), in lowercase hex.
func Fingerprint(caPEM []byte) (string, error) {
	cert, err := firstCert(caPEM)
	if err != nil {
		return "", err
	}
	return FingerprintDER(cert.Raw), nil
}

// FingerprintDER is Fingerprint for a certificate already in DER.
func FingerprintDER(der []byte) string {
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:])
}

// VerifyCA checks that caPEM (the CA certificate the server presents, or that
// the agent fetched) is the one the token names. fingerprint may be written
// in upper case and with colons ("AB:CD:…"). An empty fingerprint is an
// error: the token says TLS is off, so there is no CA to trust.
func VerifyCA(caPEM []byte, fingerprint string) error {
	want := strings.ToLower(strings.ReplaceAll(strings.TrimSpace(fingerprint), ":", ""))
	if want == "" {
		return errors.New("join: the token carries no CA fingerprint (the server runs without TLS), so no CA can be verified")
	}
	if b, err := hex.DecodeString(want); err != nil || len(b) != sha256.Size {
		return errors.New("join: the CA fingerprint is not a hex SHA-256")
	}
	cert, err := firstCert(caPEM)
	if err != nil {
		return err
	}
	got := FingerprintDER(cert.Raw)
	if subtle.ConstantTimeCompare([]byte(got), []byte(want)) != 1 {
		return fmt.Errorf("join: the server's CA certificate (sha256 %s, %q) is not the one in the token (sha256 %s): wrong server, or someone in between",
			got, cert.Subject.CommonName, want)
	}
	return nil
}

func firstCert(caPEM []byte) (*x509.Certificate, error) {
	rest := caPEM
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return nil, errors.New("join: no PEM CERTIFICATE block in the CA data")
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("join: parsing the CA certificate: %w", err)
		}
		return cert, nil
	}
}
