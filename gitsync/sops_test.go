package gitsync

import (
	"bytes"
	"encoding/base64"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/flotilla-dev/flotilla/gitsync/sops"
	"github.com/flotilla-dev/flotilla/gitsync/sops/sopstest"
	"github.com/flotilla-dev/flotilla/schema"
)

// sopsSecret is a Secret whose values are encrypted by the real sops.
func sopsSecret(password, token string) string {
	return "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\n  namespace: default\ntype: Opaque\ndata:\n  password: " +
		base64.StdEncoding.EncodeToString([]byte(password)) + "\nstringData:\n  token: " + token + "\n"
}

// noPlaintext fails if any object of the Git repository at dir, or any of
// its raw files, holds one of the secrets.
func noPlaintext(t *testing.T, dir string, secrets ...string) {
	t.Helper()
	cmd := exec.Command("git", "cat-file", "--batch-all-objects", "--batch")
	cmd.Dir = dir
	objs, err := cmd.Output()
	if err != nil {
		t.Fatalf("git cat-file in %s: %v", dir, err)
	}
	if len(objs) == 0 {
		t.Fatalf("no objects in %s", dir)
	}
	var raw bytes.Buffer
	err = filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err != nil || !info.Mode().IsRegular() {
			return err
		}
		b, err := os.ReadFile(p)
		raw.Write(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range secrets {
		if bytes.Contains(objs, []byte(s)) || bytes.Contains(raw.Bytes(), []byte(s)) {
			t.Errorf("%s holds the plaintext %q", dir, s)
		}
	}
}

// TestSOPSSecret: a Secret encrypted with sops for the server's age key is
// decrypted into the store, while the repository and the clone hold only
// ciphertext; a commit that cannot be decrypted (another key, a file
// changed by hand, no key) is refused, located, and the last good commit
// stays live.
func TestSOPSSecret(t *testing.T) {
	v, err := schema.NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	keys := t.TempDir()
	key, other := sopstest.NewKey(t, keys), sopstest.NewKey(t, keys)
	ids, err := sops.LoadIdentities(key.File)
	if err != nil {
		t.Fatal(err)
	}
	var workDir string
	h := newHarness(t, func(c *Config) { c.Loader, c.SOPSIdentities, workDir = v, ids, c.WorkDir })

	const password, token = "pw-Plaintext-7f3a9", "tok-Plaintext-c41d"
	enc := string(sopstest.Encrypt(t, sopsSecret(password, token), key.Recipient))
	// .sops.yaml and hidden directories are not manifests: not read,
	// not decrypted.
	good := h.remote.commit("secret", map[string]string{"secret.yaml": enc, "cm.yaml": configMap("app", "default", "v1"),
		".sops.yaml":         "creation_rules:\n  - path_regex: .*\\.yaml$\n    encrypted_regex: ^(data|stringData)$\n    age: " + key.Recipient + "\n",
		".private/team.yaml": string(sopstest.Encrypt(t, sopsSecret("x", "y"), other.Recipient))})
	body, err := h.sync()
	if err != nil || body.Result != schema.SyncApplied || body.LastAppliedCommit != good {
		t.Fatalf("sync = %+v, %v", body, err)
	}
	sec := h.get("secrets", "default", "db").(*corev1.Secret)
	if string(sec.Data["password"]) != password || sec.StringData["token"] != token {
		t.Errorf("the Secret in the store: data %q, stringData %q", sec.Data, sec.StringData)
	}
	secrets := []string{password, token, base64.StdEncoding.EncodeToString([]byte(password))}
	noPlaintext(t, h.remote.bare, secrets...)
	noPlaintext(t, workDir, secrets...)

	line := func(file, prefix string) int {
		for i, l := range strings.Split(file, "\n") {
			if strings.HasPrefix(strings.TrimSpace(l), prefix) {
				return i + 1
			}
		}
		t.Fatalf("no line %q in\n%s", prefix, file)
		return 0
	}
	// A ciphertext byte changed: AES-GCM's tag no longer matches.
	tokenLine := strings.Split(enc, "\n")[line(enc, "token:")-1]
	i := strings.Index(tokenLine, "data:") + len("data:")
	flipped := tokenLine[:i] + map[bool]string{true: "B", false: "A"}[tokenLine[i] == 'A'] + tokenLine[i+1:]
	refused := []struct {
		name, file, at, want string
	}{
		{"another key", string(sopstest.Encrypt(t, sopsSecret(password, token), other.Recipient)), "age:",
			"cannot decrypt: no age identity of " + key.File + " matches the recipients " + other.Recipient + "; set --sops-age-key-file"},
		{"changed by hand", strings.Replace(enc, "namespace: default", "namespace: default\n    labels: {evil: \"1\"}", 1), "mac:",
			"the MAC does not match the file's contents"},
		{"ciphertext changed", strings.Replace(enc, tokenLine, flipped, 1), "token:",
			"cannot decrypt stringData.token: the ciphertext or its key path was modified"},
	}
	for _, c := range refused {
		t.Run(c.name, func(t *testing.T) {
			wantLine := line(c.file, c.at)
			bad := h.remote.commit(c.name, map[string]string{"secret.yaml": c.file, "cm.yaml": configMap("app", "default", "v2")})
			body, err := h.sync()
			if !errors.Is(err, ErrRefused) || body.Result != schema.SyncRefused || body.LastAttemptedCommit != bad || body.LastAppliedCommit != good {
				t.Fatalf("sync = %+v, %v", body, err)
			}
			if r := conditionReason(body, ConditionStalled); r != ReasonDecryptionFailed {
				t.Errorf("reason %q", r)
			}
			ps := schema.Problems(body.Problems).Errors()
			if len(ps) != 1 || ps[0].File != "secret.yaml" || ps[0].Line != wantLine || !strings.Contains(ps[0].Reason, c.want) {
				t.Errorf("problems %v, want secret.yaml:%d: …%s…", ps, wantLine, c.want)
			}
			if cm := h.get("configmaps", "default", "app").(*corev1.ConfigMap); cm.Data["key"] != "v1" {
				t.Error("the refused commit changed the ConfigMap")
			}
			if s := h.get("secrets", "default", "db").(*corev1.Secret); string(s.Data["password"]) != password {
				t.Error("the refused commit changed the Secret")
			}
		})
	}

	// A decrypted manifest that is invalid is refused without its values
	// in the status.
	t.Run("invalid plaintext", func(t *testing.T) {
		broken := strings.Replace(sopsSecret(password, token), "data:\n  password: ", "data:\n  password: not-base64-"+password+"!", 1)
		h.remote.commit("invalid", map[string]string{"secret.yaml": string(sopstest.Encrypt(t, broken, key.Recipient))})
		body, err := h.sync()
		if !errors.Is(err, ErrRefused) || body.Result != schema.SyncRefused || body.LastAppliedCommit != good {
			t.Fatalf("sync = %+v, %v", body, err)
		}
		all := schema.Problems(body.Problems).Err().Error() + body.Message
		for _, c := range body.Conditions {
			all += c.Message
		}
		t.Logf("problems: %v", body.Problems)
		if strings.Contains(all, password) || strings.Contains(err.Error(), password) {
			t.Errorf("the status shows the plaintext: %s", all)
		}
		if ps := schema.Problems(body.Problems).Errors(); len(ps) == 0 || ps[0].File != "secret.yaml" || ps[0].Line == 0 {
			t.Errorf("problems %v", ps)
		}
	})

	t.Run("json", func(t *testing.T) {
		js := sopstest.EncryptAs(t, sopsSecret(password, token), "json", key.Recipient)
		h.remote.commit("json", map[string]string{"secret.yaml": enc, "secret.json": string(js)})
		body, err := h.sync()
		ps := schema.Problems(body.Problems).Errors()
		if !errors.Is(err, ErrRefused) || body.LastAppliedCommit != good || len(ps) != 1 || ps[0].File != "secret.json" ||
			!strings.Contains(ps[0].Reason, "SOPS-encrypted json files are not supported; encrypt the manifest as YAML") {
			t.Fatalf("sync = %+v, %v", body, err)
		}
	})

	t.Run("no key", func(t *testing.T) {
		h2 := newHarness(t, func(c *Config) { c.Loader = v })
		h2.remote.commit("secret", map[string]string{"secret.yaml": enc})
		body, err := h2.sync()
		if !errors.Is(err, ErrRefused) || body.LastAppliedCommit != "" {
			t.Fatalf("sync = %+v, %v", body, err)
		}
		ps := schema.Problems(body.Problems).Errors()
		want := "cannot decrypt: no age key is configured; the file is encrypted for " + key.Recipient + "; set --sops-age-key-file"
		if len(ps) != 1 || ps[0].Line != line(enc, "age:") || !strings.Contains(ps[0].Reason, want) {
			t.Errorf("problems %v, want …%s…", ps, want)
		}
		h2.absent("secrets", "default", "db")
	})
}
