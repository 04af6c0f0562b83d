package gitsync

import (
	"io/fs"
	"time"

	"github.com/flotilla-dev/flotilla/schema"
)

// The seams of a Syncer that its owner fills in (besides store.Interface):
// the manifest loader and the clock.

// Loader turns the files of one commit into manifests, validating the whole
// set. schema.Validator implements it. Problems carry the file and line of
// each error or warning; any error refuses the commit. Load must not retain
// fsys after it returns.
type Loader interface {
	Load(fsys fs.FS, paths ...string) ([]schema.Manifest, schema.Problems)
}

// Clock is the time source, injected so that tests need not sleep.
type Clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// Interface guard: the real validator is a Loader.
var _ Loader = (*schema.Validator)(nil)
