package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flotilla-dev/flotilla/internal/testkit"
)

// TestRoleLogRotates writes 1.5 MiB of log records through a role's logger
// with --log-max-size 1: flotilla.log is rotated, stays under 1 MiB, and
// the rotated file is kept, gzipped.
func TestRoleLogRotates(t *testing.T) {
	dir := t.TempDir()
	w, path, err := openLog(dir, logOptions{maxSizeMiB: 1, maxFiles: 1})
	if err != nil {
		t.Fatal(err)
	}
	if path != filepath.Join(dir, "flotilla.log") {
		t.Errorf("log path %s", path)
	}
	log := roleLogger(w, &strings.Builder{}, false)
	msg := strings.Repeat("m", 1000)
	for i := range 1536 {
		log.Info(msg, "i", i)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(path); err != nil || st.Size() > 1<<20 {
		t.Fatalf("flotilla.log after 1.5 MiB: %v, %v; want at most 1 MiB", st, err)
	}
	testkit.Eventually(t, "one gzipped rotated log", 10*time.Second, func() error {
		rotated, _ := filepath.Glob(filepath.Join(dir, "flotilla-*.log.gz"))
		if len(rotated) != 1 {
			return fmt.Errorf("rotated: %v", rotated)
		}
		return nil
	})
	if _, _, err := openLog(dir, logOptions{maxSizeMiB: 0, maxFiles: 1}); err == nil || !strings.Contains(err.Error(), "--log-max-size") {
		t.Errorf("openLog with size 0: %v, want an error naming --log-max-size", err)
	}
}
