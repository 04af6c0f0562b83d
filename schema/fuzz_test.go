package schema

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"
	"time"
)

// FuzzLoad feeds arbitrary bytes to the YAML, JSON and CUE decoders. Load
// must never panic (a recovered panic shows as an "internal error" Problem)
// and every Problem must name its file.
func FuzzLoad(f *testing.F) {
	seeds, _ := filepath.Glob(filepath.Join("testdata", "*", "*"))
	for i, s := range seeds {
		data, err := os.ReadFile(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(uint8(i), data)
	}
	f.Add(uint8(0), []byte("---\n...\n---\n"))
	f.Add(uint8(1), []byte(`{"apiVersion":"v1","kind":"List","items":[1]}`))
	f.Add(uint8(2), []byte("a: b: {apiVersion: \"v1\", kind: \"Pod\"}\n"))
	f.Add(uint8(0), []byte("apiVersion: v1\nkind: Pod\nmetadata: &a {name: *a}\n"))
	// .cue input is evaluated in this process: a sandbox process per input
	// would make the fuzzer a thousand times slower (FuzzSandboxAnswer and
	// FuzzSandboxRequest cover the sandbox's decoders).
	v, err := NewValidator()
	if err != nil {
		f.Fatal(err)
	}
	v.cueInProcess = true
	names := []string{"m.yaml", "m.json", "m.cue"}
	f.Fuzz(func(t *testing.T, which uint8, data []byte) {
		name := names[int(which)%len(names)]
		var ms []Manifest
		var ps Problems
		done := make(chan struct{})
		go func() {
			defer close(done)
			ms, ps = v.Load(fstest.MapFS{name: {Data: data}})
		}()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatalf("Load of a %d-byte %s has taken over 10s", len(data), name)
		}
		for _, p := range ps {
			if strings.Contains(p.Reason, "internal error") {
				t.Fatalf("decoder panicked: %s", p)
			}
			if p.File != name {
				t.Errorf("problem without its file: %s", p)
			}
		}
		for _, m := range ms {
			if m.Object == nil || m.File != name {
				t.Errorf("bad manifest %+v", m)
			}
		}
	})
}

// FuzzAliasCheck feeds arbitrary YAML to the alias expansion check: it
// never panics, and what it refuses is located in the file and marked as a
// limit's.
func FuzzAliasCheck(f *testing.F) {
	f.Add([]byte("a: &a [1, 2]\nb: [*a, *a]\n"))
	f.Add([]byte("a: &a [*a]\n"))
	f.Add([]byte("x: &x {y: &y [z]}\n---\nq: {<<: *x, r: *y}\n"))
	f.Add([]byte(yamlBomb(3)))
	lim := Limits{MaxDocumentExpandedBytes: 1 << 10, MaxFileExpandedBytes: 4 << 10}.withDefaults()
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, p := range checkAliases("f.yaml", data, lim) {
			if p.File != "f.yaml" || p.Limit == "" || p.Line <= 0 {
				t.Errorf("bad problem %+v", p)
			}
		}
	})
}

// FuzzSandboxAnswer feeds arbitrary bytes to the parent's reader of the
// sandbox's answer: no panic, and a failure is always explained.
func FuzzSandboxAnswer(f *testing.F) {
	hello := `{"hello":"` + sandboxProto + `"}`
	f.Add([]byte(hello + `{"at":{"file":"a.cue","line":2}}{"result":{"file":"a.cue","docs":[{"json":{"a":1},"line":2}]}}{"done":true}`))
	f.Add([]byte(hello + `{"limit":"CUEMemory"}`))
	f.Add([]byte(hello + `{"result":{"file":"a.cue","problems":[{"file":"a.cue","reason":"x"}]}}`))
	f.Add([]byte(`{"done":true}`))
	v := validator(f)
	files := []cueFile{{Name: "a.cue"}}
	f.Fuzz(func(t *testing.T, data []byte) {
		o := readSandbox(bytes.NewReader(data), 1<<16)
		ps := v.sandboxProblems(files, o, nil, nil, "")
		if !o.done && len(ps) == 0 {
			t.Errorf("an unfinished answer without a problem: %+v", o)
		}
		for _, r := range o.results {
			for _, d := range r.Docs {
				_, _ = decodeOut(r.File, d)
			}
		}
	})
}

// FuzzSandboxRequest feeds arbitrary bytes to the child's reader of its
// request: no panic.
func FuzzSandboxRequest(f *testing.F) {
	f.Add([]byte(`{"proto":"` + sandboxProto + `","limits":{},"budget":3,"files":[{"name":"a.cue","data":"eDogMQo="}]}`))
	f.Add([]byte(`{"proto":"x"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		req, err := decodeSandboxRequest(bytes.NewReader(data))
		if err == nil && req.Proto != sandboxProto {
			t.Errorf("accepted protocol %q", req.Proto)
		}
	})
}

// FuzzValidateObject feeds arbitrary JSON, decoded as an API body would
// be, to ValidateObject: no panic, and every problem has a reason.
func FuzzValidateObject(f *testing.F) {
	f.Add([]byte(`{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"a"},"spec":{"replicas":-1}}`))
	f.Add([]byte(`{"apiVersion":"v1","kind":"Service","metadata":{"name":"a","uid":"x"},"spec":{"ports":[{"port":0,"targetPort":"http"}]},"status":{}}`))
	f.Add([]byte(`{"apiVersion":"v1","kind":"Secret","metadata":{"name":"a"},"data":{"k":"dg=="},"type":""}`))
	v := validator(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		obj, err := DecodeAny(data)
		if err != nil {
			return
		}
		for _, p := range v.ValidateObject(obj) {
			if p.Reason == "" || strings.Contains(p.Reason, "internal error") {
				t.Errorf("bad problem %+v", p)
			}
		}
	})
}
