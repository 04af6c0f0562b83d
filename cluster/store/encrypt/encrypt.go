// Package encrypt seals the store's Secrets at rest: AES-256-GCM with a
// random 12-byte nonce per value, each value prefixed with the id of the
// key that sealed it, and the key file that holds the keys.
//
// A sealed value is
//
//	k8s:enc:aesgcm:v1:<key id>:<nonce (12 bytes)><ciphertext and tag>
//
// as Kubernetes' EncryptionConfiguration writes its aesgcm provider's
// values, so that a value written under an older key still names the key
// that opens it. The caller passes the value's storage key as additional
// authenticated data: a value moved to another key does not open.
//
// A KeySet is immutable and safe for concurrent use; its first key is the
// write key, the others only open values (a rotation in progress).
package encrypt

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Prefix starts every sealed value; the key id and a ':' follow.
const Prefix = "k8s:enc:aesgcm:v1:"

// KeySize is the size of a key: AES-256.
const KeySize = 32

const nonceSize = 12

// Errors that callers branch on.
var (
	// ErrUnknownKey: the value was sealed with a key the set does not hold.
	ErrUnknownKey = errors.New("sealed with a key that the key file does not hold")
	// ErrDecrypt: the value does not open with the key it names (it was
	// changed, moved to another storage key, or the key is not the one
	// that sealed it).
	ErrDecrypt = errors.New("does not decrypt with its key")
)

// Key is one AES-256 key and its id.
type Key struct {
	ID     string
	Secret []byte // KeySize bytes
}

// NewKey generates a key with a fresh random id: the time and 4 random
// bytes, e.g. "20261206T051800Z-3f9a01bc".
func NewKey() (Key, error) {
	secret := make([]byte, KeySize)
	if _, err := rand.Read(secret); err != nil {
		return Key{}, fmt.Errorf("generate a key: %w", err)
	}
	suffix := make([]byte, 4)
	if _, err := rand.Read(suffix); err != nil {
		return Key{}, fmt.Errorf("generate a key: %w", err)
	}
	return Key{ID: time.Now().UTC().Format("20060102T150405Z") + "-" + hex.EncodeToString(suffix), Secret: secret}, nil
}

// KeySet is the keys that open values; the first seals new ones.
type KeySet struct {
	keys  []Key
	aeads map[string]cipher.AEAD
}

// NewKeySet checks the keys (at least one, KeySize bytes each, ids unique,
// non-empty and without ':' or spaces) and makes a set whose write key is
// the first.
func NewKeySet(keys ...Key) (*KeySet, error) {
	if len(keys) == 0 {
		return nil, errors.New("no keys")
	}
	ks := &KeySet{aeads: map[string]cipher.AEAD{}}
	for i, k := range keys {
		if err := checkID(k.ID); err != nil {
			return nil, fmt.Errorf("key %d: %w", i+1, err)
		}
		if len(k.Secret) != KeySize {
			return nil, fmt.Errorf("key %q: %d bytes, want %d (AES-256)", k.ID, len(k.Secret), KeySize)
		}
		if _, dup := ks.aeads[k.ID]; dup {
			return nil, fmt.Errorf("key %q appears twice", k.ID)
		}
		block, err := aes.NewCipher(k.Secret)
		if err != nil {
			return nil, fmt.Errorf("key %q: %w", k.ID, err)
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, fmt.Errorf("key %q: %w", k.ID, err)
		}
		ks.aeads[k.ID] = aead
		ks.keys = append(ks.keys, Key{ID: k.ID, Secret: bytes.Clone(k.Secret)})
	}
	return ks, nil
}

func checkID(id string) error {
	if id == "" {
		return errors.New("empty key id")
	}
	if len(id) > 64 || strings.ContainsAny(id, ": \t\r\n") {
		return fmt.Errorf("key id %q: at most 64 characters, no ':' nor spaces", id)
	}
	return nil
}

// WriteKeyID is the id of the key that seals new values.
func (ks *KeySet) WriteKeyID() string { return ks.keys[0].ID }

// IDs are the ids of the set's keys, the write key first.
func (ks *KeySet) IDs() []string {
	ids := make([]string, len(ks.keys))
	for i, k := range ks.keys {
		ids[i] = k.ID
	}
	return ids
}

// Has says whether the set holds the key id.
func (ks *KeySet) Has(id string) bool {
	_, ok := ks.aeads[id]
	return ok
}

// Keys are copies of the set's keys, the write key first.
func (ks *KeySet) Keys() []Key {
	out := make([]Key, len(ks.keys))
	for i, k := range ks.keys {
		out[i] = Key{ID: k.ID, Secret: bytes.Clone(k.Secret)}
	}
	return out
}

// Seal encrypts plain under the write key, bound to aad (the storage key).
func (ks *KeySet) Seal(plain, aad []byte) ([]byte, error) {
	id := ks.keys[0].ID
	aead := ks.aeads[id]
	out := make([]byte, 0, len(Prefix)+len(id)+1+nonceSize+len(plain)+aead.Overhead())
	out = append(out, Prefix...)
	out = append(out, id...)
	out = append(out, ':')
	nonce := out[len(out) : len(out)+nonceSize]
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("seal: nonce: %w", err)
	}
	out = out[:len(out)+nonceSize]
	return aead.Seal(out, nonce, plain, aad), nil
}

// Open decrypts a sealed value bound to aad. It never panics, whatever
// the bytes: a value under a key the set lacks is ErrUnknownKey, one that
// does not open ErrDecrypt, both naming the key id.
func (ks *KeySet) Open(sealed, aad []byte) ([]byte, error) {
	id, body, ok := Parse(sealed)
	if !ok {
		return nil, errors.New("not a sealed value (no " + Prefix + "<key id>: prefix)")
	}
	aead := ks.aeads[id]
	if aead == nil {
		return nil, fmt.Errorf("key id %q: %w (it holds %s)", id, ErrUnknownKey, strings.Join(ks.IDs(), ", "))
	}
	if len(body) < nonceSize+aead.Overhead() {
		return nil, fmt.Errorf("key id %q: %d bytes, too short: %w", id, len(body), ErrDecrypt)
	}
	plain, err := aead.Open(nil, body[:nonceSize], body[nonceSize:], aad)
	if err != nil {
		return nil, fmt.Errorf("key id %q: %w", id, ErrDecrypt)
	}
	return plain, nil
}

// IsSealed says whether a stored value is sealed (has the prefix).
func IsSealed(v []byte) bool { return bytes.HasPrefix(v, []byte(Prefix)) }

// Parse splits a sealed value into its key id and the nonce and
// ciphertext; ok is false when v is not sealed or its id is malformed.
func Parse(v []byte) (id string, body []byte, ok bool) {
	if !IsSealed(v) {
		return "", nil, false
	}
	rest := v[len(Prefix):]
	i := bytes.IndexByte(rest, ':')
	if i <= 0 || i > 64 {
		return "", nil, false
	}
	return string(rest[:i]), rest[i+1:], true
}
