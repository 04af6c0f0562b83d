package gitsync

import (
	"encoding/json"
	"path"
	"sort"
	"strings"
	"testing/fstest"

	"github.com/flotilla-dev/flotilla/gitsync/sops"
	"github.com/flotilla-dev/flotilla/schema"
)

// ReasonDecryptionFailed: a SOPS-encrypted file of the commit cannot be
// decrypted (no key, another key, a modified file); as Flux's
// kustomize-controller says it.
const ReasonDecryptionFailed = "DecryptionFailed"

// decryptSOPS replaces, in fsys, every SOPS-encrypted YAML file with its
// plaintext, in memory only: the repository and the clone keep the
// ciphertext, and nothing decrypted is written to disk here. Lines stay
// where they are in the committed file, so later problems name them. A
// file that cannot be decrypted is a problem that refuses the commit.
// secrets are the decrypted values, which problems must not show
// (redactSecrets).
func decryptSOPS(fsys fstest.MapFS, dir string, ids *sops.Identities) (probs schema.Problems, secrets []string) {
	names := make([]string, 0, len(fsys))
	for name := range fsys {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		f := fsys[name]
		if hiddenPath(strings.TrimPrefix(name, dir+"/")) || !sops.IsEncrypted(f.Data) { // schema's Load skips hidden files too
			continue
		}
		switch strings.ToLower(path.Ext(name)) {
		case ".yaml", ".yml":
		default:
			probs = append(probs, schema.Problem{File: name, Line: 1, Column: 1,
				Reason: "cannot decrypt: SOPS-encrypted " + strings.TrimPrefix(path.Ext(name), ".") + " files are not supported; encrypt the manifest as YAML (sops --encrypt --input-type yaml --output-type yaml)"})
			continue
		}
		plain, values, err := sops.Decrypt(f.Data, ids)
		if err != nil {
			probs = append(probs, schema.Problem{File: name, Line: err.Line, Column: err.Column, Reason: err.Reason})
			continue
		}
		fsys[name] = &fstest.MapFile{Data: plain, Mode: f.Mode}
		secrets = append(secrets, values...)
	}
	return probs, secrets
}

// minRedacted is the shortest decrypted value that redactSecrets hides:
// shorter ones ("1", "true") would blank ordinary words of a message.
const minRedacted = 4

// redactSecrets hides the decrypted values in the problems' text: a
// problem about a decrypted manifest (an invalid base64 value, say) must
// not put the secret into the sync status.
func redactSecrets(probs schema.Problems, secrets []string) schema.Problems {
	if len(secrets) == 0 || len(probs) == 0 {
		return probs
	}
	var forms []string
	for _, s := range secrets {
		if len(s) < minRedacted {
			continue
		}
		forms = append(forms, s)
		if q, err := json.Marshal(s); err == nil && string(q[1:len(q)-1]) != s {
			forms = append(forms, string(q[1:len(q)-1]))
		}
	}
	sort.Slice(forms, func(i, j int) bool { return len(forms[i]) > len(forms[j]) })
	out := make(schema.Problems, len(probs))
	for i, p := range probs {
		for _, f := range forms {
			p.Reason = strings.ReplaceAll(p.Reason, f, "[redacted]")
			p.Field = strings.ReplaceAll(p.Field, f, "[redacted]")
		}
		out[i] = p
	}
	return out
}

// hiddenPath says whether a file or one of its directories (below the
// synced path) is hidden (.sops.yaml, .github/): schema's Load does not
// read those.
func hiddenPath(name string) bool {
	for _, part := range strings.Split(name, "/") {
		if strings.HasPrefix(part, ".") && part != "." {
			return true
		}
	}
	return false
}
