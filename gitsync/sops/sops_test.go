package sops_test

import (
	"bytes"
	"os"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/flotilla-dev/flotilla/gitsync/sops"
	"github.com/flotilla-dev/flotilla/gitsync/sops/sopstest"
)

const secret = `apiVersion: v1
kind: Secret
metadata:
  name: db
  namespace: default
type: Opaque
data:
  password: aHVudGVyMi1wbGFpbnRleHQ=
stringData:
  user: admin-plaintext
  port: 5432
  ratio: 0.25
  whole: 2.0
  "on": true
  multi: |
    line one
    line two
`

func load(t *testing.T, k sopstest.Key) *sops.Identities {
	t.Helper()
	ids, err := sops.LoadIdentities(k.File)
	if err != nil {
		t.Fatal(err)
	}
	return ids
}

// decode parses a decrypted file as the schema would.
func decode(t *testing.T, data []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := yaml.Unmarshal(data, &m); err != nil {
		t.Fatalf("the decrypted file is not YAML: %v\n%s", err, data)
	}
	return m
}

func TestDecryptRealSops(t *testing.T) {
	dir := t.TempDir()
	k := sopstest.NewKey(t, dir)
	enc := sopstest.Encrypt(t, secret, k.Recipient)
	if bytes.Contains(enc, []byte("plaintext")) || bytes.Contains(enc, []byte("aHVudGVyMi1wbGFpbnRleHQ=")) {
		t.Fatalf("sops left plaintext:\n%s", enc)
	}
	if !sops.IsEncrypted(enc) || sops.IsEncrypted([]byte(secret)) {
		t.Fatal("IsEncrypted does not tell the encrypted file from the plain one")
	}
	out, values, err := sops.Decrypt(enc, load(t, k))
	if err != nil {
		t.Fatalf("Decrypt: %v", err)
	}
	if strings.Join(values, ",") != "aHVudGVyMi1wbGFpbnRleHQ=,admin-plaintext,5432,0.25,2,True,line one\nline two\n" {
		t.Errorf("decrypted values %q", values)
	}
	m := decode(t, out)
	if _, ok := m["sops"]; ok {
		t.Error("the sops block is still in the output")
	}
	data := m["data"].(map[string]any)
	sd := m["stringData"].(map[string]any)
	if data["password"] != "aHVudGVyMi1wbGFpbnRleHQ=" || sd["user"] != "admin-plaintext" || sd["port"] != 5432 ||
		sd["ratio"] != 0.25 || sd["whole"] != 2.0 || sd["on"] != true || sd["multi"] != "line one\nline two\n" {
		t.Errorf("decrypted values: data %v, stringData %v", data, sd)
	}
	if m["metadata"].(map[string]any)["name"] != "db" {
		t.Errorf("metadata: %v", m["metadata"])
	}
	// Every line is where it was in the committed file.
	if a, b := bytes.Count(out, []byte("\n")), bytes.Count(enc, []byte("\n")); a != b {
		t.Errorf("the decrypted file has %d lines, the encrypted one %d", a, b)
	}
	encLines, outLines := strings.Split(string(enc), "\n"), strings.Split(string(out), "\n")
	for i, l := range encLines {
		if strings.Contains(l, "user: ENC[") && !strings.Contains(outLines[i], `user: "admin-plaintext"`) {
			t.Errorf("line %d: %q became %q", i+1, l, outLines[i])
		}
	}

	// Two recipients: either key decrypts.
	k2 := sopstest.NewKey(t, dir)
	enc2 := sopstest.Encrypt(t, secret, k.Recipient, k2.Recipient)
	if _, _, err := sops.Decrypt(enc2, load(t, k2)); err != nil {
		t.Errorf("the second recipient's key: %v", err)
	}
}

// TestDecryptRules: the other ways sops chooses what it encrypts, and the
// MAC over encrypted values only, decrypt as sops does.
func TestDecryptRules(t *testing.T) {
	k := sopstest.NewKey(t, t.TempDir())
	cases := []struct {
		name, config string
		args         []string
		checkable    bool // apiVersion and kind are left in clear
	}{
		{"everything (sops' default)", "", []string{"--age", k.Recipient}, false},
		{"unencrypted suffix", "", []string{"--age", k.Recipient, "--unencrypted-suffix", "_clear"}, false},
		{"unencrypted regex", "", []string{"--age", k.Recipient, "--unencrypted-regex", "^(apiVersion|kind|metadata|type)$"}, true},
		{"mac_only_encrypted in .sops.yaml", "creation_rules:\n  - encrypted_regex: ^(data|stringData)$\n    mac_only_encrypted: true\n    age: " + k.Recipient + "\n", nil, true},
	}
	plain := strings.Replace(secret, "type: Opaque", "type: Opaque\nnote_clear: kept", 1)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			enc := sopstest.EncryptWith(t, plain, c.config, c.args...)
			out, _, err := sops.Decrypt(enc, load(t, k))
			if err != nil {
				t.Fatalf("Decrypt: %v\n%s", err, enc)
			}
			m := decode(t, out)
			if m["kind"] != "Secret" || m["note_clear"] != "kept" || m["stringData"].(map[string]any)["user"] != "admin-plaintext" {
				t.Errorf("decrypted: %v", m)
			}
			// A value left in clear is in the MAC, unless mac_only_encrypted.
			if bytes.Contains(enc, []byte("note_clear: kept")) {
				_, _, err := sops.Decrypt(bytes.Replace(enc, []byte("note_clear: kept"), []byte("note_clear: changed"), 1), load(t, k))
				if macOnly := strings.Contains(c.config, "mac_only_encrypted"); macOnly != (err == nil) {
					t.Errorf("a clear value changed (mac_only_encrypted %v): %v", macOnly, err)
				}
			}
			out, errs := sops.Check(enc)
			if c.checkable != (out != nil) {
				t.Errorf("Check: output %v, problems %v", out != nil, errs)
			}
		})
	}
}

// TestDecryptMultiDocument: sops writes its block into every document of a
// multi-document file and covers them all with one MAC.
func TestDecryptMultiDocument(t *testing.T) {
	k := sopstest.NewKey(t, t.TempDir())
	two := "apiVersion: v1\nkind: Secret\nmetadata:\n  name: a\ndata:\n  x: eA==\n---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: b\nstringData:\n  y: second-plaintext\n"
	enc := sopstest.Encrypt(t, two, k.Recipient)
	if bytes.Count(enc, []byte("\nsops:")) != 2 {
		t.Fatalf("expected a sops block per document:\n%s", enc)
	}
	out, _, err := sops.Decrypt(enc, load(t, k))
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(out))
	var docs []map[string]any
	for {
		var m map[string]any
		if dec.Decode(&m) != nil {
			break
		}
		docs = append(docs, m)
	}
	if len(docs) != 2 || docs[0]["data"].(map[string]any)["x"] != "eA==" || docs[1]["stringData"].(map[string]any)["y"] != "second-plaintext" || docs[1]["sops"] != nil {
		t.Errorf("documents %v", docs)
	}
	// The MAC covers the second document too.
	tampered := bytes.Replace(enc, []byte("name: b"), []byte("name: c"), 1)
	if _, _, err := sops.Decrypt(tampered, load(t, k)); err == nil || !strings.Contains(err.Reason, "MAC does not match") {
		t.Errorf("a change in the second document: %v", err)
	}
	if _, errs := sops.Check(enc); len(errs) > 0 {
		t.Errorf("Check: %v", errs)
	}
}

func TestDecryptRefused(t *testing.T) {
	dir := t.TempDir()
	k := sopstest.NewKey(t, dir)
	other := sopstest.NewKey(t, dir)
	enc := string(sopstest.Encrypt(t, secret, k.Recipient))
	encLine := func(prefix string) int {
		for i, l := range strings.Split(enc, "\n") {
			if strings.HasPrefix(strings.TrimSpace(l), prefix) {
				return i + 1
			}
		}
		t.Fatalf("no line %q", prefix)
		return 0
	}
	// Tampering: a ciphertext byte, an encrypted value moved to another
	// key, a clear value changed (only the MAC covers it).
	userValue := strings.Fields(strings.Split(enc, "\n")[encLine("user:")-1])[1]
	passValue := strings.Fields(strings.Split(enc, "\n")[encLine("password:")-1])[1]
	i := strings.Index(userValue, "data:") + len("data:")
	c := byte('A')
	if userValue[i] == 'A' {
		c = 'B'
	}
	flipped := userValue[:i] + string(c) + userValue[i+1:]
	cases := []struct {
		name, file string
		ids        *sops.Identities
		line       int
		want       string
	}{
		{"no key", enc, nil, encLine("age:"), "no age key is configured; the file is encrypted for " + k.Recipient + "; set --sops-age-key-file"},
		{"wrong key", enc, load(t, other), encLine("age:"), "no age identity of " + other.File + " matches the recipients " + k.Recipient + "; set --sops-age-key-file"},
		{"ciphertext", strings.Replace(enc, userValue, flipped, 1), load(t, k), encLine("user:"), "cannot decrypt stringData.user: the ciphertext or its key path was modified"},
		{"moved value", strings.Replace(enc, passValue, userValue, 1), load(t, k), encLine("password:"), "cannot decrypt data.password: the ciphertext or its key path was modified"},
		{"clear value", strings.Replace(enc, "name: db", "name: dc", 1), load(t, k), encLine("mac:"), "the MAC does not match the file's contents"},
		{"no mac", strings.Replace(enc, "    mac: ", "    nomac: ", 1), load(t, k), encLine("sops:"), "sops.mac is missing"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out, _, err := sops.Decrypt([]byte(c.file), c.ids)
			if err == nil {
				t.Fatalf("decrypted:\n%s", out)
			}
			if err.Line != c.line || !strings.Contains(err.Reason, c.want) {
				t.Errorf("got %v, want line %d: …%s…", err, c.line, c.want)
			}
			if strings.Contains(err.Error(), "plaintext") || strings.Contains(err.Error(), "aHVudGVy") {
				t.Errorf("the error shows plaintext: %v", err)
			}
		})
	}
}

// TestAliasBomb: aliases that would expand to billions of values are
// refused, not walked.
func TestAliasBomb(t *testing.T) {
	bomb := "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
	prev := "a"
	for _, n := range []string{"b", "c", "d", "e", "f", "g", "h", "i"} {
		bomb += n + ": &" + n + " [*" + prev + ", *" + prev + ", *" + prev + ", *" + prev + ", *" + prev + ", *" + prev + ", *" + prev + ", *" + prev + ", *" + prev + ", *" + prev + "]\n"
		prev = n
	}
	k := sopstest.NewKey(t, t.TempDir())
	enc := sopstest.Encrypt(t, "x: y\n", k.Recipient)
	data := append([]byte(bomb), enc...)
	_, _, err := sops.Decrypt(data, load(t, k))
	if err == nil || !strings.Contains(err.Reason, "YAML aliases") {
		t.Errorf("Decrypt: %v", err)
	}
	if _, errs := sops.Check(data); len(errs) == 0 || !strings.Contains(errs[len(errs)-1].Reason, "YAML aliases") {
		t.Errorf("Check: %v", errs)
	}
}

func TestLoadIdentities(t *testing.T) {
	dir := t.TempDir()
	k := sopstest.NewKey(t, dir)
	if _, err := sops.LoadIdentities(k.File); err != nil {
		t.Fatal(err)
	}
	bad := dir + "/bad.txt"
	os.WriteFile(bad, []byte("AGE-SECRET-KEY-1NOTAKEY\n"), 0o600)
	if _, err := sops.LoadIdentities(bad); err == nil || !strings.Contains(err.Error(), "age-keygen") {
		t.Errorf("a bad key file: %v", err)
	}
	if _, err := sops.LoadIdentities(dir + "/missing"); err == nil {
		t.Error("a missing key file was accepted")
	}
}

func TestCheck(t *testing.T) {
	k := sopstest.NewKey(t, t.TempDir())
	enc := string(sopstest.Encrypt(t, secret, k.Recipient))
	out, errs := sops.Check([]byte(enc))
	if len(errs) > 0 {
		t.Fatalf("Check: %v", errs)
	}
	m := decode(t, out)
	if _, ok := m["sops"]; ok || m["kind"] != "Secret" || m["data"].(map[string]any)["password"] != "" || m["stringData"].(map[string]any)["port"] != 0 {
		t.Errorf("Check's output: %v", m)
	}
	line := func(file, prefix string) int {
		for i, l := range strings.Split(file, "\n") {
			if strings.HasPrefix(strings.TrimSpace(l), prefix) {
				return i + 1
			}
		}
		return -1
	}
	cases := []struct {
		name, file string
		line       int
		want       string
	}{
		{"plain value", strings.Replace(enc, "user: ENC[", "user: X", 1), line(enc, "user:"), "stringData.user: not an encrypted value"},
		{"no version", strings.Replace(enc, "    version: ", "    versio: ", 1), line(enc, "sops:"), "sops.version is missing"},
		{"bad time", strings.Replace(enc, "lastmodified: \"", "lastmodified: \"yesterday", 1), line(enc, "lastmodified:"), "not an RFC 3339 time"},
		{"bad mac", strings.Replace(enc, "mac: ENC[", "mac: XNC[", 1), line(enc, "mac:"), "sops.mac: not an encrypted value"},
		{"bad recipient", strings.Replace(enc, "recipient: age1", "recipient: age2", 1), line(enc, "- enc:"), "is not an age X25519 recipient"},
		{"no age", strings.Replace(enc, "    age:", "    pgp:", 1), line(enc, "sops:"), "encrypted for pgp only; Flotilla decrypts with age"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, errs := sops.Check([]byte(c.file))
			found := false
			for _, e := range errs {
				if e.Line == c.line && strings.Contains(e.Reason, c.want) {
					found = true
				}
			}
			if !found {
				t.Errorf("got %v, want line %d: …%s…", errs, c.line, c.want)
			}
		})
	}
}
