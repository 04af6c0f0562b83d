package encrypt

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func newSet(t *testing.T, n int) *KeySet {
	t.Helper()
	var keys []Key
	for range n {
		k, err := NewKey()
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, k)
	}
	ks, err := NewKeySet(keys...)
	if err != nil {
		t.Fatal(err)
	}
	return ks
}

func TestSealOpen(t *testing.T) {
	old := newSet(t, 1)
	aad := []byte("/registry/secrets/web/db")
	v, err := old.Seal([]byte("hunter2"), aad)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(v, []byte(Prefix+old.WriteKeyID()+":")) || bytes.Contains(v, []byte("hunter2")) {
		t.Fatalf("sealed value %q", v)
	}
	if again, _ := old.Seal([]byte("hunter2"), aad); bytes.Equal(again, v) {
		t.Fatal("two seals of one value are equal: the nonce is not random")
	}
	// A set whose write key is new still opens values under the old one.
	rotated, err := NewKeySet(append(newSet(t, 1).Keys(), old.Keys()...)...)
	if err != nil {
		t.Fatal(err)
	}
	if plain, err := rotated.Open(v, aad); err != nil || string(plain) != "hunter2" {
		t.Fatalf("open under the old key: %q, %v", plain, err)
	}
	// Moved to another key, changed, or under a key the set lacks: errors.
	if _, err := old.Open(v, []byte("/registry/secrets/web/other")); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("open under another storage key: %v", err)
	}
	bad := bytes.Clone(v)
	bad[len(bad)-1] ^= 1
	if _, err := old.Open(bad, aad); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("open a changed value: %v", err)
	}
	if _, err := newSet(t, 1).Open(v, aad); !errors.Is(err, ErrUnknownKey) || !strings.Contains(err.Error(), old.WriteKeyID()) {
		t.Fatalf("open under an unknown key: %v", err)
	}
	for _, junk := range []string{"", Prefix, Prefix + ":", Prefix + old.WriteKeyID() + ":", "{\"kind\":\"Secret\"}"} {
		if _, err := old.Open([]byte(junk), aad); err == nil {
			t.Fatalf("open %q: no error", junk)
		}
	}
}

func TestNewKeySetRefusesBadKeys(t *testing.T) {
	good := newSet(t, 1).Keys()[0]
	for name, keys := range map[string][]Key{
		"none":      nil,
		"short":     {{ID: "a", Secret: []byte("short")}},
		"colon":     {{ID: "a:b", Secret: good.Secret}},
		"empty id":  {{Secret: good.Secret}},
		"duplicate": {good, good},
	} {
		if _, err := NewKeySet(keys...); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestKeyFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "data", "secrets-key.json")
	ks, created, err := LoadOrCreate(path)
	if err != nil || !created {
		t.Fatalf("create: %v, %v", created, err)
	}
	info, err := os.Stat(path)
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, %v; want 0600", info.Mode(), err)
	}
	again, created, err := LoadOrCreate(path)
	if err != nil || created || again.WriteKeyID() != ks.WriteKeyID() {
		t.Fatalf("load: %v, created %v, %v", again.IDs(), created, err)
	}
	two := newSet(t, 2)
	if err := SaveFile(path, two); err != nil {
		t.Fatal(err)
	}
	if got, err := LoadFile(path); err != nil || strings.Join(got.IDs(), ",") != strings.Join(two.IDs(), ",") {
		t.Fatalf("save and load: %v, %v", got.IDs(), err)
	}
	for _, bad := range []string{"", "{", `{"kind":"Other","keys":[]}`, `{"kind":"SecretsEncryptionKeys","keys":[]}`,
		`{"kind":"SecretsEncryptionKeys","keys":[{"id":"a","secret":"!!"}]}`} {
		if err := os.WriteFile(path, []byte(bad), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, _, err := LoadOrCreate(path); err == nil || !strings.Contains(err.Error(), "corrupt") {
			t.Fatalf("load %q: %v", bad, err)
		}
		if data, _ := os.ReadFile(path); string(data) != bad {
			t.Fatalf("a corrupt key file %q was replaced", bad)
		}
	}
}

// BenchmarkOpen is the cost of decrypting one 1 KiB value (a Secret's
// JSON), what each read of a Secret adds.
func BenchmarkOpen(b *testing.B) {
	k, _ := NewKey()
	ks, _ := NewKeySet(k)
	aad := []byte("/registry/secrets/web/tls")
	v, err := ks.Seal(bytes.Repeat([]byte("k"), 1024), aad)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(1024)
	for b.Loop() {
		if _, err := ks.Open(v, aad); err != nil {
			b.Fatal(err)
		}
	}
}
