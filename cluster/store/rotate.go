package store

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/flotilla-dev/flotilla/cluster/store/encrypt"
)

// RotateProgress is what RotateKey reports as it goes.
type RotateProgress struct {
	// Step is one of "new-key" (the new key is in the key file, as the
	// write key), "reencrypt" (Done of Total values re-encrypted),
	// "retired" (the old keys left the key file).
	Step        string
	Done, Total int
	// NewKeyID is the new write key's id; OldKeyIDs the keys retired.
	NewKeyID  string
	OldKeyIDs []string
}

// RotateKey makes a new key the write key of a running store, re-encrypts
// under it every Secret and every copy of one in the watch history, then
// retires the other keys. keyFile is the key file the store's keys came
// from (encrypt.LoadFile). progress, when not nil, is called as it goes.
//
// Each step is durable before the next, so a crash (or ctx) at any point
// leaves every value decryptable with the key file:
//
//  1. The key file becomes [new, old…] (written whole: a temporary file
//     renamed over it). A restart from here seals with the new key and
//     opens with any.
//  2. With the writer lock held (writes wait; reads go on), the store's
//     record of key ids gets the new one, the store seals with the new
//     key, and every stale value is re-encrypted (Badger transactions of
//     a few MB each; each value is under the old key or the new one).
//  3. The record becomes [new]: no value is under another key.
//  4. The key file becomes [new]: the old keys are retired.
//
// An interrupted rotation is finished by running it again (it retires
// every key but its new one). Badger keeps overwritten values in its files
// until its compaction drops them; those are under the retired keys.
func (s *Badger) RotateKey(ctx context.Context, keyFile string, progress func(RotateProgress)) (newID string, err error) {
	if progress == nil {
		progress = func(RotateProgress) {}
	}
	s.rotateMu.Lock()
	defer s.rotateMu.Unlock()
	if s.keys.Load() == nil {
		return "", fmt.Errorf("rotate the secrets key: the store was opened without keys (no --secrets-key-file): %w", ErrInvalid)
	}
	cur, err := encrypt.LoadFile(keyFile)
	if err != nil {
		return "", fmt.Errorf("rotate the secrets key: %w", err)
	}
	recorded, _, err := s.keyIDs()
	if err != nil {
		return "", fmt.Errorf("rotate the secrets key: %w", err)
	}
	for _, id := range append(recorded, s.keys.Load().IDs()...) {
		if !cur.Has(id) {
			return "", fmt.Errorf("rotate the secrets key: the key file %s lacks key %q, which the store uses "+
				"(was it replaced?): restore it from your backup first: %w", keyFile, id, ErrEncryptionKeys)
		}
	}
	k, err := encrypt.NewKey()
	if err != nil {
		return "", err
	}
	next, err := encrypt.NewKeySet(append([]encrypt.Key{k}, cur.Keys()...)...)
	if err != nil {
		return "", err
	}
	final, err := encrypt.NewKeySet(k)
	if err != nil {
		return "", err
	}
	old := cur.IDs()

	// 1. The new key in the file, as the write key.
	if err := encrypt.SaveFile(keyFile, next); err != nil {
		return "", fmt.Errorf("rotate the secrets key: %w (nothing changed)", err)
	}
	s.log.Info("secrets key rotation: new write key", "key", k.ID, "old", strings.Join(old, ","))
	progress(RotateProgress{Step: "new-key", NewKeyID: k.ID, OldKeyIDs: old})

	// 2 and 3, as the single writer.
	if err := s.resealUnder(ctx, next, k.ID, recorded, func(done, total int) {
		progress(RotateProgress{Step: "reencrypt", Done: done, Total: total, NewKeyID: k.ID, OldKeyIDs: old})
	}); err != nil {
		return "", fmt.Errorf("rotate the secrets key: %w; both keys stay in %s, every value decrypts: run the rotation again", err, keyFile)
	}

	s.hook(phaseRotateResealed)
	if s.cfg.Replicated {
		// A Replicated store runs without fsync and replays the log after
		// a power loss; the log's entries from before are sealed under
		// the keys about to be retired, so the store's state goes to disk
		// now, and no replay reaches back to them.
		if err := s.db.Sync(); err != nil {
			return "", fmt.Errorf("rotate the secrets key: sync the store: %w; both keys stay in %s: run the rotation again", err, keyFile)
		}
	}

	// 4. Retire the old keys.
	if err := encrypt.SaveFile(keyFile, final); err != nil {
		return "", fmt.Errorf("rotate the secrets key: every value is under the new key %s, but retiring the old ones failed: %w; "+
			"run the rotation again", k.ID, err)
	}
	s.keys.Store(final)
	s.log.Info("secrets key rotation: done, old keys retired", "key", k.ID, "retired", strings.Join(old, ","))
	progress(RotateProgress{Step: "retired", NewKeyID: k.ID, OldKeyIDs: old})
	return k.ID, nil
}

// resealUnder swaps in keys (whose write key is id) and re-encrypts every
// stale value, holding the writer lock; recorded is the store's record of
// key ids, which gets id first and becomes [id] at the end.
func (s *Badger) resealUnder(ctx context.Context, keys *encrypt.KeySet, id string, recorded []string, progress func(done, total int)) error {
	if s.cfg.Replicated {
		// No write of this server between its sealing and its apply: it
		// could seal under a key about to be retired.
		s.propTurn <- struct{}{}
		defer func() { <-s.propTurn }()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if s.broken != nil {
		return s.broken
	}
	if !slices.Contains(recorded, id) {
		if err := s.writeKeyIDs(append(slices.Clone(recorded), id)); err != nil {
			return err
		}
	}
	s.keys.Store(keys)
	n, err := s.reseal(ctx, progress)
	if err != nil {
		return fmt.Errorf("re-encrypt (%d values done): %w", n, err)
	}
	return s.writeKeyIDs([]string{id})
}
