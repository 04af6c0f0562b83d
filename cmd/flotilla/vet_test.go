package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/flotilla-dev/flotilla/gitsync/sops/sopstest"
)

// TestVetSOPSSecret: `flotilla vet` checks a SOPS-encrypted Secret without
// the key: a well-formed one passes, a broken sops block or a value left
// in clear is an error at its line, and the rest of the manifest is still
// checked by the schema.
func TestVetSOPSSecret(t *testing.T) {
	dir := t.TempDir()
	k := sopstest.NewKey(t, dir)
	enc := string(sopstest.Encrypt(t, "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\n  namespace: default\ntype: Opaque\ndata:\n  password: aHVudGVyMg==\nstringData:\n  user: admin\n", k.Recipient))
	vet := func(content string) (string, int) {
		t.Helper()
		file := filepath.Join(dir, "secret.yaml")
		if err := os.WriteFile(file, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		root := newRootCommand()
		var out bytes.Buffer
		root.SetArgs([]string{"vet", file})
		root.SetOut(&out)
		root.SetErr(&out)
		err := root.ExecuteContext(context.Background())
		var ee *exitError
		switch {
		case err == nil:
			return out.String(), 0
		case errors.As(err, &ee):
			return out.String(), ee.code
		}
		t.Fatalf("vet: %v", err)
		return "", 0
	}
	lineOf := func(file, prefix string) string {
		for i, l := range strings.Split(file, "\n") {
			if strings.HasPrefix(strings.TrimSpace(l), prefix) {
				return "secret.yaml:" + strconv.Itoa(i+1) + ":"
			}
		}
		t.Fatalf("no line %q", prefix)
		return ""
	}
	if out, code := vet(enc); code != 0 {
		t.Fatalf("a valid encrypted Secret: exit %d\n%s", code, out)
	}
	cases := []struct{ name, file, at, want string }{
		{"no mac", strings.Replace(enc, "    mac: ", "    mac_: ", 1), "sops:", "sops.mac is missing"},
		{"bad recipient", strings.Replace(enc, "recipient: age1", "recipient: age9", 1), "- enc:", "is not an age X25519 recipient"},
		{"clear value", strings.Replace(enc, "user: ENC[", "user: admin # ", 1), "user:", "stringData.user: not an encrypted value"},
		{"schema", strings.Replace(enc, "name: db", "name: Bad_Name", 1), "name:", "metadata.name"},
	}
	// Every problem is reported at once: the sops block's, a value's and
	// the schema's.
	all := strings.Replace(strings.Replace(strings.Replace(enc, "    mac: ", "    mac_: ", 1), "user: ENC[", "user: admin # ", 1), "name: db", "name: Bad_Name", 1)
	if out, code := vet(all); code != 1 || strings.Count(out, "secret.yaml:") != 3 {
		t.Errorf("three problems: exit %d\n%s", code, out)
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out, code := vet(c.file)
			at := lineOf(c.file, c.at)
			if code != 1 || !strings.Contains(out, at) || !strings.Contains(out, c.want) {
				t.Errorf("exit %d, output:\n%s\nwant %s …%s…", code, out, at, c.want)
			}
		})
	}
}
