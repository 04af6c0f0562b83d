package volumes

import (
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func names(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range es {
		n := e.Name()
		if strings.HasPrefix(n, tsPrefix) {
			n = "..TS"
		}
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

func TestWriteAtomic(t *testing.T) {
	dir := t.TempDir()
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	p1 := map[string]File{"app.conf": {[]byte("v1"), 0o644}, "keys/a": {[]byte("A"), 0o400}, "gone": {[]byte("x"), 0o644}}
	wrote, err := writeAtomic(dir, p1, now)
	if err != nil || !wrote {
		t.Fatalf("first write = %v, %v", wrote, err)
	}
	if got := strings.Join(names(t, dir), " "); got != "..TS ..data app.conf gone keys" {
		t.Fatalf("dir holds %s", got)
	}
	if readFile(t, filepath.Join(dir, "app.conf")) != "v1" || readFile(t, filepath.Join(dir, "keys/a")) != "A" {
		t.Fatal("content")
	}
	if link, _ := os.Readlink(filepath.Join(dir, "app.conf")); link != "..data/app.conf" {
		t.Fatalf("app.conf links to %q", link)
	}
	if info, _ := os.Stat(filepath.Join(dir, "keys/a")); info.Mode().Perm() != 0o400 {
		t.Fatalf("mode %v", info.Mode())
	}
	ts, _ := os.Readlink(filepath.Join(dir, dataLink))
	if !strings.HasPrefix(ts, "..2026_01_02_03_04_05.") {
		t.Fatalf("..data -> %s", ts)
	}

	// The same payload again: nothing written, the same data dir.
	if wrote, err := writeAtomic(dir, p1, now.Add(time.Minute)); err != nil || wrote {
		t.Fatalf("unchanged write = %v, %v", wrote, err)
	}
	if ts2, _ := os.Readlink(filepath.Join(dir, dataLink)); ts2 != ts {
		t.Fatal("unchanged payload swapped the data dir")
	}
	// A mode change alone is a change.
	p1m := map[string]File{"app.conf": {[]byte("v1"), 0o600}, "keys/a": {[]byte("A"), 0o400}, "gone": {[]byte("x"), 0o644}}
	if wrote, err := writeAtomic(dir, p1m, now); err != nil || !wrote {
		t.Fatalf("mode change = %v, %v", wrote, err)
	}

	// An open file keeps its content; the path shows the new one; a removed
	// key's link goes; the old data dir goes.
	f, err := os.Open(filepath.Join(dir, "app.conf"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p2 := map[string]File{"app.conf": {[]byte("v2"), 0o644}, "keys/a": {[]byte("A"), 0o400}, "keys/b": {[]byte("B"), 0o644}}
	if wrote, err := writeAtomic(dir, p2, now.Add(time.Hour)); err != nil || !wrote {
		t.Fatalf("second write = %v, %v", wrote, err)
	}
	if got := readFile(t, filepath.Join(dir, "app.conf")); got != "v2" {
		t.Fatalf("after update: %q", got)
	}
	buf := make([]byte, 10)
	n, _ := f.Read(buf)
	if string(buf[:n]) != "v1" {
		t.Fatalf("open file reads %q, want the old content", buf[:n])
	}
	if got := strings.Join(names(t, dir), " "); got != "..TS ..data app.conf keys" {
		t.Fatalf("dir holds %s after update", got)
	}
	if readFile(t, filepath.Join(dir, "keys/b")) != "B" {
		t.Fatal("new key missing")
	}

	// An empty payload empties the volume.
	if _, err := writeAtomic(dir, map[string]File{}, now); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(names(t, dir), " "); got != "..TS ..data" {
		t.Fatalf("dir holds %s after emptying", got)
	}
}

func TestWriteAtomicLeavesOthersAndCleansLeftovers(t *testing.T) {
	dir := t.TempDir()
	// a subPath directory someone created, and a data dir of a writer that died
	if err := os.Mkdir(filepath.Join(dir, "mine"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "..2020_01_01_00_00_00.123"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := writeAtomic(dir, map[string]File{"k": {[]byte("v"), 0o644}}, time.Now()); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(names(t, dir), " "); got != "..TS ..data k mine" {
		t.Fatalf("dir holds %s", got)
	}
}

func TestWriteAtomicRejectsBadPaths(t *testing.T) {
	for _, p := range []string{"", "/etc/passwd", "../x", "a/../../x", "..data", "a//b", "./a"} {
		if _, err := writeAtomic(t.TempDir(), map[string]File{p: {}}, time.Now()); err == nil {
			t.Errorf("path %q accepted", p)
		}
	}
}
