package schema

import (
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	"cuelang.org/go/cue"
	cueerrors "cuelang.org/go/cue/errors"
	"cuelang.org/go/cue/token"
)

// checkLabel is the hidden field under which flotilla.cue keeps cross-field
// checks, mirroring the path of the field they judge.
const checkLabel = "_check"

// cueProblems turns a CUE validation error of the document data (from file)
// into Problems: one per field, located at the field in the file when CUE
// knows its position, else at the deepest part of the path that exists.
// posFile is the file name in data's positions, file the one to show.
func cueProblems(file, posFile string, data cue.Value, err error) Problems {
	type group struct {
		field string
		pos   token.Pos
		msgs  []cueMsg
	}
	var order []string
	groups := map[string]*group{}
	var prefix []string // data's own place in its file (a field of a .cue file)
	for _, sel := range data.Path().Selectors() {
		prefix = append(prefix, sel.String())
	}
	for _, e := range cueerrors.Errors(err) {
		elems := e.Path()
		if len(prefix) > 0 && len(elems) >= len(prefix) && slices.Equal(elems[:len(prefix)], prefix) {
			elems = elems[len(prefix):]
		}
		field, at := resolvePath(data, elems)
		g, ok := groups[field]
		if !ok {
			g = &group{field: field}
			groups[field] = g
			order = append(order, field)
		}
		format, args := e.Msg()
		g.msgs = append(g.msgs, cueMsg{format: format, args: args})
		if !g.pos.IsValid() {
			g.pos = positionIn(posFile, e)
		}
		if !g.pos.IsValid() {
			g.pos = at.Pos()
		}
	}
	var ps Problems
	for _, f := range order {
		g := groups[f]
		p := Problem{File: file, Field: g.field, Reason: explainNotAllowed(g.field, reasonOf(g.msgs))}
		pos := g.pos
		if !pos.IsValid() || pos.Filename() != posFile {
			pos = data.Pos()
		}
		p.Line, p.Column = lineCol(pos)
		ps = append(ps, p)
	}
	return ps
}

func lineCol(pos token.Pos) (int, int) {
	if !pos.IsValid() {
		return 0, 0
	}
	return pos.Line(), pos.Column()
}

// positionIn returns the first position of e in file (the data), skipping
// the schema's own positions.
func positionIn(file string, e cueerrors.Error) token.Pos {
	for _, p := range cueerrors.Positions(e) {
		if p.IsValid() && p.Filename() == file {
			return p
		}
	}
	return token.NoPos
}

// resolvePath renders a CUE error path as a Problem field ("spec.ports[0].port",
// `metadata.labels["app.kubernetes.io/name"]`), dropping _check elements, and
// returns the deepest value of data along it.
func resolvePath(data cue.Value, elems []string) (string, cue.Value) {
	var b strings.Builder
	cur, found := data, true
	for _, el := range elems {
		if el == checkLabel || strings.HasPrefix(el, "#") || strings.HasPrefix(el, `"#`) {
			continue // a cross-field check, or the definition validated against
		}
		name := el
		if u, err := strconv.Unquote(el); err == nil && strings.HasPrefix(el, `"`) {
			name = u
		}
		idx, isIndex := -1, false
		if n, err := strconv.Atoi(name); err == nil && n >= 0 {
			idx, isIndex = n, true
		}
		if isIndex && (!found || cur.IncompleteKind() == cue.ListKind) {
			b.WriteString("[" + strconv.Itoa(idx) + "]")
			if !found {
				continue
			}
			if next := cur.LookupPath(cue.MakePath(cue.Index(idx))); next.Exists() {
				cur = next
			} else {
				found = false
			}
			continue
		}
		if isIdentifier(name) {
			if b.Len() > 0 {
				b.WriteByte('.')
			}
			b.WriteString(name)
		} else {
			b.WriteString("[" + strconv.Quote(name) + "]")
		}
		if found {
			if next := cur.LookupPath(cue.MakePath(cue.Str(name))); next.Exists() {
				cur = next
			} else {
				found = false
			}
		}
	}
	return b.String(), cur
}

func isIdentifier(s string) bool {
	if s == "" {
		return false
	}
	for i, r := range s {
		switch {
		case r == '_' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z':
		case i > 0 && r >= '0' && r <= '9':
		default:
			return false
		}
	}
	return true
}

type cueMsg struct {
	format string
	args   []any
}

func (m cueMsg) String() string {
	if strings.HasPrefix(m.format, "incomplete value") {
		// A manifest's values are all concrete: an incomplete one is a
		// field the schema requires (a Go field without omitempty, such as
		// a StorageClass's provisioner) that the manifest leaves out.
		return "field is required but not present"
	}
	return describeBounds(fmt.Sprintf(m.format, m.args...))
}

// reasonOf says in one line what the errors at one field mean. The branches
// of a failed disjunction (an enum, a quantity) become one "want one of".
func reasonOf(msgs []cueMsg) string {
	var rest []cueMsg
	disjunction := false
	for _, m := range msgs {
		if strings.Contains(m.format, "empty disjunction") {
			disjunction = true
			continue
		}
		rest = append(rest, m)
	}
	if len(rest) == 0 {
		rest = msgs
	}
	if len(rest) == 1 {
		return rest[0].String()
	}
	if !disjunction {
		return joinReasons(rest) // several constraints, all failed
	}
	// Several branches: find the value they all reject and what each wanted.
	count := map[string]int{}
	var wants []string
	for _, m := range rest {
		switch {
		case strings.HasPrefix(m.format, "conflicting values %s and %s") && len(m.args) >= 2:
			a, b := fmt.Sprint(m.args[0]), fmt.Sprint(m.args[1])
			count[a]++
			count[b]++
		case strings.HasPrefix(m.format, "invalid value %v (out of bound %s)") && len(m.args) == 2:
			count[fmt.Sprint(m.args[0])] += len(rest)
			wants = append(wants, describeBound(fmt.Sprint(m.args[1])))
		}
	}
	got, best := "", 0
	for v, n := range count {
		if n > best || n == best && v < got {
			got, best = v, n
		}
	}
	if got == "" {
		return joinReasons(rest)
	}
	for _, m := range rest {
		if strings.HasPrefix(m.format, "conflicting values %s and %s") && len(m.args) >= 2 {
			a, b := fmt.Sprint(m.args[0]), fmt.Sprint(m.args[1])
			switch got {
			case a:
				wants = append(wants, b)
			case b:
				wants = append(wants, a)
			}
		}
	}
	if len(wants) == 0 {
		return joinReasons(rest)
	}
	sort.Strings(wants)
	return fmt.Sprintf("invalid value %s (want one of: %s)", got, strings.Join(dedupe(wants), ", "))
}

func joinReasons(msgs []cueMsg) string {
	var s []string
	for _, m := range msgs {
		s = append(s, m.String())
	}
	return strings.Join(dedupe(s), "; ")
}

func dedupe(s []string) []string {
	var out []string
	for i, x := range s {
		if i == 0 || x != s[i-1] {
			out = append(out, x)
		}
	}
	return out
}

// describeBounds replaces each regular expression in a message by what it
// means, when it is one of flotilla.cue's.
func describeBounds(msg string) string {
	boundRE := regexp.MustCompile(`=~"(?:[^"\\]|\\.)*"`)
	return boundRE.ReplaceAllStringFunc(msg, describeBound)
}

func describeBound(bound string) string {
	re, err := strconv.Unquote(strings.TrimPrefix(bound, "=~"))
	if err != nil {
		return bound
	}
	if d, ok := regexDescriptions()[re]; ok {
		return d
	}
	return bound
}

const (
	labelKeyRE  = `^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$`
	configKeyRE = `^[-._a-zA-Z0-9]+$`
)

// regexDescriptions names the regular expressions of flotilla.cue (a test
// checks that each one is still there).
func regexDescriptions() map[string]string {
	return map[string]string{
		`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`:                                   "a DNS-1123 label: lower-case alphanumerics and '-', starting and ending with an alphanumeric",
		`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`: "a DNS-1123 subdomain: lower-case alphanumerics, '-' and '.', starting and ending with an alphanumeric",
		labelKeyRE: "a label key: an optional DNS-1123 subdomain prefix and '/', then at most 63 alphanumerics, '-', '_' or '.'",
		`^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$`: "a label value: at most 63 alphanumerics, '-', '_' or '.', starting and ending with an alphanumeric",
		configKeyRE: "a config key: alphanumerics, '-', '_' or '.'",
		`[a-z]`:     "at least one letter",
		`^\+?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][-+]?[0-9]+|[KMGTPE]i|[numkMGTPE])?$`: "a quantity such as 500m, 0.5, 128Mi or 20Gi",
		`^([A-Za-z0-9+/]{4})*([A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$`:              "standard base64, padded with '='",
		`^\*\.[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`:     "a wildcard host such as *.example.com",
		`^([^/%.][^/%]*|\.[^/%.][^/%]*|\.\.[^/%]+)$`:                                "a path segment name: not empty, \".\" or \"..\", and without '/' or '%'",
	}
}

// explainNotAllowed says what CUE's "field not allowed" means at field: an
// unknown field, or a map key of the wrong shape.
func explainNotAllowed(field, reason string) string {
	if reason != "field not allowed" {
		return reason
	}
	parent, key := splitField(field)
	switch {
	case endsWith(parent, "labels", "annotations", "matchLabels", "nodeSelector"):
		return fmt.Sprintf("invalid key %q: want %s", key, regexDescriptions()[labelKeyRE])
	case endsWith(parent, "data", "binaryData", "stringData") && !strings.Contains(parent, "."):
		return fmt.Sprintf("invalid key %q: want %s", key, regexDescriptions()[configKeyRE])
	}
	return fmt.Sprintf("unknown field %q", key)
}

// splitField splits "a.b[\"c\"]" into "a.b" and "c".
func splitField(field string) (string, string) {
	if strings.HasSuffix(field, `"]`) {
		if i := strings.LastIndex(field, `["`); i >= 0 {
			if key, err := strconv.Unquote(field[i+1 : len(field)-1]); err == nil {
				return field[:i], key
			}
		}
	}
	if i := strings.LastIndex(field, "."); i >= 0 {
		return field[:i], field[i+1:]
	}
	return "", field
}

// endsWith says whether the last element of a field path is one of names.
func endsWith(field string, names ...string) bool {
	for _, n := range names {
		if field == n || strings.HasSuffix(field, "."+n) {
			return true
		}
	}
	return false
}
