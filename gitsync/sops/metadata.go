package sops

import (
	"path"
	"regexp"
	"sort"
	"strings"
	"time"

	"filippo.io/age"
	"go.yaml.in/yaml/v3"

	"github.com/flotilla-dev/flotilla/schema"
)

// metadata is a file's sops block.
type metadata struct {
	version          string
	lastModified     time.Time
	mac              *encryptedValue
	macNode          *yaml.Node
	ageNode          *yaml.Node // the age list (or key_groups)
	ageKeys          []ageKey
	macOnlyEncrypted bool

	unencryptedSuffix, encryptedSuffix string
	unencryptedRegex, encryptedRegex   *regexp.Regexp
}

type ageKey struct {
	recipient, enc string
	node           *yaml.Node
}

// otherKeyTypes are key types of sops that Flotilla does not decrypt.
var otherKeyTypes = []string{"kms", "gcp_kms", "azure_kv", "hc_vault", "pgp", "hckms"}

// parseMetadata reads and checks the sops block v (under the key k).
func parseMetadata(k, v *yaml.Node) (*metadata, []*Error) {
	if v.Kind != yaml.MappingNode {
		return nil, []*Error{errAt(k, "the sops metadata must be a mapping")}
	}
	fields := map[string][2]*yaml.Node{}
	for i := 0; i+1 < len(v.Content); i += 2 {
		fields[v.Content[i].Value] = [2]*yaml.Node{v.Content[i], v.Content[i+1]}
	}
	str := func(name string) (string, *yaml.Node, bool) {
		f, ok := fields[name]
		if !ok || f[1].Kind != yaml.ScalarNode {
			return "", nil, false
		}
		return f[1].Value, f[1], true
	}
	m := &metadata{}
	var errs []*Error
	bad := func(n *yaml.Node, format string, args ...any) {
		if n == nil {
			n = k
		}
		errs = append(errs, errAt(n, "sops."+format, args...))
	}

	if s, _, ok := str("version"); !ok || s == "" {
		bad(nil, "version is missing: not a file that sops wrote")
	} else {
		m.version = s
	}
	if s, n, ok := str("lastmodified"); !ok {
		bad(nil, "lastmodified is missing")
	} else if t, err := time.Parse(time.RFC3339, s); err != nil {
		bad(n, "lastmodified: %q is not an RFC 3339 time", s)
	} else {
		m.lastModified = t
	}
	if s, n, ok := str("mac"); !ok {
		bad(nil, "mac is missing: the file's integrity cannot be checked")
	} else if mv, err := parseEncrypted(s); err != nil {
		bad(n, "mac: %v", err)
	} else if mv.typ != "str" {
		bad(n, "mac: want an encrypted value of type str, not %s", mv.typ)
	} else {
		m.mac, m.macNode = mv, n
	}
	if f, ok := fields["mac_only_encrypted"]; ok {
		var b bool
		if err := f[1].Decode(&b); err != nil {
			bad(f[1], "mac_only_encrypted: want true or false")
		}
		m.macOnlyEncrypted = b
	}
	m.unencryptedSuffix, _, _ = str("unencrypted_suffix")
	m.encryptedSuffix, _, _ = str("encrypted_suffix")
	for _, r := range []struct {
		name string
		dst  **regexp.Regexp
	}{{"unencrypted_regex", &m.unencryptedRegex}, {"encrypted_regex", &m.encryptedRegex}} {
		if s, n, ok := str(r.name); ok && s != "" {
			re, err := regexp.Compile(s)
			if err != nil {
				bad(n, "%s: %v", r.name, err)
				continue
			}
			*r.dst = re
		}
	}
	for _, c := range []string{"unencrypted_comment_regex", "encrypted_comment_regex"} {
		if s, n, ok := str(c); ok && s != "" {
			bad(n, "%s is not supported by Flotilla: choose the encrypted values with encrypted_regex (for Secrets: ^(data|stringData)$)", c)
		}
	}

	// The age keys: the top-level list, or one key group's.
	if f, ok := fields["age"]; ok {
		m.ageNode = f[0]
		m.ageKeys = append(m.ageKeys, ageKeys(f[1], bad)...)
	}
	if f, ok := fields["key_groups"]; ok && f[1].Kind == yaml.SequenceNode && len(f[1].Content) > 0 {
		if len(f[1].Content) > 1 {
			bad(f[0], "key_groups: %d key groups (Shamir secret sharing) are not supported by Flotilla: use one list of age recipients", len(f[1].Content))
		} else if g := f[1].Content[0]; g.Kind == yaml.MappingNode {
			for i := 0; i+1 < len(g.Content); i += 2 {
				if g.Content[i].Value == "age" {
					m.ageNode = g.Content[i]
					m.ageKeys = append(m.ageKeys, ageKeys(g.Content[i+1], bad)...)
				}
			}
		}
	}
	if len(m.ageKeys) == 0 {
		var others []string
		for _, o := range otherKeyTypes {
			if f, ok := fields[o]; ok && f[1].Kind == yaml.SequenceNode && len(f[1].Content) > 0 {
				others = append(others, o)
			}
		}
		sort.Strings(others)
		if len(others) > 0 {
			bad(nil, "age: the file is encrypted for %s only; Flotilla decrypts with age: encrypt it with sops --age RECIPIENT (or an age: rule in .sops.yaml)", strings.Join(others, ", "))
		} else {
			bad(nil, "age: no age recipient: encrypt the file with sops --age RECIPIENT (or an age: rule in .sops.yaml)")
		}
	}
	if m.ageNode == nil {
		m.ageNode = k
	}
	return m, errs
}

// ageKeys reads a list of {recipient, enc}.
func ageKeys(list *yaml.Node, bad func(*yaml.Node, string, ...any)) []ageKey {
	if list.Kind != yaml.SequenceNode {
		bad(list, "age: want a list of recipients")
		return nil
	}
	var keys []ageKey
	for _, item := range list.Content {
		var raw struct {
			Recipient string `yaml:"recipient"`
			Enc       string `yaml:"enc"`
		}
		if item.Kind != yaml.MappingNode || item.Decode(&raw) != nil {
			bad(item, "age: want recipient and enc")
			continue
		}
		if _, err := age.ParseX25519Recipient(raw.Recipient); err != nil {
			bad(item, "age: recipient %q is not an age X25519 recipient (age1…)", raw.Recipient)
			continue
		}
		if !strings.Contains(raw.Enc, "-----BEGIN AGE ENCRYPTED FILE-----") || !strings.Contains(raw.Enc, "-----END AGE ENCRYPTED FILE-----") {
			bad(item, "age: the data key for %s is not an armored age file", raw.Recipient)
			continue
		}
		keys = append(keys, ageKey{recipient: raw.Recipient, enc: raw.Enc, node: item})
	}
	return keys
}

// shouldBeEncrypted is sops' Tree.shouldBeEncrypted without the comment
// rules (refused in parseMetadata).
func (m *metadata) shouldBeEncrypted(path []string) bool {
	encrypted := true
	if m.unencryptedSuffix != "" {
		for _, p := range path {
			if strings.HasSuffix(p, m.unencryptedSuffix) {
				encrypted = false
				break
			}
		}
	}
	if m.encryptedSuffix != "" {
		encrypted = false
		for _, p := range path {
			if strings.HasSuffix(p, m.encryptedSuffix) {
				encrypted = true
				break
			}
		}
	}
	if m.unencryptedRegex != nil {
		for _, p := range path {
			if m.unencryptedRegex.MatchString(p) {
				encrypted = false
				break
			}
		}
	}
	if m.encryptedRegex != nil {
		encrypted = false
		for _, p := range path {
			if m.encryptedRegex.MatchString(p) {
				encrypted = true
				break
			}
		}
	}
	return encrypted
}

// Check checks a SOPS-encrypted YAML file without a key: the sops block
// (version, lastmodified, mac, age recipients) and that every value that
// should be encrypted is an ENC[…] string. It returns the file with the
// sops block blanked and every encrypted value replaced by a placeholder of
// its type ("" for strings, 0, false), lines unchanged, for the schema to
// check the rest, also when there are errs. A file whose apiVersion or
// kind is encrypted cannot be checked further: out is nil then.
func Check(data []byte) (out []byte, errs []*Error) {
	f, errs := load(data)
	if f == nil {
		return nil, errs
	}
	unchecked := false
	err := f.leaves(func(l leaf) *Error {
		if !f.meta.shouldBeEncrypted(l.path) {
			return nil
		}
		at := strings.Join(l.path, ".")
		if l.node.Tag != "!!str" {
			errs = append(errs, errAt(l.node, "%s should be encrypted but is a %s, not an ENC[…] string", at, strings.TrimPrefix(l.node.Tag, "!!")))
			return nil
		}
		if l.node.Value == "" {
			return nil
		}
		v, perr := parseEncrypted(l.node.Value)
		if perr != nil {
			errs = append(errs, errAt(l.node, "%s: %v", at, perr))
			return nil
		}
		if len(l.path) == 1 && (l.path[0] == "apiVersion" || l.path[0] == "kind") {
			unchecked = true
		}
		var repl string
		switch v.typ {
		case "int", "float":
			repl = "0"
		case "bool":
			repl = "false"
		case "comment":
			return nil
		default:
			repl = `""`
		}
		if rerr := f.replace(l.node, repl); rerr != nil {
			errs = append(errs, rerr)
		}
		return nil
	})
	if err != nil {
		errs = append(errs, err)
	}
	if unchecked {
		errs = append(errs, &Error{Line: 1, Column: 1, Reason: "apiVersion and kind are encrypted, so the manifest cannot be checked without the key: encrypt only the secret values (sops --encrypted-regex '^(data|stringData)$', or encrypted_regex in .sops.yaml)"})
		return nil, errs
	}
	return f.output(), errs
}

// VetFilter is `flotilla vet`'s schema.FileFilter: a SOPS-encrypted YAML
// file is checked with Check and its output validated by the schema as
// any manifest; other files pass unchanged.
func VetFilter(name string, data []byte) ([]byte, schema.Problems) {
	if !IsEncrypted(data) {
		return data, nil
	}
	switch strings.ToLower(path.Ext(name)) {
	case ".yaml", ".yml":
	default:
		return nil, schema.Problems{{Line: 1, Column: 1, Reason: "SOPS-encrypted " + strings.TrimPrefix(path.Ext(name), ".") + " files are not supported; encrypt the manifest as YAML (sops --encrypt --input-type yaml --output-type yaml)"}}
	}
	out, errs := Check(data)
	var ps schema.Problems
	for _, e := range errs {
		ps = append(ps, schema.Problem{Line: e.Line, Column: e.Column, Reason: e.Reason})
	}
	return out, ps
}
