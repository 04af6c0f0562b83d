package schema

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"testing/fstest"
	"time"
)

// cueBomb is a .cue manifest that doubles a string n times: 2^(n+3)
// bytes, and far more allocated on the way (issue 9: 22 doublings, 280
// bytes of CUE, allocated 141 MiB).
func cueBomb(n int) string {
	var b strings.Builder
	b.WriteString("a0: \"xxxxxxxx\"\n")
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&b, "a%d: a%d + a%d\n", i, i-1, i-1)
	}
	fmt.Fprintf(&b, "cm: {apiVersion: \"v1\", kind: \"ConfigMap\", metadata: name: \"bomb\", data: k: a%d}\n", n)
	return b.String()
}

// yamlBomb is a ConfigMap of about 64 KiB + 10 bytes a key whose n data
// values are aliases of a 64 KiB string: n=1000 is issue 9's 74 KiB file
// that expands to 62 MiB.
func yamlBomb(n int) string {
	var b strings.Builder
	b.WriteString("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: bomb\n  annotations:\n    x: &a \"")
	b.WriteString(strings.Repeat("x", 64<<10))
	b.WriteString("\"\ndata:\n")
	for i := range n {
		fmt.Fprintf(&b, "  k%d: *a\n", i)
	}
	return b.String()
}

// bombHelperEnv makes TestBombHelper load the directory it names, in a
// process of its own, and report the problems and its peak RSS.
const bombHelperEnv = "FLOTILLA_SCHEMA_BOMB_DIR"

// TestBombHelper is not a test: TestLimitsRefuseBombs runs it in a fresh
// process, so that VmHWM is the peak RSS of loading one bomb.
func TestBombHelper(t *testing.T) {
	dir := os.Getenv(bombHelperEnv)
	if dir == "" {
		t.Skip("run by TestLimitsRefuseBombs")
	}
	v, err := NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	_, ps := v.LoadDir(dir)
	out, _ := json.Marshal(struct {
		Problems Problems
		VmHWM    int64
	}{ps, procStatusBytes("VmHWM")})
	fmt.Printf("BOMB-RESULT %s\n", out)
}

// procStatusBytes reads a "kB" field of /proc/self/status.
func procStatusBytes(field string) int64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb << 10
		}
	}
	return -1
}

// TestLimitsRefuseBombs loads each bomb of issue 9, and a bigger one, in a
// fresh process: it is refused with a located Problem naming a limit,
// while the loading process's peak RSS stays under 500 MB.
func TestLimitsRefuseBombs(t *testing.T) {
	const maxRSS = 500 << 20
	for _, tc := range []struct {
		name, file, data string
		limits           []string // any of them
		line             int
	}{
		// 74 KiB expanding to 62 MiB: refused at the alias where the
		// document crosses 4 MiB, before anything expands it.
		{"yaml-62MiB", "bomb.yaml", yamlBomb(1000), []string{LimitDocumentExpandedBytes}, 70},
		{"yaml-250MiB", "bomb.yaml", yamlBomb(4000), []string{LimitDocumentExpandedBytes}, 70},
		// 22 doublings: a 32 MiB string, which is too big an object (or
		// too much memory, should the sandbox get less of it).
		{"cue-22", "bomb.cue", cueBomb(22), []string{LimitObjectBytes, LimitCUEMemory}, 24},
		// 28 doublings: 2 GiB; the sandbox stops at its memory limit.
		{"cue-28", "bomb.cue", cueBomb(28), []string{LimitCUEMemory}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, tc.file), []byte(tc.data), 0o644); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(os.Args[0], "-test.run=^TestBombHelper$", "-test.count=1")
			cmd.Env = append(os.Environ(), bombHelperEnv+"="+dir)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("helper: %v\n%s", err, out)
			}
			_, js, ok := strings.Cut(string(out), "BOMB-RESULT ")
			if !ok {
				t.Fatalf("no result from the helper:\n%s", out)
			}
			var res struct {
				Problems Problems
				VmHWM    int64
			}
			if err := json.Unmarshal([]byte(strings.SplitN(js, "\n", 2)[0]), &res); err != nil {
				t.Fatal(err)
			}
			t.Logf("%d-byte %s: peak RSS of the loading process %s; %v", len(tc.data), tc.file, formatBytes(res.VmHWM), res.Problems)
			errs := res.Problems.Errors()
			if len(errs) != 1 {
				t.Fatalf("want one problem, got %v", res.Problems)
			}
			p := errs[0]
			found := false
			for _, l := range tc.limits {
				found = found || p.Limit == l
			}
			if !found || p.File != tc.file || p.Line != tc.line || !strings.Contains(p.Reason, "(limit: "+p.Limit+" = ") {
				t.Errorf("got %s (limit %q), want one of limits %v at %s:%d", p, p.Limit, tc.limits, tc.file, tc.line)
			}
			if !errors.Is(res.Problems.Err(), ErrLimit) {
				t.Errorf("errors.Is(Err(), ErrLimit) is false")
			}
			if res.VmHWM <= 0 || res.VmHWM > maxRSS {
				t.Errorf("peak RSS %s, want under %s", formatBytes(res.VmHWM), formatBytes(maxRSS))
			}
		})
	}
}

// TestLimitsEach crosses each limit just once, with small limits.
func TestLimitsEach(t *testing.T) {
	const cm = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: %s\ndata: {v: %q}\n"
	cms := func(prefix string, n int) string {
		var docs []string
		for i := range n {
			docs = append(docs, fmt.Sprintf(cm, fmt.Sprintf("%s%d", prefix, i), "x"))
		}
		return strings.Join(docs, "---\n")
	}
	for _, tc := range []struct {
		name   string
		limits Limits
		files  fstest.MapFS
		want   string // the Problem's String, "" for none
		limit  string
	}{
		{"objects within", Limits{MaxObjects: 5}, fstest.MapFS{"a.yaml": {Data: []byte(cms("a", 3))}, "b.yaml": {Data: []byte(cms("b", 2))}}, "", ""},
		{"objects beyond", Limits{MaxObjects: 5}, fstest.MapFS{"a.yaml": {Data: []byte(cms("a", 3))}, "b.yaml": {Data: []byte(cms("b", 3))}},
			"b.yaml:13:1: too many objects: the commit has more than 5, and this is the first beyond (limit: MaxObjects = 5)", LimitObjects},
		{"list items count", Limits{MaxObjects: 2}, fstest.MapFS{"a.json": {Data: []byte(`{"apiVersion":"v1","kind":"List","items":[` +
			`{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a"}},{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"b"}},` +
			`{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c"}}]}`)}},
			"a.json:1:", LimitObjects},
		{"object bytes", Limits{MaxObjectBytes: 1000}, fstest.MapFS{"a.yaml": {Data: []byte(fmt.Sprintf(cm, "big", strings.Repeat("x", 1000)))}},
			"a.yaml:1:1: object is 1.05 KiB of JSON, larger than 1000 bytes (limit: MaxObjectBytes = 1000 bytes)", LimitObjectBytes},
		{"file bytes", Limits{MaxFileBytes: 100}, fstest.MapFS{"a.yaml": {Data: []byte(fmt.Sprintf(cm, "big", strings.Repeat("x", 100)))}},
			"a.yaml:0:0: file is larger than 100 bytes (limit: MaxFileBytes = 100 bytes)", LimitFileBytes},
		{"commit bytes", Limits{MaxCommitBytes: 150}, fstest.MapFS{"a.yaml": {Data: []byte(cms("a", 1))}, "b.yaml": {Data: []byte(cms("b", 1))}, "c.yaml": {Data: []byte(cms("c", 1))}},
			"c.yaml:0:0: the manifests of the commit are larger than 150 bytes in all; this file and those after it were not read (limit: MaxCommitBytes = 150 bytes)", LimitCommitBytes},
		{"document expanded", Limits{MaxDocumentExpandedBytes: 2000}, fstest.MapFS{"a.yaml": {Data: []byte(
			"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n  annotations: {x: &x \"" + strings.Repeat("y", 500) + "\"}\ndata:\n  a: *x\n  b: *x\n  c: *x\n  d: *x\n")}},
			"a.yaml:9:6: document expands to more than 1.95 KiB through YAML aliases (limit: MaxDocumentExpandedBytes = 1.95 KiB)", LimitDocumentExpandedBytes},
		{"file expanded", Limits{MaxFileExpandedBytes: 3000}, fstest.MapFS{"a.yaml": {Data: []byte(
			"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndata: {a: &x \"" + strings.Repeat("y", 1000) + "\", b: *x}\n---\n" +
				"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: b}\ndata: {a: &y \"" + strings.Repeat("y", 1000) + "\", b: *y}\n")}},
			"a.yaml:6:1: the documents of this file expand to more than 2.93 KiB through YAML aliases; this is the document where they cross it (limit: MaxFileExpandedBytes = 2.93 KiB)", LimitFileExpandedBytes},
		{"aliases within", Limits{}, fstest.MapFS{"a.yaml": {Data: []byte(
			"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n  labels: &l {app: web}\n  annotations: *l\ndata: {a: &x b, c: *x}\n")}}, "", ""},
		{"CUE time", Limits{CUETime: 2 * time.Second}, fstest.MapFS{"slow.cue": {Data: []byte(`package slow

import "strings"

s: strings.Repeat("ab", 1000000)
d: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
n: [for h in d for i in d for j in d for k in d for l in d {strings.Count(s, "ab\(h)\(i)\(j)\(k)\(l)")}]
`)}}, "slow.cue:1:1: evaluating this CUE file takes longer than 2s (limit: CUETime = 2s)", LimitCUETime},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, err := NewValidatorWithLimits(tc.limits)
			if err != nil {
				t.Fatal(err)
			}
			_, ps := v.Load(tc.files)
			errs := ps.Errors()
			if tc.want == "" {
				if len(errs) != 0 {
					t.Fatalf("want no error, got:\n%s", problemLines(ps))
				}
				return
			}
			if len(errs) != 1 || !strings.HasPrefix(errs[0].String(), tc.want) || errs[0].Limit != tc.limit {
				t.Fatalf("want one problem %s (limit %s), got:\n%s", tc.want, tc.limit, problemLines(ps))
			}
			if err := ps.Err(); !errors.Is(err, ErrLimit) || !ps.Limited() {
				t.Errorf("the problem is not marked as a limit's: %v", err)
			}
		})
	}
	// A problem of content is not a limit's.
	v := validator(t)
	_, ps := v.Load(fstest.MapFS{"a.yaml": {Data: []byte("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: A}\n")}})
	if err := ps.Err(); err == nil || errors.Is(err, ErrLimit) || ps.Limited() {
		t.Errorf("content problem marked as a limit's: %v", err)
	}
}

// TestValidateObjectLimit: the API's objects have the same size limit.
func TestValidateObjectLimit(t *testing.T) {
	v, err := NewValidatorWithLimits(Limits{MaxObjectBytes: 250})
	if err != nil {
		t.Fatal(err)
	}
	obj, err := strictDecode([]byte(benchConfigMap(1)))
	if err != nil {
		t.Fatal(err)
	}
	ps := v.ValidateObject(obj)
	if len(ps) != 1 || ps[0].Limit != LimitObjectBytes {
		t.Errorf("got %v", ps)
	}
}

// TestSandboxNeedsTheHook: a program whose main does not call
// MaybeRunSandbox refuses .cue manifests instead of evaluating them
// without limits (or running itself again as something else).
func TestSandboxNeedsTheHook(t *testing.T) {
	v := validator(t)
	sandboxHooked.Store(false)
	defer sandboxHooked.Store(true)
	_, ps := v.Load(fstest.MapFS{"a.cue": {Data: []byte("x: 1\n")}})
	if len(ps) != 1 || !strings.Contains(ps[0].Reason, "must call schema.MaybeRunSandbox") {
		t.Errorf("got %v", ps)
	}
}

// TestSandboxFailures: what the parent says when the child breaks the
// protocol, dies, or is killed.
func TestSandboxFailures(t *testing.T) {
	v := validator(t)
	files := []cueFile{{Name: "a.cue"}}
	for _, tc := range []struct {
		name   string
		answer string
		want   string
		limit  string
	}{
		{"no hello", `{"done":true}`, "a.cue:0:0: internal error: the CUE sandbox failed: the sandbox did not answer with protocol", ""},
		{"garbage", "hello\n", "a.cue:0:0: internal error: the CUE sandbox failed: unreadable answer", ""},
		{"cut short", `{"hello":"` + sandboxProto + `"}{"at":{"file":"a.cue","line":3}}`, "a.cue:3:0: internal error: the CUE sandbox failed: it stopped", ""},
		{"memory", `{"hello":"` + sandboxProto + `"}{"at":{"file":"a.cue","line":1}}{"limit":"CUEMemory"}`, "a.cue:1:1: evaluating this CUE file needs more than 512 MiB of memory", LimitCUEMemory},
		{"time", `{"hello":"` + sandboxProto + `"}{"at":{"file":"a.cue","line":7}}{"limit":"CUETime"}`, "a.cue:7:1: validating this object takes longer than 30s", LimitCUETime},
		{"child error", `{"hello":"` + sandboxProto + `"}{"error":"boom"}`, "a.cue:0:0: internal error: the CUE sandbox failed: boom", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := readSandbox(strings.NewReader(tc.answer), 1<<20)
			ps := v.sandboxProblems(files, o, nil, nil, "")
			if len(ps) != 1 || !strings.HasPrefix(ps[0].String(), tc.want) || ps[0].Limit != tc.limit {
				t.Errorf("got %v, want %s (limit %q)", ps, tc.want, tc.limit)
			}
		})
	}
	// The Go runtime's own out-of-memory death is the memory limit too.
	o := readSandbox(strings.NewReader(`{"hello":"`+sandboxProto+`"}`), 1<<20)
	ps := v.sandboxProblems(files, o, nil, errors.New("exit status 2"), "fatal error: runtime: out of memory\n")
	if len(ps) != 1 || ps[0].Limit != LimitCUEMemory {
		t.Errorf("out of memory: %v", ps)
	}
	// Too much output is the commit's size limit.
	big := `{"hello":"` + sandboxProto + `"}{"result":{"file":"a.cue","docs":[{"json":"` + strings.Repeat("x", 2000) + `"}]}}`
	if o := readSandbox(strings.NewReader(big), 1000); !o.tooMuch {
		t.Errorf("an answer beyond its bound was read whole")
	}
}

// TestLoadTenThousandObjects: issue 9's commit of 10,000 ConfigMaps with
// 200-byte values is within the default limits and validates whole (its
// speed is BenchmarkLoad's).
func TestLoadTenThousandObjects(t *testing.T) {
	if testing.Short() {
		t.Skip("10,000 documents (about 10 s with -race)")
	}
	v := validator(t)
	// In files of 100 documents, as a repository might hold them.
	fsys := fstest.MapFS{}
	for f := range 100 {
		var docs []string
		for i := range 100 {
			docs = append(docs, benchConfigMap(f*100+i))
		}
		fsys[fmt.Sprintf("cms/%03d.yaml", f)] = &fstest.MapFile{Data: []byte(strings.Join(docs, "---\n"))}
	}
	ms, ps := v.Load(fsys)
	if err := ps.Err(); err != nil {
		t.Fatal(err)
	}
	if len(ms) != 10000 {
		t.Fatalf("%d manifests, want 10000", len(ms))
	}
	for i, m := range ms {
		if want := fmt.Sprintf("cm-%d", i); m.Object.GetName() != want {
			t.Fatalf("manifest %d is %s, want %s: not in file order", i, m.Object.GetName(), want)
		}
	}
}
