package store

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dgraph-io/badger/v4"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flotilla-dev/flotilla/cluster/store/encrypt"
	"github.com/flotilla-dev/flotilla/internal/testkit"
)

func secret(ns, name, value string) *corev1.Secret {
	return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Type: corev1.SecretTypeOpaque, Data: map[string][]byte{"password": []byte(value)}}
}

// keyFile makes a key file beside (not inside) the store's directory.
func keyFile(t *testing.T) (string, *encrypt.KeySet) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "secrets-key.json")
	ks, created, err := encrypt.LoadOrCreate(path)
	if err != nil || !created {
		t.Fatalf("create the key file: created %v, %v", created, err)
	}
	return path, ks
}

// openKeys opens a store on dir with keys, without block compression so
// that a grep of its files finds what is in clear.
func openKeys(t *testing.T, dir string, ks *encrypt.KeySet) *Badger {
	t.Helper()
	s, err := Open(Config{Dir: dir, Keys: ks, Logger: testkit.Logger(t), testNoCompression: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// grepDir says which of needles occur in the raw bytes of some file under
// dir (Badger's SST, value log and write-ahead files alike).
func grepDir(t *testing.T, dir string, needles ...string) []string {
	t.Helper()
	var found []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, n := range needles {
			if bytes.Contains(data, []byte(n)) {
				found = append(found, fmt.Sprintf("%q in %s", n, filepath.Base(path)))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}

// withBase64 is each value and its base64 (how a Secret's data is in its JSON).
func withBase64(values ...string) []string {
	var out []string
	for _, v := range values {
		out = append(out, v, base64.StdEncoding.EncodeToString([]byte(v)))
	}
	return out
}

// rawSecrets is every stored value that holds a Secret: current values and
// event records, by storage key.
func rawSecrets(t *testing.T, s *Badger) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	err := s.db.View(func(btx *badger.Txn) error {
		it := btx.NewIterator(badger.DefaultIteratorOptions)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			v, err := item.ValueCopy(nil)
			if err != nil {
				return err
			}
			key := item.Key()
			if bytes.HasPrefix(key, eventPrefix) {
				_, _, objKey, data, err := decodeEvent(v)
				if err != nil || !sealed([]byte(objKey)) {
					continue
				}
				v = data
			} else if !sealed(key) {
				continue
			}
			out[string(key)] = v
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestSecretsEncryptedAtRest(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	_, ks := keyFile(t)
	s := openKeys(t, dir, ks)
	w, err := s.Watch(ctx, "secrets", ListOptions{}, 0)
	if err != nil {
		t.Fatal(err)
	}

	// By create, update, delete, and in a transaction too big for one
	// Badger transaction (it takes the journal of commit.go).
	created := mustCreate(t, s, secret("web", "created", "pw-created-7f3a9c"))
	mustCreate(t, s, secret("web", "updated", "pw-before-update-51d2"))
	if _, err := s.Update(ctx, secret("web", "updated", "pw-after-update-9e04")); err != nil {
		t.Fatal(err)
	}
	mustCreate(t, s, secret("web", "deleted", "pw-deleted-c1b8"))
	if _, err := s.Delete(ctx, "secrets", "web", "deleted", DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	const bigN = 300
	padding := strings.Repeat("p", 10<<10)
	if _, err := s.Txn(ctx, func(tx Tx) error {
		for i := range bigN {
			if _, err := tx.Create(secret("big", fmt.Sprintf("s-%03d", i), fmt.Sprintf("pw-big-%03d-%s", i, padding))); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// The grep's control: a ConfigMap is stored in clear.
	mustCreate(t, s, configMap("web", "clear", map[string]string{"v": "cm-in-clear-40aa"}))

	// Reads decrypt.
	got, err := s.Get(ctx, "secrets", "web", "updated")
	if err != nil || string(got.(*corev1.Secret).Data["password"]) != "pw-after-update-9e04" {
		t.Fatalf("get: %v, %v", got, err)
	}
	list, _, err := s.List(ctx, "secrets", ListOptions{Namespace: "big"})
	if err != nil || len(list) != bigN || !strings.HasPrefix(string(list[7].(*corev1.Secret).Data["password"]), "pw-big-007-") {
		t.Fatalf("list: %d objects, %v", len(list), err)
	}
	// The no-op rule still holds on encrypted values.
	if out, err := s.Update(ctx, created.DeepCopy()); err != nil || out.GetResourceVersion() != created.ResourceVersion {
		t.Fatalf("no-op update of a Secret: rv %s (was %s), %v", out.GetResourceVersion(), created.ResourceVersion, err)
	}
	// The live watch and a replay of the whole history decrypt.
	if ev := next(t, w); string(ev.Object.(*corev1.Secret).Data["password"]) != "pw-created-7f3a9c" {
		t.Fatalf("live event: %s %s", ev.Type, ev.Object.GetName())
	}
	replay, err := s.Watch(ctx, "secrets", ListOptions{Namespace: "web"}, 1)
	if err != nil {
		t.Fatal(err)
	}
	var seen []string
	for range 4 { // after revision 1: updated created and modified, deleted created and deleted
		ev := next(t, replay)
		seen = append(seen, string(ev.Type)+":"+string(ev.Object.(*corev1.Secret).Data["password"]))
	}
	want := "ADDED:pw-before-update-51d2 MODIFIED:pw-after-update-9e04 ADDED:pw-deleted-c1b8 DELETED:pw-deleted-c1b8"
	if strings.Join(seen, " ") != want {
		t.Fatalf("replay from revision 1: %v, want %s", seen, want)
	}

	// Every stored copy is sealed; nothing on disk is in clear.
	for key, v := range rawSecrets(t, s) {
		if id, _, ok := encrypt.Parse(v); !ok || id != ks.WriteKeyID() {
			t.Errorf("%s is not sealed with %s: %.40q", key, ks.WriteKeyID(), v)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	secrets := withBase64("pw-created-7f3a9c", "pw-before-update-51d2", "pw-after-update-9e04", "pw-deleted-c1b8", "pw-big-007-", "pw-big-299-")
	if found := grepDir(t, dir, secrets...); len(found) > 0 {
		t.Fatalf("Secret values in clear on disk: %v", found)
	}
	if found := grepDir(t, dir, "cm-in-clear-40aa"); len(found) == 0 {
		t.Fatal("the control (a ConfigMap value) is not found on disk either: the grep proves nothing")
	}

	// Reopened with the key file, the values read.
	s2 := openKeys(t, dir, ks)
	got, err = s2.Get(ctx, "secrets", "big", "s-299")
	if err != nil || !strings.HasPrefix(string(got.(*corev1.Secret).Data["password"]), "pw-big-299-") {
		t.Fatalf("get after reopen: %v", err)
	}
}

func TestOpenWithWrongKeys(t *testing.T) {
	dir := t.TempDir()
	path, ks := keyFile(t)
	s := openKeys(t, dir, ks)
	mustCreate(t, s, secret("web", "a", "pw-a"))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// No keys: refused, naming the key and the flag.
	_, err := Open(Config{Dir: dir, Logger: testkit.Logger(t)})
	if !errors.Is(err, ErrEncryptionKeys) || !strings.Contains(err.Error(), ks.WriteKeyID()) || !strings.Contains(err.Error(), "--secrets-key-file") {
		t.Fatalf("open without keys: %v", err)
	}
	// Another key file (the original lost, a new one made): refused.
	_, other := keyFile(t)
	_, err = Open(Config{Dir: dir, Keys: other, Logger: testkit.Logger(t)})
	if !errors.Is(err, ErrEncryptionKeys) || !strings.Contains(err.Error(), ks.WriteKeyID()) || !strings.Contains(err.Error(), "restore the key file") {
		t.Fatalf("open with another key file: %v", err)
	}
	// A corrupt key file: a clear error, and it is never replaced.
	if err := os.WriteFile(path, []byte(`{"kind": "SecretsEncryptionKeys", "keys": [{"id": "k1", "secret": "c2hvcnQ="}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	_, _, err = encrypt.LoadOrCreate(path)
	if err == nil || !strings.Contains(err.Error(), "corrupt") || !strings.Contains(err.Error(), "restore it") {
		t.Fatalf("load a corrupt key file: %v", err)
	}
	if data, _ := os.ReadFile(path); !bytes.Contains(data, []byte(`"k1"`)) {
		t.Fatal("the corrupt key file was replaced")
	}
	// An unreadable one (a directory in its place): a clear error.
	if _, _, err := encrypt.LoadOrCreate(t.TempDir()); err == nil || !strings.Contains(err.Error(), "secrets key file") {
		t.Fatalf("load a directory as a key file: %v", err)
	}
}

func TestUnknownKeyIDIsCorruptNotPanic(t *testing.T) {
	ctx := context.Background()
	path, ks := keyFile(t)
	s := openKeys(t, t.TempDir(), ks)
	mustCreate(t, s, secret("web", "good", "pw-good"))
	key := objectKey("secrets", "web", "lost")
	for _, v := range [][]byte{
		[]byte(encrypt.Prefix + "no-such-key:" + strings.Repeat("\x00", 40)),
		[]byte(encrypt.Prefix + ks.WriteKeyID() + ":short"),
		[]byte(encrypt.Prefix + ":"),
	} {
		if err := s.db.Update(func(btx *badger.Txn) error { return btx.Set(key, v) }); err != nil {
			t.Fatal(err)
		}
		_, err := s.Get(ctx, "secrets", "web", "lost")
		if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), string(key)) {
			t.Fatalf("get of %q: %v", v, err)
		}
		if _, _, err := s.List(ctx, "secrets", ListOptions{}); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("list with %q: %v", v, err)
		}
	}
	if err := s.db.Update(func(btx *badger.Txn) error {
		return btx.Set(key, []byte(encrypt.Prefix+"no-such-key:"+strings.Repeat("\x00", 40)))
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, "secrets", "web", "lost"); !errors.Is(err, encrypt.ErrUnknownKey) || !strings.Contains(err.Error(), `"no-such-key"`) {
		t.Fatalf("get under an unknown key: %v", err)
	}
	// A rotation leaves it (logged) and re-encrypts the rest.
	if _, err := s.RotateKey(ctx, path, nil); err != nil {
		t.Fatalf("rotate with a value that does not decrypt: %v", err)
	}
	if got, err := s.Get(ctx, "secrets", "web", "good"); err != nil || string(got.(*corev1.Secret).Data["password"]) != "pw-good" {
		t.Fatalf("get after the rotation: %v", err)
	}
	if _, err := s.Get(ctx, "secrets", "web", "lost"); !errors.Is(err, encrypt.ErrUnknownKey) {
		t.Fatalf("get under an unknown key after the rotation: %v", err)
	}
	// Delete without preconditions clears it; the rest works.
	if _, err := s.Delete(ctx, "secrets", "web", "lost", DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if list, _, err := s.List(ctx, "secrets", ListOptions{}); err != nil || len(list) != 1 {
		t.Fatalf("list after the delete: %d, %v", len(list), err)
	}
}

// A store that held Secrets in clear (before encryption) seals them at its
// first start with keys.
func TestFirstOpenWithKeysSealsClearSecrets(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	// Without keys (as before encryption existed), without compression
	// so that the grep below finds clear copies.
	s, err := Open(Config{Dir: dir, Logger: testkit.Logger(t), testNoCompression: true})
	if err != nil {
		t.Fatal(err)
	}
	mustCreate(t, s, secret("web", "old", "pw-old-clear"))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	_, ks := keyFile(t)
	s = openKeys(t, dir, ks)
	raw := rawSecrets(t, s)
	if len(raw) != 2 { // the value and its event
		t.Fatalf("%d stored copies, want 2", len(raw))
	}
	for key, v := range raw {
		if !encrypt.IsSealed(v) {
			t.Errorf("%s still in clear", key)
		}
	}
	if got, err := s.Get(ctx, "secrets", "web", "old"); err != nil || string(got.(*corev1.Secret).Data["password"]) != "pw-old-clear" {
		t.Fatalf("get: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// Badger's compaction at Close dropped the clear versions.
	if found := grepDir(t, dir, withBase64("pw-old-clear")...); len(found) > 0 {
		t.Fatalf("clear copies left on disk after the first start with keys: %v", found)
	}
}

func TestRotateKey(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	path, ks := keyFile(t)
	oldID := ks.WriteKeyID()
	s := openKeys(t, dir, ks)
	// 20 KiB each, so that the re-encryption commits in several chunks.
	padding := strings.Repeat("p", 20<<10)
	for i := range 250 {
		mustCreate(t, s, secret("web", fmt.Sprintf("s-%03d", i), fmt.Sprintf("pw-%03d", i)+padding))
	}
	if _, err := s.Update(ctx, secret("web", "s-000", "pw-000-v2")); err != nil {
		t.Fatal(err)
	}

	// Interrupted halfway (as a crash would): every value still opens,
	// with the key file as it was left, after a restart.
	cctx, cancel := context.WithCancel(ctx)
	_, err := s.RotateKey(cctx, path, func(p RotateProgress) {
		if p.Step == "reencrypt" && p.Done >= 100 {
			cancel()
		}
	})
	cancel()
	if err == nil || !strings.Contains(err.Error(), "run the rotation again") {
		t.Fatalf("interrupted rotation: %v", err)
	}
	mid, err := encrypt.LoadFile(path)
	if err != nil || len(mid.IDs()) != 2 || mid.IDs()[1] != oldID {
		t.Fatalf("key file after the interrupted rotation: %v, %v", mid.IDs(), err)
	}
	ids := map[string]int{}
	for _, v := range rawSecrets(t, s) {
		id, _, _ := encrypt.Parse(v)
		ids[id]++
	}
	if len(ids) != 2 {
		t.Fatalf("key ids after half a rotation: %v, want both keys in use", ids)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openKeys(t, dir, mid)
	list, _, err := s.List(ctx, "secrets", ListOptions{})
	if err != nil || len(list) != 250 {
		t.Fatalf("list after the restart: %d, %v", len(list), err)
	}

	// Run again: it finishes.
	var steps []string
	newID, err := s.RotateKey(ctx, path, func(p RotateProgress) {
		if p.Step != "reencrypt" || p.Done == p.Total {
			steps = append(steps, fmt.Sprintf("%s %d/%d", p.Step, p.Done, p.Total))
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("progress: %v", steps)
	if steps[0] != "new-key 0/0" || steps[len(steps)-1] != "retired 0/0" {
		t.Fatalf("progress: %v", steps)
	}
	final, err := encrypt.LoadFile(path)
	if err != nil || strings.Join(final.IDs(), ",") != newID {
		t.Fatalf("key file after the rotation: %v, %v; want only %s", final.IDs(), err, newID)
	}
	for key, v := range rawSecrets(t, s) {
		if bytes.Contains(v, []byte(oldID)) || bytes.Contains(v, []byte(mid.WriteKeyID())) {
			t.Errorf("%s still names a retired key", key)
		}
		if id, _, _ := encrypt.Parse(v); id != newID {
			t.Errorf("%s under %q, want %q", key, id, newID)
		}
	}
	if got, err := s.Get(ctx, "secrets", "web", "s-000"); err != nil || string(got.(*corev1.Secret).Data["password"]) != "pw-000-v2" {
		t.Fatalf("get after the rotation: %v", err)
	}
	w, err := s.Watch(ctx, "secrets", ListOptions{}, 1)
	if err != nil {
		t.Fatal(err)
	}
	if ev := next(t, w); string(ev.Object.(*corev1.Secret).Data["password"]) != "pw-001"+padding { // revision 2
		t.Fatalf("replay after the rotation: %s %s", ev.Type, ev.Object.GetName())
	}
	// New writes use the new key; a restart with the new file reads all.
	mustCreate(t, s, secret("web", "after", "pw-after"))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// (Badger's files may still hold the overwritten versions, under the
	// retired keys, until its compaction drops them: see RotateKey.)
	// The retired key no longer opens the store; the new file does.
	if _, err := Open(Config{Dir: dir, Keys: ks, Logger: testkit.Logger(t)}); !errors.Is(err, ErrEncryptionKeys) {
		t.Fatalf("open with the retired key: %v", err)
	}
	s = openKeys(t, dir, final)
	if list, _, err := s.List(ctx, "secrets", ListOptions{}); err != nil || len(list) != 251 {
		t.Fatalf("list after a restart: %d, %v", len(list), err)
	}
}

// BenchmarkReadSecrets is the store's own cost of encryption at rest: Get
// of a 1 KiB Secret and List of 100, from a store with and without keys
// (in memory, so that the decryption is not lost in the disk's noise).
//
//	go test -run '^$' -bench ReadSecrets ./cluster/store/
func BenchmarkReadSecrets(b *testing.B) {
	for _, encrypted := range []bool{false, true} {
		name := "plain"
		cfg := Config{Logger: slog.New(slog.DiscardHandler)}
		if encrypted {
			name = "encrypted"
			k, _ := encrypt.NewKey()
			cfg.Keys, _ = encrypt.NewKeySet(k)
		}
		s, err := Open(cfg)
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		ctx := context.Background()
		for i := range 100 {
			if _, err := s.Create(ctx, secret("web", fmt.Sprintf("s-%03d", i), strings.Repeat("k", 1024))); err != nil {
				b.Fatal(err)
			}
		}
		b.Run("get/"+name, func(b *testing.B) {
			for b.Loop() {
				if _, err := s.Get(ctx, "secrets", "web", "s-042"); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("list-100/"+name, func(b *testing.B) {
			for b.Loop() {
				if _, _, err := s.List(ctx, "secrets", ListOptions{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
