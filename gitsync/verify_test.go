package gitsync

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"

	"github.com/flotilla-dev/flotilla/schema"
)

// The signature tests sign with the real tools: git commit -S with gpg (a
// throwaway GNUPGHOME and a key made with --quick-gen-key), and with
// git's gpg.format=ssh and an ssh-keygen key.

// cliRepo commits to a bare repository with the git CLI, signing with the
// config and environment it holds.
type cliRepo struct {
	t      testing.TB
	work   string
	config []string // -c pairs
	env    []string
}

func newCLIRepo(t testing.TB, bare string, env []string, config ...string) *cliRepo {
	t.Helper()
	s := &cliRepo{t: t, work: filepath.Join(t.TempDir(), "work"), config: config, env: env}
	s.git(t.TempDir(), "clone", "-q", bare, s.work)
	return s
}

func (s *cliRepo) git(dir string, args ...string) string {
	s.t.Helper()
	full := []string{"-c", "user.name=Signer", "-c", "user.email=signer@example.com", "-c", "init.defaultBranch=main"}
	for _, c := range s.config {
		full = append(full, "-c", c)
	}
	cmd := exec.Command("git", append(full, args...)...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), append([]string{"GIT_CONFIG_NOSYSTEM=1", "HOME=" + s.t.TempDir()}, s.env...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		s.t.Fatalf("git %v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

// commit writes files, commits (signed with sign), pushes main, and
// returns the commit.
func (s *cliRepo) commit(sign bool, files map[string]string) string {
	s.t.Helper()
	s.git(s.work, "pull", "-q", "--ff-only", "origin", "main") // on top of what others pushed
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(s.work, name), []byte(content), 0o644); err != nil {
			s.t.Fatal(err)
		}
	}
	s.git(s.work, "add", "-A")
	args := []string{"commit", "-q", "--allow-empty", "-m", "change"}
	if sign {
		args = append(args, "-S")
	}
	s.git(s.work, args...)
	s.git(s.work, "push", "-q", "origin", "HEAD:main")
	return s.git(s.work, "rev-parse", "HEAD")
}

// gpgKey makes an OpenPGP signing key in a throwaway GNUPGHOME and
// returns that home, the key's fingerprint and its armored public key.
func gpgKey(t *testing.T, email string) (home, fpr, armored string) {
	t.Helper()
	if _, err := exec.LookPath("gpg"); err != nil {
		t.Skip("gpg not installed")
	}
	home, err := os.MkdirTemp("", "gpg") // short: gpg-agent's socket path is limited
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		kill := exec.Command("gpgconf", "--kill", "gpg-agent")
		kill.Env = append(os.Environ(), "GNUPGHOME="+home)
		_ = kill.Run()
		_ = os.RemoveAll(home)
	})
	if err := os.Chmod(home, 0o700); err != nil {
		t.Fatal(err)
	}
	gpg := func(args ...string) string {
		t.Helper()
		cmd := exec.Command("gpg", append([]string{"--batch", "--quiet"}, args...)...)
		cmd.Env = append(os.Environ(), "GNUPGHOME="+home)
		out, err := cmd.Output()
		if err != nil {
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				t.Fatalf("gpg %v: %v\n%s", args, err, ee.Stderr)
			}
			t.Fatalf("gpg %v: %v", args, err)
		}
		return string(out)
	}
	gpg("--passphrase", "", "--quick-gen-key", "Signer <"+email+">", "ed25519", "sign", "never")
	for _, line := range strings.Split(gpg("--with-colons", "--list-keys", email), "\n") {
		if f := strings.Split(line, ":"); f[0] == "fpr" && fpr == "" {
			fpr = f[9]
		}
	}
	return home, fpr, gpg("--armor", "--export", email)
}

func writeFile(t *testing.T, data string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "keys")
	if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func trusted(t *testing.T, data string) func(*Config) {
	keys, err := LoadTrustedKeys(writeFile(t, data))
	if err != nil {
		t.Fatal(err)
	}
	return func(c *Config) { c.VerifySignatures = true; c.TrustedKeys = keys }
}

// assertSignatureRefused checks a refusal that says want and keeps live.
func assertSignatureRefused(t *testing.T, h *harness, head, live, want string) {
	t.Helper()
	body, err := h.sync()
	if !errors.Is(err, ErrRefused) || body.Result != schema.SyncRefused {
		t.Fatalf("sync = %s, %v; want refused", body.Result, err)
	}
	st := h.status()
	if !strings.Contains(st.Message, want) || st.LastAppliedCommit != live || st.LastAttemptedCommit != head {
		t.Errorf("status: %q, live %s; want it to say %q, %s live", st.Message, short(st.LastAppliedCommit), want, short(live))
	}
	if c := condition(st, ConditionStalled); c == nil || c.Reason != ReasonSignatureRefused {
		t.Errorf("Stalled = %+v, want %s", c, ReasonSignatureRefused)
	}
}

// assertTamperedRefused checks that the signed commit live, changed after
// signing (its message), no longer verifies.
func assertTamperedRefused(t *testing.T, h *harness, live, want string) {
	t.Helper()
	c, err := h.syncer.fetch.repo.CommitObject(plumbing.NewHash(live))
	if err != nil {
		t.Fatal(err)
	}
	if h.syncer.cfg.TrustedKeys.verifyCommit(c) != nil {
		t.Fatalf("the signed commit %s does not verify", short(live))
	}
	c.Message = "changed after signing\n"
	if msg := h.syncer.cfg.TrustedKeys.verifyCommit(c); msg == nil || !strings.Contains(*msg, want) {
		t.Errorf("a changed commit: %v; want %q", msg, want)
	}
}

// TestVerifyOpenPGPSignatures: with VerifySignatures, a head signed by a
// trusted OpenPGP key applies; an unsigned head and one signed by an
// untrusted key are refused whole, and the live commit keeps running.
func TestVerifyOpenPGPSignatures(t *testing.T) {
	home, fpr, pub := gpgKey(t, "trusted@example.com")
	otherHome, otherFpr, _ := gpgKey(t, "other@example.com")
	h := newHarness(t, trusted(t, pub))
	h.remote.commit("seed", nil) // an unsigned root, never synced

	good := newCLIRepo(t, h.remote.bare, []string{"GNUPGHOME=" + home}, "user.signingkey="+fpr, "gpg.program=gpg")
	live := good.commit(true, map[string]string{"a.yaml": configMap("a", "", "1")})
	if body, err := h.sync(); err != nil || body.LastAppliedCommit != live {
		t.Fatalf("signed commit: %+v, %v", body, err)
	}
	h.get("configmaps", "default", "a")
	assertTamperedRefused(t, h, live, "bad signature by key "+fpr)

	unsigned := good.commit(false, map[string]string{"b.yaml": configMap("b", "", "1")})
	assertSignatureRefused(t, h, unsigned, live, "commit "+short(unsigned)+" is not signed")
	h.absent("configmaps", "default", "b")

	bad := newCLIRepo(t, h.remote.bare, []string{"GNUPGHOME=" + otherHome}, "user.signingkey="+otherFpr, "gpg.program=gpg")
	untrusted := bad.commit(true, map[string]string{"c.yaml": configMap("c", "", "1")})
	assertSignatureRefused(t, h, untrusted, live, "commit "+short(untrusted)+" is signed by key "+otherFpr+", which is not trusted")
	h.absent("configmaps", "default", "c")

	next := good.commit(true, map[string]string{"d.yaml": configMap("d", "", "1")})
	if body, err := h.sync(); err != nil || body.LastAppliedCommit != next {
		t.Fatalf("signed commit after refusals: %+v, %v", body, err)
	}
}

// TestVerifySSHSignatures: the same with git's SSH signatures and an
// allowed_signers file.
func TestVerifySSHSignatures(t *testing.T) {
	// Real ssh-keygen where it runs; else keys made in Go and the test
	// binary as git's gpg.ssh.program (see TestMain).
	var env []string
	var config []string
	key := func(name string) (priv, pub string) {
		priv = filepath.Join(t.TempDir(), name)
		if !opensshWorks() {
			_, pub = newSSHKey(t, priv, name)
			return priv, pub
		}
		if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", priv).CombinedOutput(); err != nil {
			t.Fatalf("ssh-keygen: %v\n%s", err, out)
		}
		data, err := os.ReadFile(priv + ".pub")
		if err != nil {
			t.Fatal(err)
		}
		return priv, strings.TrimSpace(string(data))
	}
	if !opensshWorks() {
		t.Log("OpenSSH's ssh-keygen does not run here: signing with the test binary as gpg.ssh.program")
		env = []string{"FLOTILLA_TEST_AS=ssh-keygen"}
		config = []string{"gpg.ssh.program=" + os.Args[0]}
	}
	goodKey, goodPub := key("good")
	otherKey, _ := key("other")
	h := newHarness(t, trusted(t, "# who may sign\nsigner@example.com namespaces=\"git\" "+goodPub+"\n"))
	h.remote.commit("seed", nil)

	good := newCLIRepo(t, h.remote.bare, env, append(config, "gpg.format=ssh", "user.signingkey="+goodKey)...)
	live := good.commit(true, map[string]string{"a.yaml": configMap("a", "", "1")})
	if body, err := h.sync(); err != nil || body.LastAppliedCommit != live {
		t.Fatalf("signed commit: %+v, %v", body, err)
	}
	assertTamperedRefused(t, h, live, "bad signature by key SHA256:")
	bad := newCLIRepo(t, h.remote.bare, env, append(config, "gpg.format=ssh", "user.signingkey="+otherKey)...)
	untrusted := bad.commit(true, map[string]string{"c.yaml": configMap("c", "", "1")})
	assertSignatureRefused(t, h, untrusted, live, "commit "+short(untrusted)+" is signed by key SHA256:")
	unsigned := bad.commit(false, nil)
	assertSignatureRefused(t, h, unsigned, live, "commit "+short(unsigned)+" is not signed")
}

func TestLoadTrustedKeysErrors(t *testing.T) {
	if _, err := LoadTrustedKeys(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("a missing file was accepted")
	}
	f := writeFile(t, "not a key at all\n")
	if _, err := LoadTrustedKeys(f); err == nil || !strings.Contains(err.Error(), f) || !strings.Contains(err.Error(), "line 1") {
		t.Errorf("err = %v; want it to name the file and line", err)
	}
	if _, err := LoadTrustedKeys(writeFile(t, "# nothing\n")); err == nil || !strings.Contains(err.Error(), "no trusted key") {
		t.Errorf("err = %v; want no trusted key", err)
	}
	if _, err := New(Config{URL: "/x", WorkDir: t.TempDir(), Store: nopStore{}, Loader: yamlLoader{}, VerifySignatures: true}); err == nil || !strings.Contains(err.Error(), "--trusted-keys-file") {
		t.Errorf("VerifySignatures without keys: %v", err)
	}
}

// FuzzAllowedSigners: any allowed_signers file is read or refused with
// an error, never a panic.
func FuzzAllowedSigners(f *testing.F) {
	f.Add("dev@example.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOPpTkWvDRUqJv2w1yPLiXm3Lk/N6z34e5oV6l0jY3Aw\n")
	f.Add("a,b namespaces=\"git,file\" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOPpTkWvDRUqJv2w1yPLiXm3Lk/N6z34e5oV6l0jY3Aw c\n# x\n")
	f.Add("x cert-authority ssh-rsa AAAA\n")
	f.Fuzz(func(t *testing.T, data string) {
		signers, err := parseAllowedSigners([]byte(data))
		if err == nil {
			for _, s := range signers {
				if s.key == nil {
					t.Fatal("a signer without a key")
				}
			}
		}
	})
}

// FuzzCommitSignature: whatever a commit's gpgsig header holds, checking
// it refuses the commit with a message, never a panic or an acceptance.
func FuzzCommitSignature(f *testing.F) {
	keys, err := parseAllowedSigners([]byte("dev@example.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOPpTkWvDRUqJv2w1yPLiXm3Lk/N6z34e5oV6l0jY3Aw\n"))
	if err != nil {
		f.Fatal(err)
	}
	tk := &TrustedKeys{ssh: keys}
	f.Add("-----BEGIN PGP SIGNATURE-----\n\niQ==\n-----END PGP SIGNATURE-----\n")
	f.Add("-----BEGIN SSH SIGNATURE-----\nU1NIU0lH\n-----END SSH SIGNATURE-----\n")
	f.Add("")
	f.Fuzz(func(t *testing.T, sig string) {
		c := &object.Commit{Message: "m\n", PGPSignature: sig}
		if tk.verifyCommit(c) == nil {
			t.Fatalf("a made-up signature was accepted: %q", sig)
		}
	})
}
