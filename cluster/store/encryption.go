package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/dgraph-io/badger/v4"

	"github.com/flotilla-dev/flotilla/cluster/store/encrypt"
)

// Secrets at rest.
//
// With Config.Keys, every value the store writes under /registry/secrets/
// — the current value of each Secret and the object carried by each of its
// events in the watch history — is sealed (cluster/store/encrypt: AES-GCM,
// prefixed with its key's id, bound to the object key) at the one place
// where values reach Badger: the commit (commit.go: sealValue and
// eventRecord). Everything above it (txn staging, the no-op rule, events
// handed to watchers) works on the clear JSON; everything that reads
// Badger (readValue, listObjects, the watch replay) opens values through
// openValue. The journal replay of a crashed large commit copies sealed
// event data to the object key unopened: both are bound to the same key.
//
// The store records which key ids its values may be under, at
// /flotilla/meta/encryption-keys (a JSON list): Open refuses keys that lack
// one of them, and a store with the record opened without keys, so that a
// lost or wrong key file is found at start and never silently replaced by
// a new one. The record is a superset: a key id is added before the first
// value is sealed with it, and removed only once no value is under it.
//
// The first Open with keys seals what an older version stored in clear;
// RotateKey (rotate.go) re-seals everything under a new key.

// ErrEncryptionKeys: the keys given to Open do not open what the store
// holds (or none were given and it holds sealed values). The error says
// which key ids are missing and what to do.
var ErrEncryptionKeys = errors.New("store: the encryption keys do not match the store")

var (
	secretsPrefix  = []byte(registryPrefix + "secrets/")
	metaKeyIDsKey  = []byte("/flotilla/meta/encryption-keys") // JSON list of key ids
	errNoStoreKeys = errors.New("the value is encrypted but the store was opened without keys (give the server its --secrets-key-file)")
)

// opener turns a stored value into the clear JSON (a no-op for values
// that are not sealed).
type opener func(key, stored []byte) ([]byte, error)

// sealed says whether the store seals the values of key.
func sealed(key []byte) bool { return bytes.HasPrefix(key, secretsPrefix) }

// sealValue is what the store writes for data under key: sealed with the
// write key for a Secret when the store has keys, data itself otherwise.
func (s *Badger) sealValue(key, data []byte) ([]byte, error) {
	if !sealed(key) {
		return data, nil
	}
	ks := s.keys.Load()
	if ks == nil {
		return data, nil
	}
	out, err := ks.Seal(data, key)
	if err != nil {
		return nil, fmt.Errorf("encrypt %s: %w", key, err)
	}
	return out, nil
}

// eventRecord is the log record of a change, its object sealed as its key's
// value is.
func (s *Badger) eventRecord(ch *change) ([]byte, error) {
	if ch.record != nil {
		return ch.record, nil
	}
	data, err := s.sealValue([]byte(ch.key), ch.data)
	if err != nil {
		return nil, err
	}
	return encodeEvent(ch.typ, ch.key, data), nil
}

// storedValue is the value stored for a key of t: sealed as the write set
// carries it when t came from the log, sealed here otherwise.
func (s *Badger) storedValue(t *txn, key, data []byte) ([]byte, error) {
	if t.sealedFinal != nil {
		return t.sealedFinal[string(key)], nil
	}
	return s.sealValue(key, data)
}

// openValue is the clear value of a stored one: itself unless sealed. A
// value that does not open is ErrCorrupt for its key (Get and List of it
// fail naming it and the key id; Delete without preconditions removes it).
func (s *Badger) openValue(key, stored []byte) ([]byte, error) {
	if !encrypt.IsSealed(stored) {
		return stored, nil
	}
	ks := s.keys.Load()
	if ks == nil {
		id, _, _ := encrypt.Parse(stored)
		return nil, fmt.Errorf("read %s: key id %q: %w: %w", key, id, errNoStoreKeys, ErrCorrupt)
	}
	plain, err := ks.Open(stored, key)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w (restore the key file that holds this key, or delete the object and let Git re-apply it): %w",
			key, err, ErrCorrupt)
	}
	return plain, nil
}

// readKeyIDs reads the record of key ids in use; ok is false without one.
func readKeyIDs(btx *badger.Txn) (ids []string, ok bool, err error) {
	item, err := btx.Get(metaKeyIDsKey)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("read %s: %w", metaKeyIDsKey, err)
	}
	err = item.Value(func(v []byte) error {
		if err := json.Unmarshal(v, &ids); err != nil {
			return fmt.Errorf("read %s: %v: %w", metaKeyIDsKey, err, errMalformed)
		}
		return nil
	})
	return ids, err == nil, err
}

func (s *Badger) keyIDs() (ids []string, ok bool, err error) {
	err = s.db.View(func(btx *badger.Txn) error {
		ids, ok, err = readKeyIDs(btx)
		return err
	})
	return ids, ok, err
}

func (s *Badger) writeKeyIDs(ids []string) error {
	data, err := json.Marshal(ids)
	if err != nil {
		return err
	}
	if err := s.db.Update(func(btx *badger.Txn) error { return btx.Set(metaKeyIDsKey, data) }); err != nil {
		return fmt.Errorf("record the encryption key ids: %w", err)
	}
	return nil
}

// initEncryption checks Config.Keys against the store's record of key ids
// and, on the first start with keys, seals the Secrets stored in clear.
// Called by Open, before anything else can write.
func (s *Badger) initEncryption() error {
	recorded, present, err := s.keyIDs()
	if err != nil {
		return err
	}
	ks := s.cfg.Keys
	if ks == nil {
		if len(recorded) > 0 {
			return fmt.Errorf("the store holds Secrets encrypted with key %s, but no key file was given: "+
				"start the server with --secrets-key-file naming the file that holds it: %w",
				strings.Join(recorded, ", "), ErrEncryptionKeys)
		}
		return nil
	}
	s.keys.Store(ks)
	if !present {
		n, err := s.reseal(context.Background(), nil)
		if err != nil {
			return fmt.Errorf("encrypt the Secrets stored in clear: %w", err)
		}
		if n > 0 {
			s.log.Info("encrypted the Secrets stored in clear", "values", n, "key", ks.WriteKeyID())
		}
		return s.writeKeyIDs([]string{ks.WriteKeyID()})
	}
	var missing []string
	for _, id := range recorded {
		if !ks.Has(id) {
			missing = append(missing, id)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("the store holds Secrets encrypted with key %s, which the key file does not hold (it holds %s): "+
			"restore the key file the store was written with (from your backup); to give those Secrets up instead, "+
			"move the store's directory away and let Git re-apply the repository: %w",
			strings.Join(missing, ", "), strings.Join(ks.IDs(), ", "), ErrEncryptionKeys)
	}
	if !slices.Contains(recorded, ks.WriteKeyID()) {
		return s.writeKeyIDs(append(recorded, ks.WriteKeyID()))
	}
	return nil
}

// reseal seals, under the current write key, every Secret value and every
// Secret event in the history that is in clear or under another key, and
// returns how many it went through. A value that does not decrypt (a
// corrupted one) is left as it is, and logged. progress, when not nil, is called with the
// count done and the total. The caller holds s.mu (or is Open): no write
// runs meanwhile; reads do, and open each value whichever key it is under.
func (s *Badger) reseal(ctx context.Context, progress func(done, total int)) (int, error) {
	ks := s.keys.Load()
	if ks == nil {
		return 0, errors.New("the store has no keys")
	}
	writeID := ks.WriteKeyID()
	stale := func(v []byte) bool {
		id, _, ok := encrypt.Parse(v)
		return !ok || id != writeID
	}
	// each calls fn with every stale value: a Secret's current value (typ
	// ""), or an event record of one (its type, and the object key and
	// data inside it).
	each := func(fn func(storageKey []byte, typ EventType, objKey string, data []byte) error) error {
		return s.view(func(btx *badger.Txn) error {
			it := btx.NewIterator(badger.IteratorOptions{PrefetchValues: true, PrefetchSize: 64, Prefix: secretsPrefix})
			for it.Seek(secretsPrefix); it.ValidForPrefix(secretsPrefix); it.Next() {
				item := it.Item()
				err := item.Value(func(v []byte) error {
					if !stale(v) {
						return nil
					}
					return fn(item.Key(), "", string(item.Key()), v)
				})
				if err != nil {
					it.Close()
					return err
				}
			}
			it.Close()
			it = btx.NewIterator(badger.IteratorOptions{PrefetchValues: true, PrefetchSize: 64, Prefix: eventPrefix})
			defer it.Close()
			for it.Seek(eventPrefix); it.ValidForPrefix(eventPrefix); it.Next() {
				item := it.Item()
				err := item.Value(func(v []byte) error {
					typ, _, key, data, err := decodeEvent(v)
					if err != nil || !sealed([]byte(key)) || !stale(data) {
						return nil // not a Secret's (an unreadable record stays as it is)
					}
					return fn(item.Key(), typ, key, data)
				})
				if err != nil {
					return err
				}
			}
			return nil
		})
	}
	total := 0
	if err := each(func([]byte, EventType, string, []byte) error { total++; return nil }); err != nil {
		return 0, err
	}
	if progress != nil {
		progress(0, total)
	}
	c := s.newChunks()
	defer c.discard()
	done := 0
	err := each(func(storageKey []byte, typ EventType, objKey string, data []byte) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		plain, err := s.openValue([]byte(objKey), data)
		if err != nil {
			// It did not open before either: leave it, and say so (Get
			// of it fails naming it; deleting it clears it).
			s.log.Warn("re-encrypt: leaving a value that does not decrypt", "key", string(storageKey), "err", err)
			done++
			return nil
		}
		out, err := ks.Seal(plain, []byte(objKey))
		if err != nil {
			return fmt.Errorf("re-encrypt %s: %w", storageKey, err)
		}
		if typ != "" {
			out = encodeEvent(typ, objKey, out)
		}
		if err := c.set(bytes.Clone(storageKey), out); err != nil {
			return err
		}
		if done++; progress != nil && (done%100 == 0 || done == total) {
			progress(done, total)
		}
		return nil
	})
	if err == nil {
		err = c.flush()
	}
	if err != nil {
		return done, err
	}
	return done, nil
}
