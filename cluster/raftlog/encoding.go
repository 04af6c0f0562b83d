package raftlog

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
)

// The header every normal entry proposed through Propose starts with: a
// version byte, then the proposer's Raft ID and the proposal's sequence
// number, big-endian. The proposer's Node matches the committed entry to
// the waiting Propose call by them; the StateMachine sees only the rest.
const (
	entryVersion   = 1
	entryHeaderLen = 1 + 8 + 8
)

func encodeEntry(proposer, seq uint64, data []byte) []byte {
	b := make([]byte, entryHeaderLen, entryHeaderLen+len(data))
	b[0] = entryVersion
	binary.BigEndian.PutUint64(b[1:], proposer)
	binary.BigEndian.PutUint64(b[9:], seq)
	return append(b, data...)
}

func decodeEntry(b []byte) (proposer, seq uint64, data []byte, err error) {
	if len(b) < entryHeaderLen || b[0] != entryVersion {
		return 0, 0, nil, fmt.Errorf("entry of %d bytes has no valid header", len(b))
	}
	return binary.BigEndian.Uint64(b[1:]), binary.BigEndian.Uint64(b[9:]), b[entryHeaderLen:], nil
}

// confContext is the Context of every ConfChange this package proposes (and
// of the bootstrap ones): the member's address, so that membership with
// addresses is replicated and survives restarts with the log, and the
// proposer and sequence number of the waiting call (0 for bootstrap).
type confContext struct {
	Addr string `json:"addr,omitempty"`
	From uint64 `json:"from,omitempty"`
	Seq  uint64 `json:"seq,omitempty"`
}

func (c confContext) encode() []byte {
	b, err := json.Marshal(c)
	if err != nil {
		panic(err) // a struct of a string and two numbers always marshals
	}
	return b
}

func decodeConfContext(b []byte) (confContext, error) {
	var c confContext
	if len(b) == 0 {
		return c, nil
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return c, fmt.Errorf("conf change context: %w", err)
	}
	return c, nil
}

// A snapshot's Data, in the snap files and in MsgSnap: a magic, the member
// addresses (JSON, length-prefixed) and then the StateMachine's bytes.
// Membership is in the Raft snapshot's ConfState too; the addresses travel
// here.
var snapDataMagic = [4]byte{'F', 'L', 'S', '1'}

func encodeSnapData(members []Peer, state []byte) []byte {
	mj, err := json.Marshal(members)
	if err != nil {
		panic(err) // []Peer always marshals
	}
	b := make([]byte, 0, len(snapDataMagic)+binary.MaxVarintLen64+len(mj)+len(state))
	b = append(b, snapDataMagic[:]...)
	b = binary.AppendUvarint(b, uint64(len(mj)))
	b = append(b, mj...)
	return append(b, state...)
}

func decodeSnapData(b []byte) (members []Peer, state []byte, err error) {
	if len(b) < len(snapDataMagic) || [4]byte(b[:4]) != snapDataMagic {
		return nil, nil, errors.New("snapshot data does not start with the raftlog magic")
	}
	b = b[len(snapDataMagic):]
	n, k := binary.Uvarint(b)
	if k <= 0 || n > uint64(len(b)-k) {
		return nil, nil, errors.New("snapshot data: bad members length")
	}
	if err := json.Unmarshal(b[k:k+int(n)], &members); err != nil {
		return nil, nil, fmt.Errorf("snapshot data: members: %w", err)
	}
	return members, b[k+int(n):], nil
}
