package snapshot

import (
	"bytes"
	"errors"
	"io"
	"os"
	"strings"
	"testing"
	"time"
)

func TestMain(m *testing.M) {
	scryptWorkFactor = 10 // a second of scrypt per Read would make the tests slow, not better
	os.Exit(m.Run())
}

func TestRoundTrip(t *testing.T) {
	keys := Keys{CACert: []byte("CERT"), CAKey: []byte("-----BEGIN EC PRIVATE KEY----- the-ca-key"),
		SecretsKeyFile: []byte(`{"keys":["the-secrets-key"]}`), WebhookSecret: []byte("hook")}
	store := bytes.Repeat([]byte("badger backup "), 10000)
	var file bytes.Buffer
	meta := Meta{Created: time.Unix(1700000000, 0).UTC(), Revision: 42, Server: "s1"}
	if err := Write(&file, meta, keys, "correct horse battery", func(w io.Writer) error {
		_, err := w.Write(store)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{"the-ca-key", "the-secrets-key", "hook"} {
		if bytes.Contains(file.Bytes(), []byte(secret)) {
			t.Errorf("the snapshot holds %q in clear", secret)
		}
	}
	if _, err := Read(bytes.NewReader(file.Bytes()), "wrong horse battery"); !errors.Is(err, ErrPassphrase) {
		t.Errorf("Read with another passphrase: %v, want ErrPassphrase", err)
	}
	rd, err := Read(bytes.NewReader(file.Bytes()), "correct horse battery")
	if err != nil {
		t.Fatal(err)
	}
	if rd.Meta.Revision != 42 || rd.Meta.Format != Format || !rd.Meta.Created.Equal(meta.Created) {
		t.Errorf("meta = %+v", rd.Meta)
	}
	if string(rd.Keys.CAKey) != string(keys.CAKey) || string(rd.Keys.SecretsKeyFile) != string(keys.SecretsKeyFile) ||
		string(rd.Keys.WebhookSecret) != "hook" || string(rd.Keys.CACert) != "CERT" {
		t.Errorf("keys = %+v", rd.Keys)
	}
	sr, err := rd.Store()
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(sr)
	if err != nil || !bytes.Equal(got, store) {
		t.Errorf("store: %d bytes (%v), want %d", len(got), err, len(store))
	}
}

func TestRefusals(t *testing.T) {
	if err := Write(io.Discard, Meta{}, Keys{}, "short", nil); err == nil || !strings.Contains(err.Error(), "at least 12") {
		t.Errorf("a short passphrase: %v", err)
	}
	if _, err := Read(strings.NewReader("this is not a tar file at all, nor a snapshot"), "correct horse battery"); err == nil ||
		!strings.Contains(err.Error(), "not a flotilla snapshot") {
		t.Errorf("garbage: %v", err)
	}
	var file bytes.Buffer
	if err := Write(&file, Meta{}, Keys{CACert: []byte("c"), CAKey: []byte("k"), SecretsKeyFile: []byte("s")}, "correct horse battery",
		func(w io.Writer) error { return nil }); err != nil {
		t.Fatal(err)
	}
	cut := file.Bytes()[:1024]
	if _, err := Read(bytes.NewReader(cut), "correct horse battery"); err == nil {
		t.Error("a snapshot cut short reads")
	}
}
