package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/dgraph-io/badger/v4"
	"github.com/flotilla-dev/flotilla/internal/testkit"
	corev1 "k8s.io/api/core/v1"
)

// TestTxnLarge: a Txn of 25,000 ConfigMaps of 200-byte values (the issue's
// commit, 2.5 times over) commits whole through the journal; reads go on
// while the journal is written and wait while it is applied; each write
// has its own revision; a reopened store has the same.
func TestTxnLarge(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("a test of size, 10 times slower under -race: go test -run TestTxnLarge ./cluster/store/")
	}
	const n = 25000
	ctx := context.Background()
	dir := t.TempDir()
	var phases []string
	var s *Badger
	cfg := Config{Dir: dir, Logger: testkit.Logger(t)}
	cfg.testHook = func(p commitPhase) {
		readable := s.viewMu.TryRLock()
		if readable {
			s.viewMu.RUnlock()
		}
		phases = append(phases, fmt.Sprintf("%s readable=%v", p, readable))
	}
	s, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	mustCreate(t, s, configMap("web", "before", nil))
	value := strings.Repeat("v", 200)
	rev, err := s.Txn(ctx, func(tx Tx) error {
		for i := range n {
			if _, err := tx.Create(configMap("big", fmt.Sprintf("cm-%05d", i), map[string]string{"v": value})); err != nil {
				return err
			}
		}
		objs, err := tx.List("configmaps", ListOptions{})
		if err != nil || len(objs) != n+1 {
			return fmt.Errorf("list in the txn: %d objects, %v", len(objs), err)
		}
		_, err = tx.Delete("configmaps", "web", "before", DeleteOptions{})
		return err
	})
	if err != nil || rev != n+2 || s.Revision() != n+2 {
		t.Fatalf("txn: revision %d (%d), err %v, want %d", rev, s.Revision(), err, n+2)
	}
	want := []string{
		"journal-half readable=true", "journal-written readable=true", "sealed readable=true",
		"apply-half readable=false", "applied readable=false",
	}
	if fmt.Sprint(phases) != fmt.Sprint(want) {
		t.Errorf("phases %v, want %v", phases, want)
	}
	check := func(s *Badger) {
		t.Helper()
		objs, rev, err := s.List(ctx, "configmaps", ListOptions{})
		if err != nil || len(objs) != n || rev != n+2 {
			t.Fatalf("list: %d objects at revision %d, err %v", len(objs), rev, err)
		}
		for i, o := range objs {
			if o.GetName() != fmt.Sprintf("cm-%05d", i) || rv(t, o) != int64(i)+2 {
				t.Fatalf("object %d: %s rv %s", i, o.GetName(), o.GetResourceVersion())
			}
		}
	}
	check(s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if s, err = Open(Config{Dir: dir, Logger: testkit.Logger(t)}); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	check(s)
	_ = s.view(func(btx *badger.Txn) error {
		if _, err := btx.Get(metaPendingKey); !errors.Is(err, badger.ErrKeyNotFound) {
			t.Errorf("the seal is left: %v", err)
		}
		return nil
	})
}

// TestTxnMaxBytes: a Txn just under a byte limit of 64 MiB of object JSON
// commits; one over it is refused with ErrTooLarge naming the limit and
// writes nothing.
func TestTxnMaxBytes(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("a test of size, 10 times slower under -race: go test -run TestTxnMaxBytes ./cluster/store/")
	}
	ctx := context.Background()
	s, err := Open(Config{Dir: t.TempDir(), MaxTxnBytes: 64 << 20, Logger: testkit.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	value := strings.Repeat("v", 1<<20-1024) // 1 MiB objects, over Badger's value threshold
	fill := func(tx Tx, n int) error {
		for i := range n {
			if _, err := tx.Create(configMap("big", fmt.Sprintf("cm-%02d", i), map[string]string{"v": value})); err != nil {
				return err
			}
		}
		return nil
	}
	_, err = s.Txn(ctx, func(tx Tx) error { return fill(tx, 65) })
	if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "67108864 bytes (64 MiB)") {
		t.Errorf("65 MiB: err %v, want ErrTooLarge naming 64 MiB", err)
	}
	if s.Revision() != 0 {
		t.Errorf("a refused txn wrote: revision %d", s.Revision())
	}
	rev, err := s.Txn(ctx, func(tx Tx) error { return fill(tx, 63) })
	if err != nil || rev != 63 {
		t.Fatalf("63 MiB: revision %d, err %v", rev, err)
	}
	objs, _, err := s.List(ctx, "configmaps", ListOptions{})
	if err != nil || len(objs) != 63 || len(objs[62].(*corev1.ConfigMap).Data["v"]) != len(value) {
		t.Errorf("after the 63 MiB txn: %d objects, err %v", len(objs), err)
	}
}

// TestTxnTooLarge: past each limit a write fails with ErrTooLarge naming
// it; past a transaction's limits the Txn fails even if its function
// ignores the error, and writes nothing.
func TestTxnTooLarge(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name   string
		cfg    Config
		fn     func(tx Tx) error
		inErr  string
		limit  string // the LimitError's
		single bool   // the error is per object: the rest commits
	}{
		{name: "writes", cfg: Config{MaxTxnWrites: 10}, inErr: "more than 10 writes", limit: "MaxTxnWrites",
			fn: func(tx Tx) error { return createN(tx, 11, 10) }},
		{name: "writes ignored", cfg: Config{MaxTxnWrites: 10}, inErr: "more than 10 writes", limit: "MaxTxnWrites",
			fn: func(tx Tx) error { _ = createN(tx, 11, 10); return nil }},
		{name: "deletes count", cfg: Config{MaxTxnWrites: 10}, inErr: "more than 10 writes", limit: "MaxTxnWrites",
			fn: func(tx Tx) error {
				if err := createN(tx, 10, 10); err != nil {
					return err
				}
				_, err := tx.Delete("configmaps", "web", "cm-0", DeleteOptions{})
				return err
			}},
		{name: "bytes", cfg: Config{MaxTxnBytes: 10000}, inErr: "more than 10000 bytes", limit: "MaxTxnBytes",
			fn: func(tx Tx) error { _ = createN(tx, 20, 1000); return nil }},
		{name: "object", cfg: Config{MaxObjectBytes: 2000}, inErr: "limit of 2000 per object", limit: "MaxObjectBytes", single: true,
			fn: func(tx Tx) error {
				if err := createN(tx, 1, 100); err != nil {
					return err
				}
				_, err := tx.Create(configMap("web", "huge", map[string]string{"v": strings.Repeat("x", 2000)}))
				if !errors.Is(err, ErrTooLarge) {
					return fmt.Errorf("huge object: %v", err)
				}
				return nil
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := Open(tt.cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			rev, err := s.Txn(ctx, tt.fn)
			if tt.single {
				if err != nil || rev != 1 {
					t.Errorf("revision %d, err %v; want the other write committed", rev, err)
				}
				_, err := s.Create(ctx, configMap("web", "huge", map[string]string{"v": strings.Repeat("x", 2000)}))
				var le *LimitError
				if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), tt.inErr) || !errors.As(err, &le) || le.Limit != tt.limit {
					t.Errorf("single create: %v, want ErrTooLarge with %q naming %s", err, tt.inErr, tt.limit)
				}
				return
			}
			if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), tt.inErr) {
				t.Errorf("err %v, want ErrTooLarge with %q", err, tt.inErr)
			}
			var le *LimitError
			if !errors.As(err, &le) || le.Limit != tt.limit {
				t.Errorf("err %v does not name the limit %s", err, tt.limit)
			}
			if rev != 0 || s.Revision() != 0 {
				t.Errorf("a refused txn wrote: revision %d", s.Revision())
			}
		})
	}
}

func createN(tx Tx, n, valueBytes int) error {
	for i := range n {
		cm := configMap("web", fmt.Sprintf("cm-%d", i), map[string]string{"v": strings.Repeat("x", valueBytes)})
		if _, err := tx.Create(cm); err != nil {
			return err
		}
	}
	return nil
}

// TestTxnOverlay: reads in a Txn see its staged writes over the store:
// created, updated and deleted objects, in Get and List, and a name a
// deletion freed can be created again.
func TestTxnOverlay(t *testing.T) {
	ctx := context.Background()
	s := MemoryFor(t)
	mustCreate(t, s, pod("a", "keep", nil, ""))
	mustCreate(t, s, pod("a", "gone", nil, ""))
	mustCreate(t, s, pod("b", "moved", nil, "n1"))
	_, err := s.Txn(ctx, func(tx Tx) error {
		if _, err := tx.Delete("pods", "a", "gone", DeleteOptions{}); err != nil {
			return err
		}
		if _, err := tx.Get("pods", "a", "gone"); !errors.Is(err, ErrNotFound) {
			return fmt.Errorf("get deleted: %v", err)
		}
		if _, err := tx.Create(pod("a", "new", nil, "n1")); err != nil {
			return err
		}
		p := pod("b", "moved", nil, "n2")
		if _, err := tx.Update(p); err != nil {
			return err
		}
		got := func(opts ListOptions) string {
			objs, err := tx.List("pods", opts)
			if err != nil {
				return err.Error()
			}
			var out []string
			for _, o := range objs {
				out = append(out, o.GetNamespace()+"/"+o.GetName())
			}
			return strings.Join(out, " ")
		}
		if g := got(ListOptions{}); g != "a/keep a/new b/moved" {
			return fmt.Errorf("list: %s", g)
		}
		if g := got(ListOptions{FieldSelector: "spec.nodeName=n2"}); g != "b/moved" {
			return fmt.Errorf("list by node: %s", g)
		}
		if g := got(ListOptions{Namespace: "a"}); g != "a/keep a/new" {
			return fmt.Errorf("list namespace a: %s", g)
		}
		if _, err := tx.Create(pod("a", "gone", map[string]string{"again": "yes"}, "")); err != nil {
			return fmt.Errorf("create again: %v", err)
		}
		if _, err := tx.Create(pod("a", "new", nil, "")); !errors.Is(err, ErrExists) {
			return fmt.Errorf("create staged twice: %v", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	g, err := s.Get(ctx, "pods", "a", "gone")
	if err != nil || g.GetLabels()["again"] != "yes" || rv(t, g) != 7 {
		t.Errorf("recreated object: %v, %v", g, err)
	}
}
