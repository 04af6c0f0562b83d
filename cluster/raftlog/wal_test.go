package raftlog

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.etcd.io/raft/v3/raftpb"

	"github.com/flotilla-dev/flotilla/internal/testkit"
)

// writeTestWAL writes a fresh WAL with entries 1..n (term 1) and a
// HardState committing them, and returns its segment's path.
func writeTestWAL(t *testing.T, dir string, n int) string {
	t.Helper()
	w, _, found, err := openWAL(dir, testkit.LoggerAt(t, slog.LevelInfo))
	if err != nil || found {
		t.Fatalf("openWAL on an empty dir: found=%v, %v", found, err)
	}
	defer w.close()
	for i := 1; i <= n; i++ {
		e := &raftpb.Entry{Term: new(uint64(1)), Index: new(uint64(i)), Data: []byte(fmt.Sprintf("entry %d", i))}
		hs := &raftpb.HardState{Term: new(uint64(1)), Vote: new(uint64(1)), Commit: new(uint64(i))}
		if err := w.save(hs, []*raftpb.Entry{e}, true); err != nil {
			t.Fatal(err)
		}
	}
	return w.path
}

func TestWALRoundTrip(t *testing.T) {
	dir := t.TempDir()
	writeTestWAL(t, dir, 10)
	w, st, found, err := openWAL(dir, testkit.Logger(t))
	if err != nil || !found {
		t.Fatalf("reopen: found=%v, %v", found, err)
	}
	defer w.close()
	if len(st.ents) != 10 || st.ents[9].GetIndex() != 10 || string(st.ents[9].GetData()) != "entry 10" || st.hs.GetCommit() != 10 {
		t.Fatalf("read back %d entries, hard state %v", len(st.ents), st.hs)
	}
	// An entry at an index already held replaces the tail, as in Raft.
	e := &raftpb.Entry{Term: new(uint64(2)), Index: new(uint64(8)), Data: []byte("new 8")}
	if err := w.save(nil, []*raftpb.Entry{e}, true); err != nil {
		t.Fatal(err)
	}
	w.close()
	_, st, _, err = openWAL(dir, testkit.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(st.ents) != 8 || string(st.ents[7].GetData()) != "new 8" {
		t.Fatalf("after overwrite: %d entries, last %q", len(st.ents), st.ents[len(st.ents)-1].GetData())
	}
}

// Every cut inside the last record is a torn tail: dropped, the rest kept.
func TestWALTornTail(t *testing.T) {
	dir := t.TempDir()
	path := writeTestWAL(t, dir, 5)
	full, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	st, _, err := parseSegment(path, full)
	if err != nil {
		t.Fatal(err)
	}
	// The last record is entry 5's HardState; find where it starts.
	lastStart := 0
	for off := 0; off < len(full); {
		n := int(le32(full[off:]))
		lastStart, off = off, off+recHeaderLen+n
	}
	for cut := lastStart + 1; cut < len(full); cut++ {
		got, valid, err := parseSegment(path, full[:cut])
		if err != nil {
			t.Fatalf("cut at %d: %v", cut, err)
		}
		if valid != int64(lastStart) || len(got.ents) != len(st.ents) || got.hs.GetCommit() != 4 {
			t.Fatalf("cut at %d: valid %d (want %d), %d entries, commit %d", cut, valid, lastStart, len(got.ents), got.hs.GetCommit())
		}
	}
	// A zeroed tail (allocated, never written) is torn too.
	zeroed := append(slices.Clone(full), make([]byte, 100)...)
	if _, valid, err := parseSegment(path, zeroed); err != nil || valid != int64(len(full)) {
		t.Fatalf("zeroed tail: valid %d, %v", valid, err)
	}

	// Through a Node: cut the WAL of a stopped one-voter group, restart.
	c := newCluster(t, nil, 1)
	for i := range 10 {
		propose(t, c.node(1), fmt.Sprintf("e%d", i))
	}
	c.stop(1)
	seg, _ := readWAL(t, c.dirs[1])
	fi, err := os.Stat(seg)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(seg, fi.Size()-3); err != nil {
		t.Fatal(err)
	}
	c.start(1, nil)
	propose(t, c.node(1), "after")
	if got := c.sm(1).Items(); len(got) != 11 || got[10] != "after" {
		t.Fatalf("after a torn tail: %q", got)
	}
	if fi2, _ := os.Stat(seg); fi2 == nil || fi2.Size() <= fi.Size()-3 {
		t.Fatal("the WAL did not grow after the restart")
	}
}

func le32(b []byte) uint32 {
	return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
}

// A bad byte with whole records after it is corruption, wherever it is:
// in a length, a checksum, a type or a payload.
func TestWALCorruptMiddle(t *testing.T) {
	dir := t.TempDir()
	path := writeTestWAL(t, dir, 6)
	full, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var starts []int
	for off := 0; off < len(full); off += recHeaderLen + int(le32(full[off:])) {
		starts = append(starts, off)
	}
	lastStart := starts[len(starts)-1]
	for pos := 0; pos < lastStart; pos++ {
		bad := slices.Clone(full)
		bad[pos] ^= 0x40
		_, _, err := parseSegment(path, bad)
		if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("byte %d flipped: %v; want ErrCorrupt", pos, err)
		}
		rec := starts[0]
		for _, s := range starts {
			if s <= pos {
				rec = s
			}
		}
		if want := fmt.Sprintf("%s at offset %d", path, rec); !strings.Contains(err.Error(), want) {
			t.Fatalf("byte %d flipped: %v; want it to name %q", pos, err, want)
		}
	}

	// Start refuses such a WAL, and says where.
	mid := len(full) / 2
	full[mid] ^= 0xff
	if err := os.WriteFile(path, full, 0o600); err != nil {
		t.Fatal(err)
	}
	nw := NewMemNetwork()
	defer nw.Close()
	_, err = Start(Config{ID: 1, Dir: dir, Transport: nw.Transport(1), StateMachine: &testSM{}, Logger: testkit.Logger(t)})
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), filepath.Base(path)) || !strings.Contains(err.Error(), "offset") {
		t.Fatalf("Start on a corrupt WAL: %v; want ErrCorrupt naming the file and offset", err)
	}
}

func TestSnapFileCorrupt(t *testing.T) {
	dir := t.TempDir()
	snap := &raftpb.Snapshot{
		Data:     encodeSnapData([]Peer{{ID: 1, Addr: "a"}}, []byte("state")),
		Metadata: &raftpb.SnapshotMetadata{Index: new(uint64(7)), Term: new(uint64(2)), ConfState: &raftpb.ConfState{Voters: []uint64{1}}},
	}
	if err := saveSnapFile(dir, snap); err != nil {
		t.Fatal(err)
	}
	got, err := loadSnapFile(dir, 2, 7)
	if err != nil {
		t.Fatal(err)
	}
	members, state, err := decodeSnapData(got.GetData())
	if err != nil || string(state) != "state" || len(members) != 1 || members[0].Addr != "a" {
		t.Fatalf("read back %v %q %v", members, state, err)
	}
	path := filepath.Join(dir, snapName(2, 7))
	b, _ := os.ReadFile(path)
	b[len(b)-1] ^= 1
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := loadSnapFile(dir, 2, 7); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), path) {
		t.Fatalf("corrupt snapshot: %v", err)
	}
}

// FuzzParseSegment: whatever the bytes, reading a segment returns records
// or an error, never panics, and never calls more valid than it read.
func FuzzParseSegment(f *testing.F) {
	dir := f.TempDir()
	w, _, _, err := openWAL(dir, slog.New(slog.DiscardHandler))
	if err != nil {
		f.Fatal(err)
	}
	e := &raftpb.Entry{Term: new(uint64(1)), Index: new(uint64(1)), Data: []byte("x")}
	if err := w.save(&raftpb.HardState{Term: new(uint64(1)), Commit: new(uint64(1))}, []*raftpb.Entry{e}, false); err != nil {
		f.Fatal(err)
	}
	w.close()
	seed, err := os.ReadFile(w.path)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(seed)
	f.Add(seed[:len(seed)-2])
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		_, valid, err := parseSegment("fuzz", b)
		if err == nil && (valid < 0 || valid > int64(len(b))) {
			t.Fatalf("valid %d of %d bytes", valid, len(b))
		}
	})
}
