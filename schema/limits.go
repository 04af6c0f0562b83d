package schema

import (
	"errors"
	"fmt"
	"time"
)

// Limits bound what one Load (one commit) may cost. Within them a commit is
// validated whole; beyond them Load refuses it with a Problem located where
// the limit was crossed, whose Limit names the field below and whose Reason
// says its value. A refusal by a limit is final for that input: retrying
// the same commit gives the same answer (errors.Is(err, ErrLimit) on
// Problems.Err tells it apart, see Problem.Limit).
//
// A zero field means its default, DefaultLimits' value. README.md
// ("Limits") documents the same table for users.
type Limits struct {
	// MaxObjects is the number of objects one commit may hold (each
	// document, each item of a List, each object of a .cue file).
	// Default 25,000: a commit of 10,000 objects passes with room.
	MaxObjects int
	// MaxObjectBytes is the size of one object as JSON. Default 1.5 MiB,
	// Kubernetes' own limit of a request body.
	MaxObjectBytes int64
	// MaxFileBytes is the size of one manifest file. Default 8 MiB.
	MaxFileBytes int64
	// MaxCommitBytes is the total size of the manifest files of one
	// commit, and of the objects its .cue files produce. Default 64 MiB.
	MaxCommitBytes int64
	// MaxDocumentExpandedBytes is the size one YAML document may reach
	// once its aliases (*name) are expanded. It is checked before the
	// expansion, so an alias bomb costs no memory. Default 4 MiB (an
	// object above 1.5 MiB is refused anyway).
	MaxDocumentExpandedBytes int64
	// MaxFileExpandedBytes is the same for all documents of one YAML file
	// together. Default 32 MiB.
	MaxFileExpandedBytes int64
	// CUETime is the wall-clock time the .cue manifests of one commit may
	// take to evaluate (in the sandbox process). Default 30 s.
	CUETime time.Duration
	// CUEMemory is the heap the evaluation of the .cue manifests of one
	// commit may use (in the sandbox process, which also gets an address
	// space limit above it). Default 512 MiB.
	CUEMemory int64
}

// DefaultLimits returns the limits that a zero Limits means.
func DefaultLimits() Limits {
	return Limits{
		MaxObjects:               25_000,
		MaxObjectBytes:           1536 << 10,
		MaxFileBytes:             8 << 20,
		MaxCommitBytes:           64 << 20,
		MaxDocumentExpandedBytes: 4 << 20,
		MaxFileExpandedBytes:     32 << 20,
		CUETime:                  30 * time.Second,
		CUEMemory:                512 << 20,
	}
}

// MaxFileSize is the default MaxFileBytes (Limits).
const MaxFileSize = 8 << 20

// withDefaults fills the zero fields of l.
func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	if l.MaxObjects <= 0 {
		l.MaxObjects = d.MaxObjects
	}
	if l.MaxObjectBytes <= 0 {
		l.MaxObjectBytes = d.MaxObjectBytes
	}
	if l.MaxFileBytes <= 0 {
		l.MaxFileBytes = d.MaxFileBytes
	}
	if l.MaxCommitBytes <= 0 {
		l.MaxCommitBytes = d.MaxCommitBytes
	}
	if l.MaxDocumentExpandedBytes <= 0 {
		l.MaxDocumentExpandedBytes = d.MaxDocumentExpandedBytes
	}
	if l.MaxFileExpandedBytes <= 0 {
		l.MaxFileExpandedBytes = d.MaxFileExpandedBytes
	}
	if l.CUETime <= 0 {
		l.CUETime = d.CUETime
	}
	if l.CUEMemory <= 0 {
		l.CUEMemory = d.CUEMemory
	}
	return l
}

// Limits returns the limits the Validator applies.
func (v *Validator) Limits() Limits { return v.limits }

// ErrLimit is matched (errors.Is) by the error of Problems.Err when a
// problem is a limit's: the input is refused for its size or cost, and
// will be refused again, so it must not be retried.
var ErrLimit = errors.New("input exceeds a limit")

// Limited says whether any problem is a limit's (Problem.Limit).
func (ps Problems) Limited() bool {
	for _, p := range ps {
		if p.Limit != "" {
			return true
		}
	}
	return false
}

// The names of the limits, as Problem.Limit gives them: the Limits fields.
const (
	LimitObjects               = "MaxObjects"
	LimitObjectBytes           = "MaxObjectBytes"
	LimitFileBytes             = "MaxFileBytes"
	LimitCommitBytes           = "MaxCommitBytes"
	LimitDocumentExpandedBytes = "MaxDocumentExpandedBytes"
	LimitFileExpandedBytes     = "MaxFileExpandedBytes"
	LimitCUETime               = "CUETime"
	LimitCUEMemory             = "CUEMemory"
)

// limitProblem is the Problem of a crossed limit: what happened, then the
// limit, named and with its value.
func limitProblem(file string, line, col int, limit, what string, value any) Problem {
	return Problem{File: file, Line: line, Column: col, Limit: limit,
		Reason: fmt.Sprintf("%s (limit: %s = %s)", what, limit, formatLimit(value))}
}

func formatLimit(v any) string {
	switch x := v.(type) {
	case int64:
		return formatBytes(x)
	case time.Duration:
		return x.String()
	default:
		return fmt.Sprint(x)
	}
}

// formatBytes writes a size as people read it: 1.5 MiB, 512 KiB, 100 bytes.
func formatBytes(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n >= 1<<20:
		return trimZero(fmt.Sprintf("%.2f", float64(n)/(1<<20))) + " MiB"
	case n >= 1<<10:
		return trimZero(fmt.Sprintf("%.2f", float64(n)/(1<<10))) + " KiB"
	}
	return fmt.Sprintf("%d bytes", n)
}

func trimZero(s string) string {
	for len(s) > 0 && s[len(s)-1] == '0' {
		s = s[:len(s)-1]
	}
	if len(s) > 0 && s[len(s)-1] == '.' {
		s = s[:len(s)-1]
	}
	return s
}
