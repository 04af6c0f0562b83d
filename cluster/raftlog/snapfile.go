package raftlog

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// A snapshot file is Dir/snap-<term>-<index>.snap (16 hex digits each):
// the magic, the CRC-32C of the rest, and the raftpb.Snapshot (metadata,
// and Data as encodeSnapData lays it out). It is written through a
// temporary file, synced and renamed, before the WAL names it in a marker.
// The two newest are kept: the WAL names the newest once it has rotated,
// the previous one until then.
const (
	snapPrefix = "snap-"
	snapSuffix = ".snap"
	snapsKept  = 2
)

var snapFileMagic = [8]byte{'F', 'L', 'R', 'S', 'N', 'A', 'P', 1}

func snapName(term, index uint64) string {
	return fmt.Sprintf("%s%016x-%016x%s", snapPrefix, term, index, snapSuffix)
}

// saveSnapFile writes snap (with its Data) to its file durably.
func saveSnapFile(dir string, snap *raftpb.Snapshot) error {
	body, err := proto.Marshal(snap)
	if err != nil {
		return fmt.Errorf("raftlog: encode snapshot: %w", err)
	}
	b := make([]byte, 0, len(snapFileMagic)+4+len(body))
	b = append(b, snapFileMagic[:]...)
	b = binary.LittleEndian.AppendUint32(b, crc32.Checksum(body, castagnoli))
	b = append(b, body...)
	md := snap.GetMetadata()
	f, err := writeDurably(filepath.Join(dir, snapName(md.GetTerm(), md.GetIndex())), b)
	if err != nil {
		return fmt.Errorf("raftlog: write snapshot: %w", err)
	}
	return f.Close()
}

// loadSnapFile reads the snapshot at term/index, with its Data.
func loadSnapFile(dir string, term, index uint64) (*raftpb.Snapshot, error) {
	path := filepath.Join(dir, snapName(term, index))
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("raftlog: read snapshot %d (term %d): %w", index, term, err)
	}
	hl := len(snapFileMagic) + 4
	if len(b) < hl || [8]byte(b[:8]) != snapFileMagic {
		return nil, fmt.Errorf("%w: snapshot %s has no raftlog header", ErrCorrupt, path)
	}
	if crc32.Checksum(b[hl:], castagnoli) != binary.LittleEndian.Uint32(b[8:]) {
		return nil, fmt.Errorf("%w: snapshot %s fails its checksum", ErrCorrupt, path)
	}
	snap := new(raftpb.Snapshot)
	if err := proto.Unmarshal(b[hl:], snap); err != nil {
		return nil, fmt.Errorf("%w: snapshot %s: %v", ErrCorrupt, path, err)
	}
	if md := snap.GetMetadata(); md.GetIndex() != index || md.GetTerm() != term {
		return nil, fmt.Errorf("%w: snapshot %s holds index %d term %d", ErrCorrupt, path, md.GetIndex(), md.GetTerm())
	}
	return snap, nil
}

type snapFile struct {
	name        string
	term, index uint64
}

func listSnapFiles(dir string) ([]snapFile, error) {
	des, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("raftlog: list %s: %w", dir, err)
	}
	var snaps []snapFile
	for _, de := range des {
		s := snapFile{name: de.Name()}
		if !strings.HasPrefix(s.name, snapPrefix) || !strings.HasSuffix(s.name, snapSuffix) {
			continue
		}
		mid := strings.TrimSuffix(strings.TrimPrefix(s.name, snapPrefix), snapSuffix)
		if _, err := fmt.Sscanf(mid, "%x-%x", &s.term, &s.index); err != nil {
			continue
		}
		snaps = append(snaps, s)
	}
	slices.SortFunc(snaps, func(a, b snapFile) int {
		if a.index != b.index {
			return cmp.Compare(a.index, b.index)
		}
		return cmp.Compare(a.term, b.term)
	})
	return snaps, nil
}

// purgeSnapFiles deletes all but the newest snapsKept snapshot files.
func purgeSnapFiles(dir string) error {
	snaps, err := listSnapFiles(dir)
	if err != nil {
		return err
	}
	for len(snaps) > snapsKept {
		if err := os.Remove(filepath.Join(dir, snaps[0].name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("raftlog: remove old snapshot: %w", err)
		}
		snaps = snaps[1:]
	}
	return nil
}
