// Package sopstest makes SOPS-encrypted fixtures for tests with the real
// sops command (hack/install-deps.sh installs it) and age keys in
// age-keygen's file format.
package sopstest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
)

// Key is an age key written to a file as age-keygen writes it.
type Key struct {
	File      string // the key file (SOPS_AGE_KEY_FILE format)
	Recipient string // its public key, age1…
}

// NewKey writes a new age key to a file in dir.
func NewKey(t testing.TB, dir string) Key {
	t.Helper()
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, fmt.Sprintf("age-%d.txt", time.Now().UnixNano()))
	text := fmt.Sprintf("# created: %s\n# public key: %s\n%s\n", time.Now().UTC().Format(time.RFC3339), id.Recipient(), id)
	if err := os.WriteFile(file, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return Key{File: file, Recipient: id.Recipient().String()}
}

// Binary is the sops command: on PATH or in $(go env GOPATH)/bin. Without
// it the test is skipped, or fails under CI (CI=true), where
// hack/install-deps.sh has installed it.
func Binary(t testing.TB) string {
	t.Helper()
	if p, err := exec.LookPath("sops"); err == nil {
		return p
	}
	if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		p := filepath.Join(strings.TrimSpace(string(out)), "bin", "sops")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("the sops command is missing: hack/install-deps.sh installs it")
	}
	t.Skip("the sops command is missing (hack/install-deps.sh installs it)")
	return ""
}

// Encrypt encrypts the YAML plaintext for the recipients with the real
// sops, as Flux's documentation does for Secrets:
// sops --encrypt --age R1,R2 --encrypted-regex '^(data|stringData)$'.
func Encrypt(t testing.TB, plaintext string, recipients ...string) []byte {
	t.Helper()
	return EncryptAs(t, plaintext, "yaml", recipients...)
}

// EncryptAs is Encrypt writing the encrypted file as outputType (yaml or
// json).
func EncryptAs(t testing.TB, plaintext, outputType string, recipients ...string) []byte {
	t.Helper()
	return EncryptWith(t, plaintext, "", "--age", strings.Join(recipients, ","),
		"--encrypted-regex", "^(data|stringData)$", "--input-type", "yaml", "--output-type", outputType)
}

// EncryptWith runs sops --encrypt with args on the YAML plaintext, with
// sopsYAML (when not "") as the .sops.yaml beside the file, and returns
// its output.
func EncryptWith(t testing.TB, plaintext, sopsYAML string, args ...string) []byte {
	t.Helper()
	dir := t.TempDir()
	in := filepath.Join(dir, "secret.yaml")
	if err := os.WriteFile(in, []byte(plaintext), 0o600); err != nil {
		t.Fatal(err)
	}
	if sopsYAML != "" {
		if err := os.WriteFile(filepath.Join(dir, ".sops.yaml"), []byte(sopsYAML), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(Binary(t), append(append([]string{"--encrypt"}, args...), in)...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "SOPS_AGE_KEY_FILE=/nonexistent")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("sops --encrypt: %v: %s", err, stderr.String())
	}
	return out
}
