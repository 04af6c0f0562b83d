package logfile

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flotilla-dev/flotilla/internal/testkit"
)

// TestRotates writes 3.5 MiB of log lines through a 1 MiB log kept to 2
// rotated files: the current file stays under 1 MiB, exactly 2 rotated
// files remain, compressed, and together they hold the newest lines.
func TestRotates(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "flotilla.log")
	w, err := Open(Config{Path: path, MaxSizeMiB: 1, MaxFiles: 2})
	if err != nil {
		t.Fatal(err)
	}
	line := strings.Repeat("x", 1024)
	const lines = 3584 // 3.5 MiB in lines of 1024 bytes
	for i := range lines {
		if _, err := fmt.Fprintf(w, "%08d %s\n", i, line[:1024-10]); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() > 1<<20 || st.Size() == 0 {
		t.Errorf("current log is %d bytes, want (0, 1 MiB]", st.Size())
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("log mode %v, want 0600", st.Mode().Perm())
	}
	// Compression and pruning run in the background after a rotation.
	var rotated []string
	testkit.Eventually(t, "two compressed rotated logs", 10*time.Second, func() error {
		rotated, _ = filepath.Glob(filepath.Join(dir, "flotilla-*.log*"))
		gz := 0
		for _, r := range rotated {
			if strings.HasSuffix(r, ".gz") {
				gz++
			}
		}
		if len(rotated) != 2 || gz != 2 {
			return fmt.Errorf("rotated files %v", rotated)
		}
		return nil
	})
	// The last line written is in the current file, and the rotated files
	// hold the lines just before it: nothing between them was lost.
	cur, _ := os.ReadFile(path)
	if !bytes.HasPrefix(lastLine(cur), fmt.Appendf(nil, "%08d ", lines-1)) {
		t.Errorf("current log ends with %.20q", lastLine(cur))
	}
	total := int64(len(cur))
	for _, r := range rotated {
		f, err := os.Open(r)
		if err != nil {
			t.Fatal(err)
		}
		zr, err := gzip.NewReader(f)
		if err != nil {
			t.Fatalf("%s: %v", r, err)
		}
		n, err := io.Copy(io.Discard, zr)
		f.Close()
		if err != nil {
			t.Fatalf("%s: %v", r, err)
		}
		total += n
	}
	if total < 2<<20 {
		t.Errorf("current and rotated logs hold %d bytes, want at least 2 MiB of the newest lines", total)
	}
}

func TestOpenValidates(t *testing.T) {
	if _, err := Open(Config{}); err == nil {
		t.Error("Open without a path succeeded")
	}
	if _, err := Open(Config{Path: filepath.Join(t.TempDir(), "l.log"), MaxSizeMiB: -1}); err == nil {
		t.Error("Open with a negative size succeeded")
	}
	if _, err := Open(Config{Path: "/proc/flotilla-no/l.log"}); err == nil {
		t.Error("Open in an impossible directory succeeded")
	}
}

func lastLine(b []byte) []byte {
	b = bytes.TrimRight(b, "\n")
	if i := bytes.LastIndexByte(b, '\n'); i >= 0 {
		return b[i+1:]
	}
	return b
}
