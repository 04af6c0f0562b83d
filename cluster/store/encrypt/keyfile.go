package encrypt

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/flotilla-dev/flotilla/internal/atomicfile"
)

// The key file is JSON, mode 0600:
//
//	{"kind": "SecretsEncryptionKeys", "keys": [
//	  {"id": "20261206T051800Z-3f9a01bc", "secret": "<32 bytes, base64>"},
//	  {"id": "20261101T090000Z-77aa0c1d", "secret": "…"}]}
//
// The first key seals new values; the others only open values sealed
// before a rotation finished. It lives outside the store's directory, so
// that a copy of the store (a backup, a disk) without it reads no Secret.

// FileKind is the "kind" of a key file.
const FileKind = "SecretsEncryptionKeys"

// maxFileBytes bounds what is read of a key file.
const maxFileBytes = 1 << 20

type fileKey struct {
	ID     string `json:"id"`
	Secret string `json:"secret"`
}

type file struct {
	Kind string    `json:"kind"`
	Note string    `json:"note,omitempty"`
	Keys []fileKey `json:"keys"`
}

const fileNote = "Keys of the Secrets in Flotilla's store: the first encrypts, all decrypt. " +
	"Back this file up apart from the store; without it the store's Secrets cannot be read."

// LoadFile reads a key file. A missing file is an error wrapping
// fs.ErrNotExist; an unreadable or malformed one says what to do.
func LoadFile(path string) (*KeySet, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("secrets key file %s: %w", path, err)
		}
		return nil, fmt.Errorf("read the secrets key file %s: %w (it must be readable by the server, mode 0600)", path, err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read the secrets key file %s: %w", path, err)
	}
	if len(data) > maxFileBytes {
		return nil, fmt.Errorf("secrets key file %s is over %d bytes: not a key file", path, maxFileBytes)
	}
	ks, err := parseFile(data)
	if err != nil {
		return nil, fmt.Errorf("secrets key file %s is corrupt: %w; restore it from your backup "+
			"(do not delete it: the store's Secrets were encrypted with its keys)", path, err)
	}
	return ks, nil
}

func parseFile(data []byte) (*KeySet, error) {
	var f file
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("not JSON: %w", err)
	}
	if f.Kind != FileKind {
		return nil, fmt.Errorf("kind %q, want %q", f.Kind, FileKind)
	}
	if len(f.Keys) == 0 {
		return nil, errors.New("no keys")
	}
	keys := make([]Key, len(f.Keys))
	for i, k := range f.Keys {
		secret, err := base64.StdEncoding.DecodeString(k.Secret)
		if err != nil {
			return nil, fmt.Errorf("key %d (%q): secret is not base64: %w", i+1, k.ID, err)
		}
		keys[i] = Key{ID: k.ID, Secret: secret}
	}
	return NewKeySet(keys...)
}

// SaveFile writes the set to path, whole or not at all (a temporary file
// renamed over it, synced), mode 0600; it creates path's directory (0700).
func SaveFile(path string, ks *KeySet) error {
	f := file{Kind: FileKind, Note: fileNote}
	for _, k := range ks.keys {
		f.Keys = append(f.Keys, fileKey{ID: k.ID, Secret: base64.StdEncoding.EncodeToString(k.Secret)})
	}
	data, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("write the secrets key file: %w", err)
	}
	if err := atomicfile.WriteFile(path, append(data, '\n'), 0o600); err != nil {
		return fmt.Errorf("write the secrets key file %s: %w", path, err)
	}
	return nil
}

// LoadOrCreate reads the key file at path, or, when there is none, makes
// one with a new key (mode 0600) and says so with created. A file that
// exists but cannot be read or parsed is an error: it is never replaced.
// (Whether the store holds values under keys the file lacks, e.g. because
// the file was lost, is the store's check at Open.)
func LoadOrCreate(path string) (ks *KeySet, created bool, err error) {
	ks, err = LoadFile(path)
	if err == nil {
		return ks, false, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, false, err
	}
	k, err := NewKey()
	if err != nil {
		return nil, false, err
	}
	if ks, err = NewKeySet(k); err != nil {
		return nil, false, err
	}
	if err := SaveFile(path, ks); err != nil {
		return nil, false, err
	}
	return ks, true, nil
}
