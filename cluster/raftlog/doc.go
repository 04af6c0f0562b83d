// Package raftlog is the replicated log of Flotilla's servers: every server
// applies the same entries, in the same order, to its StateMachine (the
// Badger store), with go.etcd.io/raft/v3 deciding what is committed.
//
// Raft itself — elections, replication, membership changes, ReadIndex —
// is the library's (a raft.RawNode over a raft.MemoryStorage); this package
// is the I/O around it, on etcd's contrib/raftexample pattern: a durable
// WAL and snapshots, the Ready loop, the matching of committed entries to
// waiting calls, and transports.
//
// # The loop
//
// One goroutine per Node owns the RawNode, the WAL and the StateMachine.
// It ticks Raft every Config.TickInterval, steps received messages and the
// callers' requests into it (draining what is queued, so one WAL sync
// covers many), and handles each Ready in Raft's order:
//
//  1. persist: a received snapshot (snap file, then a new WAL segment
//     starting at it), else the new entries and then the HardState,
//     appended to the WAL and fdatasync'ed when Raft says MustSync;
//  2. send the messages — only now, so that nothing is promised to a peer
//     (a vote, an acknowledged entry) that a crash could take back;
//  3. apply: restore a received snapshot, then the committed entries
//     (normal ones to StateMachine.Apply, conf changes to Raft and to the
//     member list), then answer ReadIndex calls that are now satisfied;
//  4. Advance, and take a snapshot when due.
//
// Apply runs on the loop: a StateMachine must not call back into the Node
// (Propose from Apply would wait for itself).
//
// # Entries
//
// A normal entry's data is a 17-byte header — version, proposer's Raft ID,
// sequence number — and the caller's bytes. Propose registers the sequence
// number and waits; the proposer's loop, applying the entry, hands Apply's
// result to that call. Other servers apply the same entry and drop the
// result. Sequence numbers start at a random value on every Start, so an
// entry proposed before a restart never matches a call made after it. A
// proposal Raft loses (the leader changed before it committed) is never
// applied; its call ends with its ctx. Empty entries (each new leader's)
// are not given to the StateMachine.
//
// Membership changes are Raft ConfChanges whose Context carries the
// member's address (JSON, with the proposer and sequence number), so the
// member list with addresses is part of the replicated log and is rebuilt
// on restart by replaying it after the snapshot, which carries the list as
// of its index.
//
// # Persistence
//
// Dir holds one WAL segment, wal-<seq>.log, and the two newest snapshots,
// snap-<term>-<index>.snap (16 hex digits each); see wal.go and
// snapfile.go for the formats. Every WAL record is length-prefixed and
// CRC-32C-checked; the length has its own checksum. On open, a torn tail
// (a record cut short, a bad last record, a zeroed tail) is truncated; any
// other bad record is an error (ErrCorrupt) naming the file and offset.
//
// Every Config.SnapshotEntries applied entries the loop writes
// StateMachine.Snapshot, with the member addresses, to a snap file
// (temporary file, fsync, rename, fsync of the directory), records it in
// the MemoryStorage (CreateSnapshot) and rotates the WAL: a new segment
// holding the snapshot marker, the HardState and the entries after the
// compaction point is written and synced whole before the old segment is
// deleted, then the MemoryStorage is compacted. Entries are kept behind the
// snapshot (a tenth of SnapshotEntries) so that a follower a little behind
// catches up from the log rather than from a snapshot.
//
// A follower too far behind, or a new member, gets a snapshot. Raft asks
// the MemoryStorage for one (which keeps only metadata); the loop sends,
// as etcd does, a snapshot made at that moment at its applied index
// instead — the stored one can predate the configuration change that added
// the recipient, and Raft refuses a snapshot that does not list it — and
// the transport reports the delivery (ReportSnapshot). The receiving loop
// saves it like its own, then calls StateMachine.Restore.
//
// # Restart
//
// Start reads the WAL segment, loads the snapshot its marker names into the
// MemoryStorage and, when StateMachine.AppliedIndex is behind it, restores
// the StateMachine from it; then the WAL's HardState and entries. Raft
// hands back every committed entry after the snapshot: conf changes are
// applied again (Raft's configuration and the member list are rebuilt),
// and normal entries at or below AppliedIndex are skipped, the rest
// applied. A group whose only voter is this server campaigns at once.
//
// # Use by the store
//
// The store (cluster/store, replica.go) proposes a write set: the revision
// its write was computed at and the write's event records. Its Apply
// refuses, on every server alike, a write set whose revision is not the
// store's (ErrStale: another server's write got to the log first, or a
// deposed leader's was late), and the writer computes it again; any other
// is committed with the applied index in one Badger transaction, and the
// new revision is the result Propose returns. Because the index is in the
// same transaction as the data, AppliedIndex is exact after a crash and
// replay resumes right after it; so Badger runs without its own fsync:
// what a power loss takes of Badger's tail is replayed from the WAL (or,
// past a compaction, restored from the snapshot), which is fsynced before
// anything is acknowledged. Reads that must be linearizable call ReadIndex
// first.
//
// # Transports
//
// MemNetwork is an in-process network with fault injection, for tests
// here and elsewhere. HTTPTransport posts batches of protobuf messages to
// https://ADDR/raft/v1/messages with one long-lived HTTP client and a
// queue per peer; Handler is the receiving side. Both report unreachable
// peers and snapshot delivery to the Node.
package raftlog
