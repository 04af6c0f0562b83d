// Package logfile opens a Flotilla role's own log file, rotated by size so
// that DATA_DIR/flotilla.log never grows without bound.
//
// The current file keeps its name; when a write would take it past
// MaxSizeMiB it is renamed flotilla-<timestamp>.log (gzipped in the
// background when Compress is on) and a new one is started. Only the newest
// MaxFiles rotated files are kept. Rotation is lumberjack's
// (gopkg.in/natefinch/lumberjack.v2).
package logfile

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"gopkg.in/natefinch/lumberjack.v2"
)

// Default values of Config.
const (
	DefaultMaxSizeMiB = 50
	DefaultMaxFiles   = 5
)

// Config says where a role logs and how much it keeps. Zero values mean the
// documented default.
type Config struct {
	// Path of the current log file. Required. Its directory is created.
	Path string
	// MaxSizeMiB is the size at which the file is rotated. Default 50.
	// The disk used is at most about MaxSizeMiB × (1 + MaxFiles), less
	// when compressed (text logs compress about tenfold).
	MaxSizeMiB int
	// MaxFiles is how many rotated files are kept; older ones are removed.
	// Default 5. Negative keeps every rotated file (unbounded).
	MaxFiles int
	// MaxAgeDays removes rotated files older than this many days, however
	// many there are. Default 0: age alone removes nothing.
	MaxAgeDays int
	// NoCompress keeps rotated files as plain text. Default false: they
	// are gzipped, which costs a little CPU once per rotation.
	NoCompress bool
}

// Open validates cfg and returns the log writer; it is safe for concurrent
// use and the caller closes it. The file is opened (0600) at the first
// write; Open fails early if its directory cannot be made or the file
// cannot be opened for appending.
func Open(cfg Config) (io.WriteCloser, error) {
	if cfg.Path == "" {
		return nil, errors.New("log file: no path")
	}
	if cfg.MaxSizeMiB < 0 {
		return nil, fmt.Errorf("log file %s: max size %d MiB: must not be negative", cfg.Path, cfg.MaxSizeMiB)
	}
	if cfg.MaxSizeMiB == 0 {
		cfg.MaxSizeMiB = DefaultMaxSizeMiB
	}
	backups := cfg.MaxFiles
	switch {
	case backups == 0:
		backups = DefaultMaxFiles
	case backups < 0:
		backups = 0 // lumberjack: keep all
	}
	if err := os.MkdirAll(filepath.Dir(cfg.Path), 0o700); err != nil {
		return nil, fmt.Errorf("creating the log directory: %w", err)
	}
	f, err := os.OpenFile(cfg.Path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening the log %s: %w", cfg.Path, err)
	}
	f.Close()
	return &lumberjack.Logger{
		Filename:   cfg.Path,
		MaxSize:    cfg.MaxSizeMiB,
		MaxBackups: backups,
		MaxAge:     cfg.MaxAgeDays,
		LocalTime:  false,
		Compress:   !cfg.NoCompress,
	}, nil
}
