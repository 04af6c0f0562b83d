package main

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flotilla-dev/flotilla/gitsync/sops/sopstest"
	"github.com/flotilla-dev/flotilla/schema"
)

// withSOPSKey gives `flotilla up` an age key (--sops-age-key-file) for
// checkSOPSSecret.
func withSOPSKey(t *testing.T, c *upCluster) sopstest.Key {
	k := sopstest.NewKey(t, t.TempDir())
	c.args = append(c.args, "--sops-age-key-file", k.File)
	return k
}

// checkSOPSSecret is issue 11's encrypted Secret in Git, through the real
// binary: a Secret encrypted by sops for the server's age key is decrypted
// into the pod (an env var from secretKeyRef and a secret volume), the
// repository and the server's clone hold only ciphertext, and a commit
// encrypted for another key is refused at its line while the Secret stays.
func checkSOPSSecret(t *testing.T, c *upCluster, key sopstest.Key, kubectl func(bool, ...string) string) {
	const password, token = "e2e-Pw-5b1c9e", "e2e-Tok-77d2a0"
	secret := func(pw string) string {
		return "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db-creds\ntype: Opaque\ndata:\n  password: " +
			base64.StdEncoding.EncodeToString([]byte(pw)) + "\nstringData:\n  token: " + token + "\n"
	}
	const pod = `apiVersion: v1
kind: Pod
metadata: {name: secret-reader}
spec:
  volumes: [{name: creds, secret: {secretName: db-creds}}]
  containers:
  - name: c
    image: localhost/busybox:latest
    command: [sh, -c, 'echo "pw=$PW"; echo "token=$(cat /creds/token)"; sleep 3600']
    env: [{name: PW, valueFrom: {secretKeyRef: {name: db-creds, key: password}}}]
    volumeMounts: [{name: creds, mountPath: /creds}]
`
	enc := string(sopstest.Encrypt(t, secret(password), key.Recipient))
	good := c.commitFiles("an encrypted secret", "sops", map[string]string{"secret.yaml": enc, "pod.yaml": pod})
	if st := c.waitAttempt(good, time.Minute); st.Result != schema.SyncApplied {
		t.Fatalf("commit %s: %s: %s %+v", good[:12], st.Result, st.Message, st.Problems)
	}
	c.eventually("the secret reader runs", 2*time.Minute, func() error {
		if out := kubectl(false, "get", "pod", "secret-reader", "-o", "jsonpath={.status.phase}"); out != "Running" {
			return fmt.Errorf("pod is %q", out)
		}
		return nil
	})
	c.eventually("the pod prints the decrypted secret", time.Minute, func() error {
		out := kubectl(false, "logs", "secret-reader")
		if !strings.Contains(out, "pw="+password) || !strings.Contains(out, "token="+token) {
			return fmt.Errorf("logs %q", out)
		}
		return nil
	})
	for _, dir := range []string{filepath.Join(c.dataDir, "repo"), filepath.Join(c.dataDir, "gitsync")} {
		gitHoldsNo(t, dir, password, token, base64.StdEncoding.EncodeToString([]byte(password)))
	}

	other := sopstest.NewKey(t, t.TempDir())
	bad := c.commitFiles("encrypted for another key", "sops", map[string]string{
		"secret.yaml": string(sopstest.Encrypt(t, secret("changed-pw"), other.Recipient)), "pod.yaml": pod})
	st := c.waitAttempt(bad, time.Minute)
	errs := schema.Problems(st.Problems).Errors()
	if st.Result != schema.SyncRefused || st.LastAppliedCommit != good || len(errs) != 1 || errs[0].File != "sops/secret.yaml" || errs[0].Line == 0 ||
		!strings.Contains(errs[0].Reason, "cannot decrypt: no age identity of "+key.File+" matches the recipients "+other.Recipient) {
		t.Fatalf("commit for another key: %s, live %s: %+v", st.Result, st.LastAppliedCommit, st.Problems)
	}
	if out := runCLI(t, c, "status"); !strings.Contains(out, "set --sops-age-key-file") {
		t.Errorf("flotilla status does not say what to do:\n%s", out)
	}
	if out := kubectl(false, "get", "secret", "db-creds", "-o", "jsonpath={.data.password}"); out != base64.StdEncoding.EncodeToString([]byte(password)) {
		t.Errorf("the refused commit changed the Secret: %q", out)
	}
	// Decrypted values are not in flotilla's own log.
	if data, err := os.ReadFile(filepath.Join(c.dataDir, "flotilla.log")); err == nil && (bytes.Contains(data, []byte(password)) || bytes.Contains(data, []byte(token))) {
		t.Error("flotilla's log holds a decrypted value")
	}
}

// gitHoldsNo fails if an object or a raw file of the Git repository at dir
// holds one of the strings.
func gitHoldsNo(t *testing.T, dir string, secrets ...string) {
	t.Helper()
	cmd := exec.Command("git", "cat-file", "--batch-all-objects", "--batch")
	cmd.Dir = dir
	objs, err := cmd.Output()
	if err != nil || len(objs) == 0 {
		t.Fatalf("git cat-file in %s: %v", dir, err)
	}
	var raw bytes.Buffer
	_ = filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err == nil && info.Mode().IsRegular() {
			b, _ := os.ReadFile(p)
			raw.Write(b)
		}
		return nil
	})
	for _, s := range secrets {
		if bytes.Contains(objs, []byte(s)) || bytes.Contains(raw.Bytes(), []byte(s)) {
			t.Errorf("%s holds the plaintext %q", dir, s)
		}
	}
}
