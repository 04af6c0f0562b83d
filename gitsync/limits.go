package gitsync

import (
	"errors"
	"fmt"
	"sort"

	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/schema"
)

// Bounded input. A commit is refused once, with the reason LimitExceeded
// and a Problem whose Limit names the limit, when it crosses one of:
//
//   - the Loader's (schema.Limits: objects, bytes per object, per file, per
//     commit, YAML alias expansion, CUE time and memory); gitsync applies
//     MaxFileBytes and MaxCommitBytes itself as it reads the commit's tree
//     (Config.MaxFileSize, MaxTotalSize), so that no oversized blob is read
//     into memory, and MaxCommitBytes again to the objects the commit makes,
//     as JSON with Flotilla's annotations, so that YAML's growth into JSON
//     cannot get past it;
//   - the fetch's (Config.MaxFetchSize, Limit "MaxFetchSize");
//   - the store's (store.LimitError: "MaxObjectBytes", "MaxTxnWrites",
//     "MaxTxnBytes"), which are set above schema's so that a commit within
//     schema's limits fits; should one still be crossed, the commit is
//     refused in the same way, never retried.
//
// A refused commit is not evaluated again until the branch head moves (or
// `flotilla sync`, or a restart).

// LimitFetchSize is Problem.Limit for a fetch over Config.MaxFetchSize.
const LimitFetchSize = "MaxFetchSize"

// limitedLoader is the optional ability of a Loader to tell its limits
// (schema.Validator has it); Config's size limits default to them.
type limitedLoader interface {
	Limits() schema.Limits
}

// loaderLimits are the limits of l, or schema's defaults.
func loaderLimits(l Loader) schema.Limits {
	if ll, ok := l.(limitedLoader); ok {
		return ll.Limits()
	}
	return schema.DefaultLimits()
}

// limitProblem is the Problem of a crossed limit, worded as schema's are:
// what happened, then "(limit: NAME = VALUE)".
func limitProblem(file string, line int, limit, what string, value int64) schema.Problem {
	return schema.Problem{File: file, Line: line, Limit: limit,
		Reason: fmt.Sprintf("%s (limit: %s = %s)", what, limit, formatBytes(value))}
}

// formatBytes writes a size as people read it: 1.5 MiB, 512 KiB, 100 bytes.
func formatBytes(n int64) string {
	switch {
	case n >= 1<<20:
		return trimZeros(fmt.Sprintf("%.2f", float64(n)/(1<<20))) + " MiB"
	case n >= 1<<10:
		return trimZeros(fmt.Sprintf("%.2f", float64(n)/(1<<10))) + " KiB"
	}
	return fmt.Sprintf("%d bytes", n)
}

func trimZeros(s string) string {
	for len(s) > 0 && s[len(s)-1] == '0' {
		s = s[:len(s)-1]
	}
	if len(s) > 0 && s[len(s)-1] == '.' {
		s = s[:len(s)-1]
	}
	return s
}

// objectBytesProblem checks the commit's objects, as JSON with Flotilla's
// annotations, against max (MaxCommitBytes): past it, the Problem is at the
// object where the sum crosses it, in the order of the files.
func objectBytesProblem(set desiredSet, max int64) (schema.Problem, bool) {
	order := make([]int, len(set.objs))
	for i := range order {
		order[i] = i
	}
	sort.Slice(order, func(a, b int) bool {
		x, y := set.objs[order[a]], set.objs[order[b]]
		if x.file != y.file {
			return x.file < y.file
		}
		return x.line < y.line
	})
	var total int64
	for _, i := range order {
		d := set.objs[i]
		data, err := schema.Encode(d.obj)
		if err != nil { // buildDesired encoded it already: not seen
			return schema.Problem{File: d.file, Line: d.line, Reason: fmt.Sprintf("cannot encode object: %v", err)}, true
		}
		total += int64(len(data))
		if total > max {
			return limitProblem(d.file, d.line, schema.LimitCommitBytes,
				fmt.Sprintf("the objects of the commit are more than %s of JSON in all (with Flotilla's annotations); this is the first beyond", formatBytes(max)), max), true
		}
	}
	return schema.Problem{}, false
}

// storeLimit turns a store refusal that no retry can cure — a write past
// one of the store's limits (store.ErrTooLarge) — into the problem that
// refuses the commit (LimitExceeded), naming the limit: at the manifest
// for an object too big, for the whole commit for a transaction too big.
func storeLimit(err error, objects int) (schema.Problem, bool) {
	if err == nil || !errors.Is(err, store.ErrTooLarge) {
		return schema.Problem{}, false
	}
	var le *store.LimitError
	if !errors.As(err, &le) { // a store that does not say which
		le = &store.LimitError{Limit: "StoreLimit", Msg: err.Error()}
	}
	var ae *applyError
	if errors.As(err, &ae) && ae.act.file != "" && le.Limit == "MaxObjectBytes" {
		return schema.Problem{File: ae.act.file, Line: ae.act.line, Limit: le.Limit,
			Reason: fmt.Sprintf("the object, as stored, is larger than the store takes (limit: %s = %s)", le.Limit, formatBytes(le.Value))}, true
	}
	what := fmt.Sprintf("applying the commit's %d objects (and deleting what it no longer has) is more than the store takes in one transaction; split the change over several commits", objects)
	switch le.Limit {
	case "MaxTxnBytes":
		return limitProblem("", 0, le.Limit, what, le.Value), true
	case "MaxTxnWrites":
		return schema.Problem{Limit: le.Limit, Reason: fmt.Sprintf("%s (limit: %s = %d writes)", what, le.Limit, le.Value)}, true
	}
	p := schema.Problem{Limit: le.Limit, Reason: fmt.Sprintf("%s: %s", what, le.Msg)}
	return p, true
}
