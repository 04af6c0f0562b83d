package gitsync

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/flotilla-dev/flotilla/schema"
)

// TestCredentialSettingsChecked: credential files that do not fit the
// URL's scheme, or are missing, are refused at New, naming the flag.
func TestCredentialSettingsChecked(t *testing.T) {
	file := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(t.TempDir(), "missing")
	for _, tc := range []struct {
		name, url string
		c         Config
		want      string
	}{
		{"password for ssh", "ssh://git@example.com/r.git", Config{PasswordFile: file}, "--git-password-file are for http(s)://"},
		{"key for https", "https://example.com/r.git", Config{SSHKeyFile: file}, "--git-ssh-key-file and --git-known-hosts-file are for ssh://"},
		{"key for a local path", "/srv/git/r.git", Config{SSHKeyFile: file}, "are for ssh://"},
		{"user without password", "https://example.com/r.git", Config{Username: "u"}, "--git-username needs --git-password-file"},
		{"known hosts without key", "git@example.com:r.git", Config{KnownHostsFile: file}, "--git-known-hosts-file needs --git-ssh-key-file"},
		{"missing password file", "https://example.com/r.git", Config{PasswordFile: missing}, "--git-password-file: stat " + missing},
		{"missing key file", "ssh://example.com/r.git", Config{SSHKeyFile: missing}, "--git-ssh-key-file: stat " + missing},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.c
			c.URL, c.WorkDir, c.Store, c.Loader = tc.url, t.TempDir(), nopStore{}, yamlLoader{}
			if _, err := New(c); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New = %v; want an error saying %q", err, tc.want)
			}
		})
	}
}

// TestTokenRotatedInPlace: the password file is read at each fetch, so a
// token replaced in its file is used without a restart.
func TestTokenRotatedInPlace(t *testing.T) {
	repo := newHosted(t)
	h := newHarness(t, repo.httpConfig)
	if body, err := h.sync(); err != nil || body.LastAppliedCommit != repo.seed {
		t.Fatalf("first sync = %+v, %v", body, err)
	}
	rotated := randomHex(t)
	repo.http.accept.Store(&rotated) // the host now takes only the new token
	if body, _ := h.sync(); body.Result != schema.SyncFetchFailed {
		t.Fatalf("sync with the old token = %s, want FetchFailed", body.Result)
	}
	if err := os.WriteFile(repo.tokenFile, []byte(rotated+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if body, err := h.sync(); err != nil || body.LastAppliedCommit != repo.seed || h.status().Result != schema.SyncApplied {
		t.Fatalf("sync with the rotated token = %+v, %v", body, err)
	}
}
