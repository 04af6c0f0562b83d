package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/flotilla-dev/flotilla/gitsync"
	"github.com/flotilla-dev/flotilla/gitsync/sops/sopstest"
)

// TestGitFlags: up and server take the same Git credential and trust
// flags, and none of them takes a secret itself (only files).
func TestGitFlags(t *testing.T) {
	for _, cmd := range []string{"up", "server"} {
		c := newUpCommand()
		if cmd == "server" {
			c = newServerCommand(&globalFlags{})
		}
		for _, name := range []string{"git-username", "git-password-file", "git-ssh-key-file", "git-known-hosts-file",
			"allow-history-rewrite", "verify-signatures", "trusted-keys-file", "sops-age-key-file"} {
			if c.Flags().Lookup(name) == nil {
				t.Errorf("%s has no --%s", cmd, name)
			}
		}
		for _, secret := range []string{"git-password", "git-token", "git-ssh-key", "sops-age-key"} {
			if c.Flags().Lookup(secret) != nil {
				t.Errorf("%s takes a secret on the command line: --%s", cmd, secret)
			}
		}
	}
}

func TestGitOptionsConfig(t *testing.T) {
	var c gitsync.Config
	if err := (&gitOptions{verifySignatures: true}).config(&c); err == nil || !strings.Contains(err.Error(), "--trusted-keys-file") {
		t.Errorf("--verify-signatures alone: %v", err)
	}
	keys := filepath.Join(t.TempDir(), "allowed_signers")
	if err := os.WriteFile(keys, []byte("dev@example.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOPpTkWvDRUqJv2w1yPLiXm3Lk/N6z34e5oV6l0jY3Aw\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := (&gitOptions{trustedKeysFiles: []string{keys}}).config(&c); err == nil || !strings.Contains(err.Error(), "--verify-signatures") {
		t.Errorf("--trusted-keys-file alone: %v", err)
	}
	o := &gitOptions{verifySignatures: true, trustedKeysFiles: []string{keys}, passwordFile: "/run/secrets/token", allowHistoryRewrite: true}
	if err := o.config(&c); err != nil {
		t.Fatal(err)
	}
	if !c.VerifySignatures || c.TrustedKeys.Empty() || c.PasswordFile != "/run/secrets/token" || !c.AllowHistoryRewrite {
		t.Errorf("config = %+v", c)
	}
}

// TestSOPSKeyFlag: --sops-age-key-file is read at start; a file that is
// not an age key stops the start naming the flag.
func TestSOPSKeyFlag(t *testing.T) {
	dir := t.TempDir()
	k := sopstest.NewKey(t, dir)
	var c gitsync.Config
	if err := (&gitOptions{sopsAgeKeyFile: k.File}).config(&c); err != nil || c.SOPSIdentities == nil {
		t.Fatalf("config = %v, identities %v", err, c.SOPSIdentities)
	}
	bad := filepath.Join(dir, "bad")
	if err := os.WriteFile(bad, []byte("not a key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{bad, filepath.Join(dir, "missing")} {
		if err := (&gitOptions{sopsAgeKeyFile: f}).config(&c); err == nil || !strings.Contains(err.Error(), "--sops-age-key-file") {
			t.Errorf("%s: %v", f, err)
		}
	}
}
