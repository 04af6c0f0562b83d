package sops_test

import (
	"bytes"
	"os"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/flotilla-dev/flotilla/gitsync/sops"
)

// testdata/secret.enc.yaml was encrypted once by sops v3.13.3 for
// testdata/age.key (a key for tests only), so that these run without the
// sops command too.

func fixture(t testing.TB) ([]byte, *sops.Identities) {
	t.Helper()
	data, err := os.ReadFile("testdata/secret.enc.yaml")
	if err != nil {
		t.Fatal(err)
	}
	ids, err := sops.LoadIdentities("testdata/age.key")
	if err != nil {
		t.Fatal(err)
	}
	return data, ids
}

func TestFixture(t *testing.T) {
	data, ids := fixture(t)
	out, _, err := sops.Decrypt(data, ids)
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
	if len(docs) != 2 {
		t.Fatalf("documents: %v", docs)
	}
	sd := docs[0]["stringData"].(map[string]any)
	if docs[0]["data"].(map[string]any)["password"] != "Zml4dHVyZS1wYXNzd29yZA==" || sd["user"] != "fixture-user" ||
		sd["config"] != "host=db\nport=5432\n" || docs[1]["stringData"].(map[string]any)["key"] != "second-value" {
		t.Errorf("decrypted: %v", docs)
	}
	if _, errs := sops.Check(data); len(errs) > 0 {
		t.Errorf("Check: %v", errs)
	}
}

// FuzzSOPS: no input makes Decrypt or Check panic, and what they return
// keeps the input's lines.
func FuzzSOPS(f *testing.F) {
	data, ids := fixture(f)
	f.Add(data)
	f.Add(bytes.Replace(data, []byte("fixture-user"), []byte("x"), 1))
	f.Add([]byte("sops:\n  mac: ENC[AES256_GCM,data:AA==,iv:AA==,tag:AAAAAAAAAAAAAAAAAAAAAA==,type:str]\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		lines := bytes.Count(in, []byte("\n"))
		if out, _, err := sops.Decrypt(in, ids); err == nil && bytes.Count(out, []byte("\n")) != lines {
			t.Errorf("Decrypt changed the number of lines")
		}
		if out, errs := sops.Check(in); len(errs) == 0 && out != nil && bytes.Count(out, []byte("\n")) != lines {
			t.Errorf("Check changed the number of lines")
		}
	})
}
