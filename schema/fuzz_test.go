package schema

import (
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
	v := validator(f)
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
