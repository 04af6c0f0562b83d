package schema

import (
	"fmt"
	"strings"
)

// Problem is one thing wrong (or, with Warning, worth saying) about a
// manifest, located in its file.
type Problem struct {
	File    string `json:"file"`             // path relative to the repository (or as given to vet)
	Line    int    `json:"line,omitempty"`   // 1-based; 0 when unknown
	Column  int    `json:"column,omitempty"` // 1-based; 0 when unknown
	Field   string `json:"field,omitempty"`  // "spec.replicas"; "" for a whole document or file
	Reason  string `json:"reason"`
	Warning bool   `json:"warning,omitempty"` // accepted, but worth knowing (a field not honoured yet)
	// Limit names the limit (a Limits field, such as "MaxObjects") that
	// refused the input; "" for a problem of the content itself. A limit's
	// problem is final: the same input is refused again (ErrLimit).
	Limit string `json:"limit,omitempty"`
}

// String is the `flotilla vet` line: FILE:LINE:COL: FIELD: REASON.
func (p Problem) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s:%d:%d: ", p.File, p.Line, p.Column)
	if p.Warning {
		b.WriteString("warning: ")
	}
	if p.Field != "" {
		b.WriteString(p.Field)
		b.WriteString(": ")
	}
	b.WriteString(p.Reason)
	return b.String()
}

// Problems is the outcome of validating a set of manifests.
type Problems []Problem

// Errors returns only the problems that are not warnings.
func (ps Problems) Errors() Problems {
	var out Problems
	for _, p := range ps {
		if !p.Warning {
			out = append(out, p)
		}
	}
	return out
}

// Err returns nil when there is no error (warnings alone are fine), or an
// error listing them.
func (ps Problems) Err() error {
	errs := ps.Errors()
	if len(errs) == 0 {
		return nil
	}
	return &InvalidError{Problems: errs}
}

// InvalidError is returned when a set of manifests has errors.
type InvalidError struct{ Problems Problems }

// Is makes errors.Is(err, ErrLimit) true when a problem is a limit's.
func (e *InvalidError) Is(target error) bool {
	return target == ErrLimit && e.Problems.Limited()
}

func (e *InvalidError) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.String()
	}
	return fmt.Sprintf("%d problem(s):\n%s", len(e.Problems), strings.Join(lines, "\n"))
}
