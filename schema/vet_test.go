package schema

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"cuelang.org/go/cue"
	"cuelang.org/go/cue/cuecontext"
)

var update = flag.Bool("update", false, "rewrite testdata/vet.golden from the current output")

// vetCommand is the documented `cue vet` command (README.md), run in schema/.
// FILE is the manifest file.
const vetCommand = "cue vet -c . FILE -d '#Manifest'"

func TestVetGolden(t *testing.T) {
	v := validator(t)
	var out bytes.Buffer
	code := v.Vet(&out, []string{filepath.Join("testdata", "bad"), filepath.Join("testdata", "good")})
	if code != 1 {
		t.Errorf("exit code %d, want 1", code)
	}
	golden := filepath.Join("testdata", "vet.golden")
	if *update {
		if err := os.WriteFile(golden, out.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test ./schema -run TestVetGolden -update)", err)
	}
	if got := out.String(); got != string(want) {
		t.Errorf("vet output differs from %s (-update to accept):\n--- got\n%s--- want\n%s", golden, got, want)
	}
}

func TestVetExitCodes(t *testing.T) {
	dir := t.TempDir()
	write := func(name, data string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	ok := write("ok.yaml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: ok}\n")
	warn := write("warn.yaml", "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  hostNetwork: true\n  containers: [{name: a, image: b}]\n")
	bad := write("bad.yaml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: Bad}\n")
	v := validator(t)
	for _, tc := range []struct {
		paths []string
		code  int
		out   string
	}{
		{[]string{ok}, 0, ""},
		{[]string{warn}, 0, warn + ":5:3: warning: spec.hostNetwork: accepted but not honoured yet: pods always get their own network namespace\n"},
		{[]string{ok, bad}, 1, bad + `:3:18: metadata.name: invalid value "Bad" (out of bound a DNS-1123 label`},
		{[]string{dir}, 1, bad + ":3:18: metadata.name"},
		{[]string{filepath.Join(dir, "nope.yaml")}, 1, filepath.Join(dir, "nope.yaml") + ":0:0: cannot read"},
	} {
		var out bytes.Buffer
		if code := v.Vet(&out, tc.paths); code != tc.code || !strings.HasPrefix(out.String(), tc.out) {
			t.Errorf("Vet(%v) = %d\n%s\nwant %d and output starting %q", tc.paths, code, out.String(), tc.code, tc.out)
		}
	}
	// Relative paths are shown as given.
	wd, _ := os.Getwd()
	rel, err := filepath.Rel(wd, bad)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if Vet(&out, []string{rel}) != 1 || !strings.HasPrefix(out.String(), rel+":3:18:") {
		t.Errorf("Vet(%s): %s", rel, out.String())
	}
}

// TestCueVetAgrees runs the real cue command, as README.md documents it,
// over the same documents as Load, and expects the same verdicts.
func TestCueVetAgrees(t *testing.T) {
	cue := cueCommand(t)
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(readme), strings.ReplaceAll(vetCommand, "FILE", "")) &&
		!strings.Contains(string(readme), "cue vet -c . ") {
		t.Errorf("README.md does not document %q", vetCommand)
	}

	files, _ := filepath.Glob(filepath.Join("testdata", "*", "*"))
	conf, _ := filepath.Glob(filepath.Join("..", "..", "shared", "conformance", "k8s-examples", "*.yaml"))
	files = append(files, conf...)
	v := validator(t)
	for _, f := range files {
		if filepath.Ext(f) == ".cue" || filepath.Ext(f) == ".golden" {
			continue // a CUE manifest is its own package: cue vet checks it differently
		}
		t.Run(f, func(t *testing.T) {
			abs, err := filepath.Abs(f)
			if err != nil {
				t.Fatal(err)
			}
			args := strings.Fields(strings.ReplaceAll(vetCommand, "FILE", abs))
			args[len(args)-1] = strings.Trim(args[len(args)-1], "'")
			cmd := exec.Command(cue, args[1:]...)
			cmd.Dir = "." // schema/, the CUE module root
			out, err := cmd.CombinedOutput()
			var exit *exec.ExitError
			if err != nil && !errors.As(err, &exit) {
				t.Fatalf("run %s: %v", cue, err)
			}
			cueRejects := err != nil
			_, ps := v.LoadPaths(f)
			loadRejects := len(ps.Errors()) > 0
			if setLevel[filepath.Base(f)] {
				// The checks cue vet cannot make: it sees documents, not the set.
				if cueRejects || !loadRejects {
					t.Errorf("set check: cue vet rejects=%v, Load rejects=%v; want false, true", cueRejects, loadRejects)
				}
				return
			}
			if cueRejects != loadRejects {
				t.Errorf("cue vet rejects=%v, Load rejects=%v\ncue vet:\n%s\nLoad:\n%s", cueRejects, loadRejects, out, problemLines(ps))
			}
		})
	}
}

// cueCommand finds the cue command in PATH or $(go env GOPATH)/bin.
func cueCommand(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("cue"); err == nil {
		return p
	}
	if gopath, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		p := filepath.Join(strings.TrimSpace(string(gopath)), "bin", "cue")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	t.Skip("cue command not found in PATH or $(go env GOPATH)/bin: install it with `go install cuelang.org/go/cmd/cue@v0.17.1` (CI does)")
	return ""
}

// TestGeneratedTypesEmbedInline guards gen.sh's rewrite: no Go inline
// embedding may remain a named field in the generated API types.
func TestGeneratedTypesEmbedInline(t *testing.T) {
	named := regexp.MustCompile(`(?m)^\s*([A-Z][A-Za-z0-9]*)\??:\s+([a-z0-9]+\.)?#([A-Za-z0-9]+)\b`)
	var embedded int
	for _, dir := range []string{"cue.mod/gen/k8s.io/api", "cue.mod/gen/k8s.io/apimachinery/pkg/apis"} {
		err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			for _, m := range named.FindAllStringSubmatch(string(data), -1) {
				if m[1] == m[3] {
					t.Errorf("%s: %q is a named field; gen.sh should make it an embedding", p, strings.TrimSpace(m[0]))
				}
			}
			embedded += strings.Count(string(data), "\tmetav1.#TypeMeta\n")
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if embedded == 0 {
		t.Errorf("no embedded metav1.#TypeMeta found: is cue.mod/gen generated?")
	}
}

// TestRegexDescriptions keeps cueerrors.go's descriptions in step with the
// regular expressions of flotilla.cue.
func TestRegexDescriptions(t *testing.T) {
	src, err := os.ReadFile("flotilla.cue")
	if err != nil {
		t.Fatal(err)
	}
	for re := range regexDescriptions() {
		if _, err := regexp.Compile(re); err != nil {
			t.Errorf("%s: %v", re, err)
		}
		quoted := `"` + strings.ReplaceAll(re, `\`, `\\`) + `"`
		if !strings.Contains(string(src), quoted) {
			t.Errorf("flotilla.cue no longer has the regular expression %s", quoted)
		}
	}
}

// TestGitKindsMatch keeps flotilla.cue's #GitKinds equal to GitKinds().
func TestGitKindsMatch(t *testing.T) {
	v := validator(t)
	pkg, err := buildModule(cuecontext.New(), v.overlay)
	if err != nil {
		t.Fatal(err)
	}
	var cueKinds []string
	if err := pkg.LookupPath(cue.ParsePath("#GitKinds")).Decode(&cueKinds); err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Join(cueKinds, ","), strings.Join(GitKinds(), ","); got != want {
		t.Errorf("flotilla.cue #GitKinds = %s, GitKinds() = %s", got, want)
	}
	for _, k := range cueKinds {
		if !pkg.LookupPath(cue.ParsePath("#" + k)).Exists() {
			t.Errorf("flotilla.cue has no #%s", k)
		}
	}
}
