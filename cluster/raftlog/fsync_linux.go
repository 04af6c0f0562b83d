package raftlog

import (
	"os"
	"syscall"
)

// fdatasync flushes f's data, and the metadata needed to read it back (its
// size), to the disk: cheaper than fsync, which also flushes times.
func fdatasync(f *os.File) error {
	return syscall.Fdatasync(int(f.Fd()))
}
