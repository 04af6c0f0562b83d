package gossip

import (
	"bytes"
	"context"
	"log/slog"
)

// logBridge is the io.Writer behind the *log.Logger given to memberlist. It
// turns each line ("[WARN] memberlist: Got ping …") into one slog record at
// debug level, so that memberlist never prints to stderr on its own. The
// level memberlist gave the line is kept under "memberlist_level".
type logBridge struct {
	log *slog.Logger
}

// Write is called by log.Logger once per line, from memberlist's goroutines.
func (b *logBridge) Write(p []byte) (int, error) {
	if !b.log.Enabled(context.Background(), slog.LevelDebug) {
		return len(p), nil
	}
	line := bytes.TrimRight(p, "\r\n")
	level := ""
	if len(line) > 0 && line[0] == '[' {
		if end := bytes.IndexByte(line, ']'); end > 0 {
			level = string(line[1:end])
			line = bytes.TrimLeft(line[end+1:], " ")
		}
	}
	line = bytes.TrimPrefix(line, []byte("memberlist: "))
	b.log.Debug(string(line), "memberlist_level", level)
	return len(p), nil
}
