package raftlog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// ErrCorrupt: a WAL or snapshot file fails its checksum or cannot be
// decoded; the error names the file (and, for the WAL, the offset). Start
// refuses to run on it: restore Dir from a backup, or remove it and re-add
// the server to the group.
var ErrCorrupt = errors.New("raftlog: corrupt file")

// The WAL is one segment file at a time, Dir/wal-<seq>.log (seq in 16 hex
// digits). A segment is self-contained: it starts with a snapshot marker
// (the term and index of the snapshot it follows, 0/0 for none), then the
// HardState and the entries after the marker, then whatever the Ready loop
// appends. Taking or receiving a snapshot rotates: the next segment is
// written whole under a temporary name, synced, renamed into place, and
// only then is the previous one deleted. So after a crash the
// highest-numbered segment is always complete up to its tail.
//
// A record is
//
//	uint32 n        length of type+payload, little-endian
//	uint32 lencrc   CRC-32C of the 4 length bytes
//	uint32 crc      CRC-32C of type+payload
//	byte   type     recSnapshot, recHardState or recEntry
//	payload         the protobuf (SnapshotMetadata, HardState, Entry)
//
// The length has its own checksum so that a flipped bit in it reads as
// corruption, not as a record cut short by a crash. Only a record cut
// short, or a bad last record, or a zeroed tail, counts as torn and is
// truncated on open; a bad record with valid data after it is an error.
const (
	recSnapshot  byte = 1
	recHardState byte = 2
	recEntry     byte = 3

	recHeaderLen = 12
	maxRecordLen = 1 << 30
	walPrefix    = "wal-"
	walSuffix    = ".log"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// wal appends to the current segment. It is used by the Node's loop
// goroutine only.
type wal struct {
	dir  string
	log  *slog.Logger
	f    *os.File
	path string // f's path (f.Name() is the temporary name it was written under)
	seq  uint64
	hs   *raftpb.HardState // last saved
	buf  []byte
}

// walState is what a segment holds once read.
type walState struct {
	snapIndex, snapTerm uint64 // the marker
	hs                  *raftpb.HardState
	ents                []*raftpb.Entry
}

// empty reports whether the WAL holds nothing Raft ever wrote.
func (s walState) empty() bool {
	return s.snapIndex == 0 && len(s.ents) == 0 && raft.IsEmptyHardState(s.hs)
}

func segmentName(seq uint64) string { return fmt.Sprintf("%s%016x%s", walPrefix, seq, walSuffix) }

// listSegments returns the sequence numbers of Dir's segments, ascending,
// and removes temporary files a crash left behind.
func listSegments(dir string) ([]uint64, error) {
	des, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("raftlog: list %s: %w", dir, err)
	}
	var seqs []uint64
	for _, de := range des {
		name := de.Name()
		if strings.HasSuffix(name, ".tmp") {
			if err := os.Remove(filepath.Join(dir, name)); err != nil {
				return nil, fmt.Errorf("raftlog: remove leftover %s: %w", name, err)
			}
			continue
		}
		var seq uint64
		if !strings.HasPrefix(name, walPrefix) || !strings.HasSuffix(name, walSuffix) {
			continue
		}
		if _, err := fmt.Sscanf(strings.TrimSuffix(strings.TrimPrefix(name, walPrefix), walSuffix), "%x", &seq); err != nil {
			continue
		}
		seqs = append(seqs, seq)
	}
	slices.Sort(seqs)
	return seqs, nil
}

// openWAL opens Dir's WAL, creating its first segment when there is none
// (found=false). A torn tail is truncated; older segments, superseded by
// the newest, are deleted.
func openWAL(dir string, log *slog.Logger) (w *wal, st walState, found bool, err error) {
	seqs, err := listSegments(dir)
	if err != nil {
		return nil, st, false, err
	}
	if len(seqs) == 0 {
		w = &wal{dir: dir, log: log}
		if err := w.rotate(0, 0, nil, nil); err != nil {
			return nil, st, false, err
		}
		return w, st, false, nil
	}
	seq := seqs[len(seqs)-1]
	path := filepath.Join(dir, segmentName(seq))
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, st, false, fmt.Errorf("raftlog: read WAL: %w", err)
	}
	st, valid, err := parseSegment(path, data)
	if err != nil {
		return nil, st, false, err
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, st, false, fmt.Errorf("raftlog: open WAL: %w", err)
	}
	if valid < int64(len(data)) {
		log.Warn("truncating the torn tail of the WAL", "file", path, "offset", valid, "bytes", int64(len(data))-valid)
		if err := f.Truncate(valid); err == nil {
			err = f.Sync()
		}
		if err != nil {
			f.Close()
			return nil, st, false, fmt.Errorf("raftlog: truncate the torn tail of %s: %w", path, err)
		}
	}
	if _, err := f.Seek(valid, 0); err != nil {
		f.Close()
		return nil, st, false, fmt.Errorf("raftlog: seek %s: %w", path, err)
	}
	for _, old := range seqs[:len(seqs)-1] {
		if err := os.Remove(filepath.Join(dir, segmentName(old))); err != nil && !errors.Is(err, fs.ErrNotExist) {
			f.Close()
			return nil, st, false, fmt.Errorf("raftlog: remove superseded WAL segment: %w", err)
		}
	}
	return &wal{dir: dir, log: log, f: f, path: path, seq: seq, hs: st.hs}, st, true, nil
}

// parseSegment reads a segment's records. valid is the length of the part
// that is whole; what follows it is a torn tail.
func parseSegment(path string, b []byte) (st walState, valid int64, err error) {
	corrupt := func(off int, format string, args ...any) error {
		return fmt.Errorf("%w: WAL %s at offset %d: %s", ErrCorrupt, path, off, fmt.Sprintf(format, args...))
	}
	off, first := 0, true
	for off < len(b) {
		rest := b[off:]
		if len(rest) < recHeaderLen {
			break // a header cut short
		}
		n := binary.LittleEndian.Uint32(rest)
		if crc32.Checksum(rest[:4], castagnoli) != binary.LittleEndian.Uint32(rest[4:]) {
			if allZero(rest) {
				break // a zeroed tail: space allocated, never written
			}
			return st, 0, corrupt(off, "record length fails its checksum")
		}
		if n == 0 || n > maxRecordLen {
			return st, 0, corrupt(off, "record length %d out of range", n)
		}
		end := recHeaderLen + int(n)
		if end > len(rest) {
			break // a record cut short
		}
		if crc32.Checksum(rest[recHeaderLen:end], castagnoli) != binary.LittleEndian.Uint32(rest[8:]) {
			if end == len(rest) {
				break // the last record, written in part
			}
			return st, 0, corrupt(off, "record checksum mismatch")
		}
		typ, payload := rest[recHeaderLen], rest[recHeaderLen+1:end]
		if first != (typ == recSnapshot) {
			return st, 0, corrupt(off, "a segment must start with its snapshot marker, and have only one (record type %d)", typ)
		}
		first = false
		switch typ {
		case recSnapshot:
			var m raftpb.SnapshotMetadata
			if err := proto.Unmarshal(payload, &m); err != nil {
				return st, 0, corrupt(off, "snapshot marker: %v", err)
			}
			st.snapIndex, st.snapTerm = m.GetIndex(), m.GetTerm()
		case recHardState:
			hs := new(raftpb.HardState)
			if err := proto.Unmarshal(payload, hs); err != nil {
				return st, 0, corrupt(off, "hard state: %v", err)
			}
			st.hs = hs
		case recEntry:
			e := new(raftpb.Entry)
			if err := proto.Unmarshal(payload, e); err != nil {
				return st, 0, corrupt(off, "entry: %v", err)
			}
			if st.ents, err = appendEntry(st.ents, e); err != nil {
				return st, 0, corrupt(off, "%v", err)
			}
		default:
			return st, 0, corrupt(off, "unknown record type %d", typ)
		}
		off += end
	}
	if first {
		return st, 0, fmt.Errorf("%w: WAL %s has no snapshot marker", ErrCorrupt, path)
	}
	return st, int64(off), nil
}

// appendEntry appends e to ents as Raft appends to its log: an entry at an
// index already held replaces it and everything after it.
func appendEntry(ents []*raftpb.Entry, e *raftpb.Entry) ([]*raftpb.Entry, error) {
	idx := e.GetIndex()
	if len(ents) == 0 {
		return append(ents, e), nil
	}
	first, last := ents[0].GetIndex(), ents[len(ents)-1].GetIndex()
	switch {
	case idx <= first:
		ents = ents[:0]
	case idx <= last:
		ents = ents[:idx-first]
	case idx > last+1:
		return nil, fmt.Errorf("entry %d after entry %d leaves a gap", idx, last)
	}
	return append(ents, e), nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

func appendRecord(buf []byte, typ byte, m proto.Message) ([]byte, error) {
	start := len(buf)
	buf = append(buf, make([]byte, recHeaderLen+1)...)
	buf[start+recHeaderLen] = typ
	buf, err := proto.MarshalOptions{}.MarshalAppend(buf, m)
	if err != nil {
		return nil, fmt.Errorf("raftlog: encode WAL record: %w", err)
	}
	n := len(buf) - start - recHeaderLen
	if n > maxRecordLen {
		return nil, fmt.Errorf("raftlog: WAL record of %d bytes is over the %d limit", n, maxRecordLen)
	}
	h := buf[start:]
	binary.LittleEndian.PutUint32(h, uint32(n))
	binary.LittleEndian.PutUint32(h[4:], crc32.Checksum(h[:4], castagnoli))
	binary.LittleEndian.PutUint32(h[8:], crc32.Checksum(h[recHeaderLen:], castagnoli))
	return buf, nil
}

func (w *wal) encode(buf []byte, hs *raftpb.HardState, ents []*raftpb.Entry) ([]byte, error) {
	var err error
	for _, e := range ents {
		if buf, err = appendRecord(buf, recEntry, e); err != nil {
			return nil, err
		}
	}
	if !raft.IsEmptyHardState(hs) {
		if buf, err = appendRecord(buf, recHardState, hs); err != nil {
			return nil, err
		}
	}
	return buf, nil
}

// save appends ents and then hs (when not empty) to the current segment,
// and syncs when sync is set (Raft's Ready.MustSync: new entries, term or
// vote). Entries before the HardState, so that a torn write never leaves a
// commit index pointing past the entries.
func (w *wal) save(hs *raftpb.HardState, ents []*raftpb.Entry, sync bool) error {
	buf, err := w.encode(w.buf[:0], hs, ents)
	if err != nil {
		return err
	}
	w.buf = buf[:0]
	if len(buf) == 0 {
		return nil
	}
	if _, err := w.f.Write(buf); err != nil {
		return fmt.Errorf("raftlog: write WAL %s: %w", w.path, err)
	}
	if sync {
		if err := fdatasync(w.f); err != nil {
			return fmt.Errorf("raftlog: sync WAL %s: %w", w.path, err)
		}
	}
	if !raft.IsEmptyHardState(hs) {
		w.hs = hs
	}
	return nil
}

// rotate starts the next segment with the marker of the snapshot at
// snapIndex/snapTerm, hs (the last saved one when nil) and ents, and
// deletes the current segment once the new one is durable.
func (w *wal) rotate(snapIndex, snapTerm uint64, hs *raftpb.HardState, ents []*raftpb.Entry) error {
	if raft.IsEmptyHardState(hs) {
		hs = w.hs
	}
	if hs != nil && hs.GetCommit() < snapIndex {
		// A snapshot is committed by definition; Raft refuses to start
		// with a commit index behind its snapshot.
		hs = proto.CloneOf(hs)
		hs.Commit = new(snapIndex)
	}
	buf, err := appendRecord(nil, recSnapshot, &raftpb.SnapshotMetadata{Index: new(snapIndex), Term: new(snapTerm)})
	if err != nil {
		return err
	}
	if buf, err = w.encode(buf, hs, ents); err != nil {
		return err
	}
	seq := w.seq + 1
	path := filepath.Join(w.dir, segmentName(seq))
	f, err := writeDurably(path, buf)
	if err != nil {
		return fmt.Errorf("raftlog: write WAL segment: %w", err)
	}
	old, oldPath := w.f, w.path
	w.f, w.path, w.seq = f, path, seq
	if !raft.IsEmptyHardState(hs) {
		w.hs = hs
	}
	if old != nil {
		old.Close()
		if err := os.Remove(oldPath); err != nil {
			return fmt.Errorf("raftlog: remove superseded WAL segment: %w", err)
		}
	}
	return nil
}

func (w *wal) close() error {
	if w.f == nil {
		return nil
	}
	err := w.f.Close()
	w.f = nil
	return err
}

// writeDurably writes data to path through a temporary file: write, fsync,
// rename, fsync the directory. It returns path open (for appending to a
// WAL segment); the caller closes it.
func writeDurably(path string, data []byte) (*os.File, error) {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*os.File, error) {
		f.Close()
		os.Remove(tmp)
		return nil, err
	}
	if _, err := f.Write(data); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fail(err)
	}
	if err := syncDir(filepath.Dir(path)); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}
