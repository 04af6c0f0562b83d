// Package sops reads SOPS-encrypted YAML manifests (the format of
// `sops --encrypt --age RECIPIENT`, as Flux's kustomize-controller decrypts
// them): it decrypts them in memory with the server's age identities, or,
// without a key, checks that they are well-formed so that `flotilla vet`
// can check the rest of the manifest.
//
// The format is implemented here on filippo.io/age and crypto/aes, because
// the sops module links every KMS SDK (the binary grew from 67 to 98 MB)
// and needs runc and cilium/ebpf versions that Podman's v4 bindings do not
// build with. What is implemented is exactly sops' own: the data key is age
// encrypted (armored) for each recipient in the file's `sops.age` list;
// each encrypted value is ENC[AES256_GCM,data:…,iv:…,tag:…,type:…], AES-GCM
// with the data key, the 32-byte IV, and the value's key path joined by ":"
// (plus a final ":") as additional data; the MAC is the upper-case hex
// SHA-512 of the values in document order (of the encrypted ones only with
// mac_only_encrypted), stored encrypted with the lastmodified time as
// additional data. encrypted_regex, unencrypted_regex, encrypted_suffix and
// unencrypted_suffix choose the encrypted values as sops does.
//
// The output keeps every line of the input where it was: encrypted scalars
// are replaced in place and the sops block is blanked, so that problems
// found in a decrypted manifest name the line of the committed file.
// Plaintext never appears in an error of this package.
package sops

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"filippo.io/age"
	"filippo.io/age/armor"
	"go.yaml.in/yaml/v3"
)

// MetadataKey is the top-level key of a SOPS file's metadata.
const MetadataKey = "sops"

// macOnlyEncryptedInit starts the MAC of a file with mac_only_encrypted
// (sops' MACOnlyEncryptedInitialization).
var macOnlyEncryptedInit = []byte{0x8a, 0x3f, 0xd2, 0xad, 0x54, 0xce, 0x66, 0x52, 0x7b, 0x10, 0x34, 0xf3, 0xd1, 0x47, 0xbe, 0xb, 0xb, 0x97, 0x5b, 0x3b, 0xf4, 0x4f, 0x72, 0xc6, 0xfd, 0xad, 0xec, 0x81, 0x76, 0xf2, 0x7d, 0x69}

// encRE is an encrypted value (sops' aes.encre).
var encRE = regexp.MustCompile(`^ENC\[AES256_GCM,data:(.+),iv:(.+),tag:(.+),type:(.+)\]`)

// encMarker is in every SOPS file (its mac at least): files without it are
// not parsed.
var encMarker = []byte("ENC[AES256_GCM,")

// Error is a problem with a SOPS file at a line (1-based; 0 when it is
// about the whole file). Its text never holds plaintext.
type Error struct {
	Line, Column int
	Reason       string
}

func (e *Error) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("%d:%d: %s", e.Line, e.Column, e.Reason)
	}
	return e.Reason
}

func errAt(n *yaml.Node, format string, args ...any) *Error {
	e := &Error{Reason: fmt.Sprintf(format, args...)}
	if n != nil {
		e.Line, e.Column = n.Line, n.Column
	}
	return e
}

// Identities are the age identities that decrypt SOPS files: the server's
// key (--sops-age-key-file).
type Identities struct {
	ids  []age.Identity
	file string
}

// LoadIdentities reads an age key file: age-keygen's output, the format of
// SOPS_AGE_KEY_FILE (one AGE-SECRET-KEY-1… per line, # comments).
func LoadIdentities(path string) (*Identities, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read the SOPS age key file: %w", err)
	}
	defer f.Close()
	ids, err := age.ParseIdentities(io.LimitReader(f, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("read the SOPS age key file %s: %w (want age-keygen's output: lines of AGE-SECRET-KEY-1…)", path, err)
	}
	return &Identities{ids: ids, file: path}, nil
}

// IsEncrypted says whether data is a SOPS-encrypted file: its first YAML
// (or JSON) document is a mapping with a top-level "sops" key.
func IsEncrypted(data []byte) bool {
	if !bytes.Contains(data, encMarker) {
		return false
	}
	docs, err := parse(data)
	if err != nil || len(docs) == 0 {
		return false
	}
	_, _, ok := findKey(docs[0], MetadataKey)
	return ok
}

// file is a parsed SOPS file.
type file struct {
	data  []byte
	lines [][]byte // the lines of data, without their '\n'
	docs  []*yaml.Node
	meta  *metadata
	edits map[int][]edit // by 0-based line
}

type edit struct {
	start, end int // byte offsets in the line
	repl       string
}

func parse(data []byte) ([]*yaml.Node, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var docs []*yaml.Node
	for {
		var n yaml.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return nil, err
		}
		docs = append(docs, &n)
	}
}

// root is the top-level node of a document.
func root(doc *yaml.Node) *yaml.Node {
	if doc.Kind == yaml.DocumentNode && len(doc.Content) == 1 {
		return doc.Content[0]
	}
	return doc
}

// findKey finds key in the top-level mapping of doc: the key node and its
// value.
func findKey(doc *yaml.Node, key string) (*yaml.Node, *yaml.Node, bool) {
	m := root(doc)
	if m.Kind != yaml.MappingNode {
		return nil, nil, false
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Kind == yaml.ScalarNode && m.Content[i].Value == key {
			return m.Content[i], m.Content[i+1], true
		}
	}
	return nil, nil, false
}

// load parses data and its sops block: f is nil when data is not a SOPS
// file at all, errs are the problems of the sops block.
func load(data []byte) (*file, []*Error) {
	docs, err := parse(data)
	if err != nil {
		return nil, []*Error{{Reason: fmt.Sprintf("cannot parse the SOPS file: %v", err)}}
	}
	if len(docs) == 0 {
		return nil, []*Error{{Reason: "empty SOPS file"}}
	}
	k, v, ok := findKey(docs[0], MetadataKey)
	if !ok {
		return nil, []*Error{{Reason: "not a SOPS file: the first document has no top-level sops key"}}
	}
	f := &file{data: data, lines: bytes.Split(data, []byte("\n")), docs: docs, edits: map[int][]edit{}}
	if root(docs[0]).Style&yaml.FlowStyle != 0 {
		return nil, []*Error{errAt(k, "a SOPS file in YAML flow style is not supported: write it in block style, as sops does")}
	}
	// With errs, f is still returned for Check to look at the values.
	meta, errs := parseMetadata(k, v)
	if meta == nil {
		return nil, errs
	}
	f.meta = meta
	for _, d := range docs { // sops writes the block into every document and reads the first
		f.blankSOPS(d)
	}
	return f, errs
}

// blankSOPS blanks the lines of doc's sops block (key to the next key or
// the end of the document), keeping every other line where it is.
func (f *file) blankSOPS(doc *yaml.Node) {
	k, _, ok := findKey(doc, MetadataKey)
	if !ok {
		return
	}
	m := root(doc)
	first := k.Line - 1
	last := len(f.lines) - 1
	next := false
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i] == k && i+2 < len(m.Content) {
			last = m.Content[i+2].Line - 2
			next = true
		}
	}
	if !next { // up to the next document
		for l := first + 1; l < len(f.lines); l++ {
			if bytes.HasPrefix(f.lines[l], []byte("---")) || bytes.HasPrefix(f.lines[l], []byte("...")) {
				last = l - 1
				break
			}
		}
	}
	for l := first; l <= last && l < len(f.lines); l++ {
		f.edits[l] = []edit{{start: 0, end: len(f.lines[l]), repl: ""}}
	}
}

// replace records that the scalar n is to be written as repl.
func (f *file) replace(n *yaml.Node, repl string) *Error {
	l := n.Line - 1
	if l < 0 || l >= len(f.lines) {
		return errAt(n, "encrypted value outside the file")
	}
	line := f.lines[l]
	// yaml's column counts characters; find its byte offset.
	start, col := 0, 1
	for start < len(line) && col < n.Column {
		_, size := utf8.DecodeRune(line[start:])
		start += size
		col++
	}
	token := n.Value
	switch n.Style {
	case yaml.DoubleQuotedStyle:
		token = `"` + n.Value + `"`
	case yaml.SingleQuotedStyle:
		token = `'` + n.Value + `'`
	}
	if !bytes.HasPrefix(line[start:], []byte(token)) {
		return errAt(n, "an encrypted value must be one scalar on its line, as sops writes it")
	}
	f.edits[l] = append(f.edits[l], edit{start: start, end: start + len(token), repl: repl})
	return nil
}

// output applies the edits.
func (f *file) output() []byte {
	var out bytes.Buffer
	out.Grow(len(f.data))
	for i, line := range f.lines {
		if i > 0 {
			out.WriteByte('\n')
		}
		pos := 0
		for _, e := range f.edits[i] {
			if e.start < pos {
				continue
			}
			out.Write(line[pos:e.start])
			out.WriteString(e.repl)
			pos = e.end
		}
		out.Write(line[pos:])
	}
	return out.Bytes()
}

// maxNodes bounds the nodes a walk visits, aliases followed: an alias
// bomb is refused instead of expanded.
const maxNodes = 1 << 20

// leaf is a scalar value of the tree, with its key path.
type leaf struct {
	node *yaml.Node
	path []string
}

// leaves walks the documents in order, as sops' walkBranch does (sequence
// items share their parent's path; the sops key is skipped), calling fn on
// every scalar that is not null.
func (f *file) leaves(fn func(leaf) *Error) *Error {
	docIndex := 0
	visited := 0
	var walk func(n *yaml.Node, path []string, depth int) *Error
	walk = func(n *yaml.Node, path []string, depth int) *Error {
		if depth > 10000 {
			return errAt(n, "the document is nested too deeply")
		}
		if visited++; visited > maxNodes {
			return errAt(n, "more than %d values (through YAML aliases?): not a SOPS file sops would write", maxNodes)
		}
		switch n.Kind {
		case yaml.DocumentNode:
			for _, c := range n.Content {
				if err := walk(c, path, depth+1); err != nil {
					return err
				}
			}
		case yaml.SequenceNode:
			for _, c := range n.Content {
				if err := walk(c, path, depth+1); err != nil {
					return err
				}
			}
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				k := n.Content[i]
				if k.Value == MetadataKey && len(path) == 0 && n == root(f.docs[docIndex]) {
					continue
				}
				var key any
				if err := k.Decode(&key); err != nil {
					return errAt(k, "cannot read the key: %v", err)
				}
				s, ok := key.(string)
				if !ok {
					return errAt(k, "a key that is not a string (%T): SOPS files have string keys only", key)
				}
				p := append(append([]string(nil), path...), s)
				if err := walk(n.Content[i+1], p, depth+1); err != nil {
					return err
				}
			}
		case yaml.AliasNode:
			return walk(n.Alias, path, depth+1)
		case yaml.ScalarNode:
			if n.Tag == "!!null" {
				return nil
			}
			return fn(leaf{node: n, path: path})
		}
		return nil
	}
	for docIndex = range f.docs {
		if err := walk(f.docs[docIndex], nil, 0); err != nil {
			return err
		}
	}
	return nil
}

// encryptedValue is a parsed ENC[…] string.
type encryptedValue struct {
	data, iv, tag []byte
	typ           string
}

var valueTypes = map[string]bool{"str": true, "int": true, "float": true, "bool": true, "bytes": true, "time": true, "comment": true}

func parseEncrypted(s string) (*encryptedValue, error) {
	m := encRE.FindStringSubmatch(s)
	if m == nil {
		return nil, errors.New("not an encrypted value: want ENC[AES256_GCM,data:…,iv:…,tag:…,type:…]")
	}
	var v encryptedValue
	var err error
	if v.data, err = base64.StdEncoding.DecodeString(m[1]); err != nil {
		return nil, errors.New("the data of the encrypted value is not base64")
	}
	if v.iv, err = base64.StdEncoding.DecodeString(m[2]); err != nil || len(v.iv) == 0 {
		return nil, errors.New("the iv of the encrypted value is not base64")
	}
	if v.tag, err = base64.StdEncoding.DecodeString(m[3]); err != nil || len(v.tag) != 16 {
		return nil, errors.New("the tag of the encrypted value is not a base64 16-byte GCM tag")
	}
	v.typ = m[4]
	if !valueTypes[v.typ] {
		return nil, fmt.Errorf("unknown type %q of the encrypted value", v.typ)
	}
	return &v, nil
}

// open decrypts v with key and the additional data ad.
func (v *encryptedValue) open(key []byte, ad string) ([]byte, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	gcm, err := cipher.NewGCMWithNonceSize(block, len(v.iv))
	if err != nil {
		return nil, err
	}
	return gcm.Open(nil, v.iv, append(append([]byte(nil), v.data...), v.tag...), []byte(ad))
}

// Decrypt decrypts a SOPS-encrypted YAML file with ids and verifies its
// MAC. The plaintext keeps the file's lines: encrypted scalars are
// replaced in place, the sops block is blank. A nil ids means no key is
// configured. The error is located and holds no plaintext. values are the
// decrypted strings, for a caller to keep them out of its messages.
func Decrypt(data []byte, ids *Identities) (plain []byte, values []string, _ *Error) {
	f, errs := load(data)
	if len(errs) > 0 {
		return nil, nil, errs[0]
	}
	key, err := f.dataKey(ids)
	if err != nil {
		return nil, nil, err
	}
	hash := sha512.New()
	if f.meta.macOnlyEncrypted {
		hash.Write(macOnlyEncryptedInit)
	}
	err = f.leaves(func(l leaf) *Error {
		encrypted := f.meta.shouldBeEncrypted(l.path)
		var plain []byte
		if encrypted {
			if l.node.Tag != "!!str" {
				return errAt(l.node, "%s should be encrypted but is a %s, not an ENC[…] string", strings.Join(l.path, "."), strings.TrimPrefix(l.node.Tag, "!!"))
			}
			if l.node.Value == "" { // sops leaves empty strings as they are
				return nil
			}
			v, perr := parseEncrypted(l.node.Value)
			if perr != nil {
				return errAt(l.node, "%s: %v", strings.Join(l.path, "."), perr)
			}
			b, oerr := v.open(key, strings.Join(l.path, ":")+":")
			if oerr != nil {
				return errAt(l.node, "cannot decrypt %s: the ciphertext or its key path was modified (message authentication failed); re-encrypt the file with sops", strings.Join(l.path, "."))
			}
			repl, macBytes, cerr := plainScalar(v.typ, b)
			if cerr != nil {
				return errAt(l.node, "cannot decrypt %s: the plaintext is not a valid %s", strings.Join(l.path, "."), v.typ)
			}
			if v.typ != "comment" {
				if rerr := f.replace(l.node, repl); rerr != nil {
					return rerr
				}
			}
			plain = macBytes
			values = append(values, string(b))
			if v.typ == "comment" {
				return nil // comments are not in the MAC
			}
		} else {
			b, cerr := macBytesOf(l.node)
			if cerr != nil {
				return errAt(l.node, "%s: %v", strings.Join(l.path, "."), cerr)
			}
			plain = b
		}
		if !f.meta.macOnlyEncrypted || encrypted {
			hash.Write(plain)
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	mac, merr := f.meta.mac.open(key, f.meta.lastModified.Format(time.RFC3339))
	if merr != nil {
		return nil, nil, errAt(f.meta.macNode, "cannot decrypt: the MAC cannot be opened with the data key (the mac or lastmodified was modified); re-encrypt the file with sops")
	}
	if string(mac) != fmt.Sprintf("%X", hash.Sum(nil)) {
		return nil, nil, errAt(f.meta.macNode, "cannot decrypt: the MAC does not match the file's contents: the file was modified after it was encrypted (edit an encrypted file with `sops FILE`, never by hand)")
	}
	return f.output(), values, nil
}

// plainScalar is the YAML text that replaces a decrypted value of type typ,
// and the bytes sops puts in the MAC for it.
func plainScalar(typ string, b []byte) (string, []byte, error) {
	s := string(b)
	switch typ {
	case "str", "bytes", "time":
		if typ == "time" {
			var t time.Time
			if err := t.UnmarshalText(b); err != nil {
				return "", nil, err
			}
			mb, _ := t.MarshalText()
			b = mb
		}
		var out bytes.Buffer
		enc := json.NewEncoder(&out)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(s); err != nil {
			return "", nil, err
		}
		return strings.TrimSuffix(out.String(), "\n"), b, nil
	case "int":
		i, err := strconv.Atoi(s)
		if err != nil {
			return "", nil, err
		}
		return strconv.Itoa(i), []byte(strconv.Itoa(i)), nil
	case "float":
		x, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return "", nil, err
		}
		return yamlFloat(x), []byte(strconv.FormatFloat(x, 'f', -1, 64)), nil
	case "bool":
		v, err := strconv.ParseBool(s)
		if err != nil {
			return "", nil, err
		}
		if v {
			return "true", []byte("True"), nil
		}
		return "false", []byte("False"), nil
	case "comment":
		return "", nil, nil
	}
	return "", nil, fmt.Errorf("unknown type %q", typ)
}

// yamlFloat writes x so that YAML reads it back as a float.
func yamlFloat(x float64) string {
	switch {
	case math.IsNaN(x):
		return ".nan"
	case math.IsInf(x, 1):
		return ".inf"
	case math.IsInf(x, -1):
		return "-.inf"
	}
	s := strconv.FormatFloat(x, 'g', -1, 64)
	if !strings.ContainsAny(s, ".e") {
		s += ".0"
	}
	return s
}

// macBytesOf is what sops' ToBytes makes of an unencrypted scalar, decoded
// as sops' YAML store decodes it.
func macBytesOf(n *yaml.Node) ([]byte, error) {
	var v any
	if err := n.Decode(&v); err != nil {
		return nil, err
	}
	switch v := v.(type) {
	case string:
		return []byte(v), nil
	case int:
		return []byte(strconv.Itoa(v)), nil
	case float64:
		return []byte(strconv.FormatFloat(v, 'f', -1, 64)), nil
	case bool:
		if v {
			return []byte("True"), nil
		}
		return []byte("False"), nil
	case []byte:
		return v, nil
	case time.Time:
		return v.MarshalText()
	case nil:
		return nil, nil
	default:
		return nil, fmt.Errorf("a value of type %T, which sops cannot encrypt", v)
	}
}

// dataKey decrypts the data key with ids.
func (f *file) dataKey(ids *Identities) ([]byte, *Error) {
	var recipients []string
	for _, k := range f.meta.ageKeys {
		recipients = append(recipients, k.recipient)
	}
	if ids == nil || len(ids.ids) == 0 {
		return nil, errAt(f.meta.ageNode, "cannot decrypt: no age key is configured; the file is encrypted for %s; set --sops-age-key-file to a file holding one of their keys (age-keygen's output)", strings.Join(recipients, ", "))
	}
	for _, k := range f.meta.ageKeys {
		r, err := age.Decrypt(armor.NewReader(strings.NewReader(k.enc)), ids.ids...)
		if err != nil {
			continue
		}
		key, err := io.ReadAll(io.LimitReader(r, 1024))
		if err != nil || len(key) != 32 {
			return nil, errAt(k.node, "cannot decrypt: the data key encrypted for %s is damaged; re-encrypt the file with sops", k.recipient)
		}
		return key, nil
	}
	return nil, errAt(f.meta.ageNode, "cannot decrypt: no age identity of %s matches the recipients %s; set --sops-age-key-file to a file holding one of their keys, or add the server's recipient to the file (sops updatekeys)", ids.file, strings.Join(recipients, ", "))
}
