// Package snapshot is the format of a cluster backup: what `flotilla
// snapshot save` gets from a running server and `flotilla snapshot restore`
// makes a new server's data dir of.
//
// A snapshot is a tar of three members, in this order:
//
//	meta.json     Meta: the format, when and at which revision it was taken
//	keys.age      Keys (the cluster CA's certificate and key, the Secrets key
//	              file, the Git webhook secret) as JSON, encrypted with age
//	              under a passphrase (scrypt): the file alone gives neither
//	              the CA nor a Secret
//	store.badger  the store, a Badger backup stream; the Secrets in it are
//	              sealed under the Secrets key, as they are at rest
//
// so that a restored server has the cluster's identity: its agents, whose
// certificates the CA signed, and its kubeconfigs keep working, and the
// nodes' pods are adopted as they run.
package snapshot

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"filippo.io/age"
)

// Format is the version of the format this package writes and reads.
const Format = 1

// MinPassphrase is the shortest passphrase Write accepts.
const MinPassphrase = 12

// Members of the tar, in order.
const (
	metaName  = "meta.json"
	keysName  = "keys.age"
	storeName = "store.badger"
)

// maxSmall bounds the meta and keys members Read accepts.
const maxSmall = 1 << 20

// scryptWorkFactor is the log2 of scrypt's work that turns the passphrase
// into the keys' key: age's default, about a second. Tests lower it.
var scryptWorkFactor = 18

// ErrPassphrase is the error of Read with a passphrase the snapshot's keys
// were not encrypted under.
var ErrPassphrase = errors.New("the passphrase does not open this snapshot's keys")

// Meta describes a snapshot.
type Meta struct {
	Format   int       `json:"format"`
	Created  time.Time `json:"created"`
	Revision int64     `json:"revision"` // the store's revision
	Server   string    `json:"server,omitempty"`
}

// Keys are the cluster's secrets that are not in the store.
type Keys struct {
	CACert         []byte `json:"caCert"`         // PEM
	CAKey          []byte `json:"caKey"`          // PEM
	SecretsKeyFile []byte `json:"secretsKeyFile"` // the --secrets-key-file's content
	WebhookSecret  []byte `json:"webhookSecret"`
}

// Write writes a snapshot to w: meta, keys encrypted under passphrase, and
// the store as writeStore streams it.
func Write(w io.Writer, meta Meta, keys Keys, passphrase string, writeStore func(io.Writer) error) error {
	return WriteIn("", w, meta, keys, passphrase, writeStore)
}

// WriteIn is Write with the store's temporary copy in tmpDir ("": the
// system's).
func WriteIn(tmpDir string, w io.Writer, meta Meta, keys Keys, passphrase string, writeStore func(io.Writer) error) error {
	if len(passphrase) < MinPassphrase {
		return fmt.Errorf("snapshot: the passphrase has %d characters; give at least %d", len(passphrase), MinPassphrase)
	}
	meta.Format = Format
	metaJSON, err := json.Marshal(meta)
	if err != nil {
		return err
	}
	rcp, err := age.NewScryptRecipient(passphrase)
	if err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	rcp.SetWorkFactor(scryptWorkFactor)
	var sealed bytes.Buffer
	enc, err := age.Encrypt(&sealed, rcp)
	if err != nil {
		return fmt.Errorf("snapshot: encrypt the keys: %w", err)
	}
	if err := json.NewEncoder(enc).Encode(keys); err != nil {
		return fmt.Errorf("snapshot: encrypt the keys: %w", err)
	}
	if err := enc.Close(); err != nil {
		return fmt.Errorf("snapshot: encrypt the keys: %w", err)
	}
	tw := tar.NewWriter(w)
	now := time.Now()
	for _, m := range []struct {
		name string
		data []byte
	}{{metaName, metaJSON}, {keysName, sealed.Bytes()}} {
		if err := tw.WriteHeader(&tar.Header{Name: m.name, Mode: 0o600, Size: int64(len(m.data)), ModTime: now}); err != nil {
			return fmt.Errorf("snapshot: write %s: %w", m.name, err)
		}
		if _, err := tw.Write(m.data); err != nil {
			return fmt.Errorf("snapshot: write %s: %w", m.name, err)
		}
	}
	// A tar member's size comes first: the store is streamed to a
	// temporary file (mode 0600; its Secrets are sealed) to learn it.
	tmp, err := os.CreateTemp(tmpDir, "flotilla-snapshot-*")
	if err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	if err := writeStore(tmp); err != nil {
		return fmt.Errorf("snapshot: the store: %w", err)
	}
	size, err := tmp.Seek(0, io.SeekCurrent)
	if err == nil {
		_, err = tmp.Seek(0, io.SeekStart)
	}
	if err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	if err := tw.WriteHeader(&tar.Header{Name: storeName, Mode: 0o600, Size: size, ModTime: now}); err != nil {
		return fmt.Errorf("snapshot: write %s: %w", storeName, err)
	}
	if _, err := io.Copy(tw, tmp); err != nil {
		return fmt.Errorf("snapshot: write %s: %w", storeName, err)
	}
	return tw.Close()
}

// Reader reads a snapshot: Meta and Keys at once, then the store.
type Reader struct {
	Meta Meta
	Keys Keys
	tr   *tar.Reader
}

// Read reads a snapshot's meta and keys (decrypted with passphrase) from r;
// Store then gives the store's stream.
func Read(r io.Reader, passphrase string) (*Reader, error) {
	tr := tar.NewReader(r)
	metaJSON, err := member(tr, metaName)
	if err != nil {
		return nil, err
	}
	rd := &Reader{tr: tr}
	if err := json.Unmarshal(metaJSON, &rd.Meta); err != nil {
		return nil, fmt.Errorf("snapshot: %s: %w", metaName, err)
	}
	if rd.Meta.Format != Format {
		return nil, fmt.Errorf("snapshot: format %d; this flotilla reads format %d", rd.Meta.Format, Format)
	}
	sealed, err := member(tr, keysName)
	if err != nil {
		return nil, err
	}
	id, err := age.NewScryptIdentity(passphrase)
	if err != nil {
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	dec, err := age.Decrypt(bytes.NewReader(sealed), id)
	if err != nil {
		var noMatch *age.NoIdentityMatchError
		if errors.As(err, &noMatch) {
			return nil, ErrPassphrase
		}
		return nil, fmt.Errorf("snapshot: decrypt the keys: %w", err)
	}
	if err := json.NewDecoder(io.LimitReader(dec, maxSmall)).Decode(&rd.Keys); err != nil {
		return nil, fmt.Errorf("snapshot: the keys: %w", err)
	}
	if len(rd.Keys.CACert) == 0 || len(rd.Keys.CAKey) == 0 || len(rd.Keys.SecretsKeyFile) == 0 {
		return nil, errors.New("snapshot: the keys lack the CA or the Secrets key")
	}
	return rd, nil
}

// Store returns the store's Badger backup stream (call it once, after Read).
func (rd *Reader) Store() (io.Reader, error) {
	h, err := rd.tr.Next()
	if err != nil {
		return nil, fmt.Errorf("snapshot: %s: %w", storeName, err)
	}
	if h.Name != storeName {
		return nil, fmt.Errorf("snapshot: member %q where %s was expected", h.Name, storeName)
	}
	return rd.tr, nil
}

// member reads the next tar member, which must be name.
func member(tr *tar.Reader, name string) ([]byte, error) {
	h, err := tr.Next()
	if errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("snapshot: no %s: not a flotilla snapshot, or cut short", name)
	}
	if err != nil {
		return nil, fmt.Errorf("snapshot: not a flotilla snapshot (%w)", err)
	}
	if h.Name != name {
		return nil, fmt.Errorf("snapshot: member %q where %s was expected: not a flotilla snapshot", h.Name, name)
	}
	if h.Size > maxSmall {
		return nil, fmt.Errorf("snapshot: %s is %d bytes, more than %d", name, h.Size, maxSmall)
	}
	return io.ReadAll(tr)
}
