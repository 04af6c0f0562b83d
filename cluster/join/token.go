// Package join is how a node joins: the join token — the one string a server
// writes (and `flotilla token create` prints) that carries everything an
// agent needs to start — and the node's certificates that the token buys.
//
// A token holds the server's API URL, a bootstrap token (Kubernetes'
// "ID.SECRET", valid for a while, good for nothing but asking for a node
// certificate), a gossip address to join through, and the cluster CA's
// certificate (and its fingerprint) so the agent verifies the API from its
// first connection without any other configuration. The gossip key is not in it: the agent reads it from the
// API with its node certificate.
//
// A token is "FLO2." + base64url(JSON) + "." + checksum: recognisable at a
// glance, safe to paste in a shell, and a truncated or mistyped copy is told
// apart from a token of another kind. Tokens are secrets: Token's String,
// GoString and LogValue redact the bootstrap token's secret.
package join

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"

	bootstraputil "k8s.io/cluster-bootstrap/token/util"
)

// Prefix starts every token of the version this package writes.
const Prefix = "FLO2."

// GossipKeySize is the length of the gossip cluster key, in bytes.
const GossipKeySize = 32

// maxTokenLen bounds what Parse reads; real tokens are about 400 bytes.
const maxTokenLen = 8 << 10

// Sentinel errors of Parse. Neither ever includes the token's text: it holds
// secrets.
var (
	// ErrForeign: the string is not a Flotilla join token of a version
	// this binary reads.
	ErrForeign = errors.New("not a Flotilla join token")
	// ErrDamaged: it starts like a token but is truncated or mistyped.
	ErrDamaged = errors.New("the join token is truncated or damaged; copy it again in full")
)

// Token is what an agent needs to join a cluster.
type Token struct {
	// Server is the URL of the server's API, "https://192.0.2.10:6443".
	Server string `json:"server"`
	// BootstrapToken is "ID.SECRET": it authenticates the node's first
	// certificate request, and nothing else.
	BootstrapToken string `json:"token"`
	// GossipAddr is host:port of a member to join gossip through.
	GossipAddr string `json:"gossip_addr"`
	// CAFingerprint is the SHA-256 of the API's CA certificate (DER), in
	// lowercase hex.
	CAFingerprint string `json:"ca_sha256"`
	// CA is the cluster CA's certificate (DER): the agent verifies the
	// server with it from the first connection on. Its SHA-256 is
	// CAFingerprint.
	CA []byte `json:"ca"`
}

// CAPEM is the token's CA certificate in PEM.
func (t Token) CAPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: t.CA})
}

// TokenID is the public half of the bootstrap token ("" if it has none).
func (t Token) TokenID() string {
	id, _, _ := strings.Cut(t.BootstrapToken, ".")
	return id
}

// Encode returns the token's text. It does not validate: call Validate
// first for a token built by hand.
func (t Token) Encode() string {
	b, err := json.Marshal(t)
	if err != nil {
		panic("join: encoding a Token: " + err.Error()) // only plain fields
	}
	payload := base64.RawURLEncoding.EncodeToString(b)
	return Prefix + payload + "." + checksum(payload)
}

// checksum is the first 4 bytes of SHA-256 over the payload, in hex: a typo
// or a cut is caught before the JSON is even read.
func checksum(payload string) string {
	sum := sha256.Sum256([]byte(payload))
	return hex.EncodeToString(sum[:4])
}

// Parse reads a token made by Encode. Surrounding white space is ignored
// (tokens get pasted). Errors match ErrForeign or ErrDamaged, or name the
// field that is invalid; they never contain the secret.
func Parse(s string) (Token, error) {
	s = strings.TrimSpace(s)
	if len(s) > maxTokenLen {
		return Token{}, fmt.Errorf("join: %w: it is %d bytes long, a token is under %d", ErrForeign, len(s), maxTokenLen)
	}
	if !strings.HasPrefix(s, Prefix) {
		if v, ok := otherVersion(s); ok {
			return Token{}, fmt.Errorf("join: %w: it is version %s, this flotilla reads %s tokens; use a flotilla of the server's version",
				ErrForeign, v, strings.TrimSuffix(Prefix, "."))
		}
		return Token{}, fmt.Errorf("join: %w: it should start with %q (print one with `flotilla server`, or read it from the server's data directory)", ErrForeign, Prefix)
	}
	rest := s[len(Prefix):]
	dot := strings.LastIndexByte(rest, '.')
	if dot < 0 {
		return Token{}, fmt.Errorf("join: %w (no checksum at its end)", ErrDamaged)
	}
	payload, sum := rest[:dot], rest[dot+1:]
	if sum != checksum(payload) {
		return Token{}, fmt.Errorf("join: %w (checksum mismatch)", ErrDamaged)
	}
	b, err := base64.RawURLEncoding.DecodeString(payload)
	if err != nil {
		return Token{}, fmt.Errorf("join: %w (bad base64)", ErrDamaged)
	}
	var t Token
	if err := json.Unmarshal(b, &t); err != nil {
		// The checksum matched, so this was written wrong, not copied wrong.
		return Token{}, fmt.Errorf("join: %w (its content is not a token)", ErrDamaged)
	}
	if err := t.Validate(); err != nil {
		return Token{}, err
	}
	return t, nil
}

// otherVersion recognises "FLOn." for another n.
func otherVersion(s string) (string, bool) {
	head, _, ok := strings.Cut(s, ".")
	if !ok || !strings.HasPrefix(head, "FLO") || len(head) > 8 {
		return "", false
	}
	if _, err := strconv.Atoi(head[3:]); err != nil {
		return "", false
	}
	return head, true
}

// Validate checks every field. Its errors name the field, never its secret
// value.
func (t Token) Validate() error {
	u, err := url.Parse(t.Server)
	if t.Server == "" || err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return errors.New("join: the token's server is not an http(s) URL")
	}
	if u.User != nil {
		return errors.New("join: the token's server URL must not hold credentials")
	}
	if !bootstraputil.IsValidBootstrapToken(t.BootstrapToken) {
		return errors.New("join: the token's bootstrap token is not of the form ID.SECRET (6 and 16 characters of a-z, 0-9)")
	}
	host, port, err := net.SplitHostPort(t.GossipAddr)
	if err != nil || host == "" {
		return fmt.Errorf("join: the token's gossip address %q is not host:port", t.GossipAddr)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("join: the token's gossip address %q has no valid port", t.GossipAddr)
	}
	if b, err := hex.DecodeString(t.CAFingerprint); err != nil || len(b) != sha256.Size || t.CAFingerprint != strings.ToLower(t.CAFingerprint) {
		return errors.New("join: the token's CA fingerprint is not a lowercase hex SHA-256")
	}
	if _, err := x509.ParseCertificate(t.CA); err != nil {
		return errors.New("join: the token's CA certificate cannot be read")
	}
	if FingerprintDER(t.CA) != t.CAFingerprint {
		return errors.New("join: the token's CA certificate does not match its fingerprint")
	}
	return nil
}

// String shows the token without its secrets, for logs and errors.
func (t Token) String() string {
	return fmt.Sprintf("join.Token{Server: %s, GossipAddr: %s, CA: sha256:%s, BootstrapToken: %s.[redacted]}", t.Server, t.GossipAddr, t.CAFingerprint, t.TokenID())
}

// GoString keeps %#v from printing the secret.
func (t Token) GoString() string { return t.String() }

// LogValue keeps slog from printing the secret.
func (t Token) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("server", t.Server),
		slog.String("gossip_addr", t.GossipAddr),
		slog.String("ca_sha256", t.CAFingerprint),
		slog.String("token_id", t.TokenID()),
	)
}

// Interface guards.
var (
	_ fmt.Stringer   = Token{}
	_ fmt.GoStringer = Token{}
	_ slog.LogValuer = Token{}
)

// NewGossipKey returns a new random 32-byte gossip cluster key.
func NewGossipKey() ([]byte, error) {
	k := make([]byte, GossipKeySize)
	if _, err := rand.Read(k); err != nil {
		return nil, fmt.Errorf("join: making a gossip key: %w", err)
	}
	return k, nil
}

// WithServerHost is the token pointed at another address of the same
// server (an agent's --join): host replaces the host of Server and of
// GossipAddr, their ports staying.
func (t Token) WithServerHost(host string) (Token, error) {
	u, err := url.Parse(t.Server)
	if err != nil {
		return t, fmt.Errorf("the join token's server %q: %w", t.Server, err)
	}
	if _, port, err := net.SplitHostPort(u.Host); err == nil {
		u.Host = net.JoinHostPort(host, port)
	} else if strings.Contains(host, ":") {
		u.Host = "[" + host + "]" // an IPv6 address
	} else {
		u.Host = host
	}
	t.Server = u.String()
	if _, port, err := net.SplitHostPort(t.GossipAddr); err == nil {
		t.GossipAddr = net.JoinHostPort(host, port)
	}
	return t, nil
}
