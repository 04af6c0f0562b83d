package controller

import (
	"fmt"
	"time"
)

// Outcome classes a successful reconcile, as Flux classes its results.
type Outcome int

const (
	// OutcomeDone: desired and observed state match, or the next step is
	// under way and its events will bring the key back.
	OutcomeDone Outcome = iota
	// OutcomeRequeue: look again after Result.After (a deadline falls, a
	// pod becomes available), even if no event comes.
	OutcomeRequeue
	// OutcomeWaiting: progress depends on something outside the object
	// (pods to start, a name to be freed); not an error, retried after
	// Result.After and on events. Result.Reason says what for.
	OutcomeWaiting
	// OutcomeStalled: the object cannot progress until it is changed (an
	// invalid spec). The Loop writes the Stalled condition with Reason and
	// Message on the object and does not retry until the object changes
	// (or the periodic resync).
	OutcomeStalled
)

func (o Outcome) String() string {
	switch o {
	case OutcomeDone:
		return "done"
	case OutcomeRequeue:
		return "requeue"
	case OutcomeWaiting:
		return "waiting"
	case OutcomeStalled:
		return "stalled"
	}
	return fmt.Sprintf("Outcome(%d)", int(o))
}

// Result is what a reconcile that returned no error asks for next. The
// zero value is Done.
type Result struct {
	Outcome Outcome
	// After is when to reconcile again (Requeue, Waiting; <= 0: only on
	// events).
	After time.Duration
	// Reason is a CamelCase reason (Stalled), or what the key waits for
	// (Waiting, free text).
	Reason string
	// Message says why, for the Stalled condition.
	Message string
}

// Done is a reconcile with nothing left to do until the next event.
func Done() Result { return Result{} }

// Requeue asks for another reconcile after d; d <= 0 is Done.
func Requeue(d time.Duration) Result {
	if d <= 0 {
		return Done()
	}
	return Result{Outcome: OutcomeRequeue, After: d}
}

// Waiting says the key waits for something outside the object (what: free
// text, for logs), and is looked at again after d (<= 0: on events only).
func Waiting(what string, d time.Duration) Result {
	return Result{Outcome: OutcomeWaiting, After: max(d, 0), Reason: what}
}

// Stalled says the object cannot progress until it changes: reason is a
// CamelCase word (ReasonInvalidSpec, or the controller's own), message
// says what to change.
func Stalled(reason, message string) Result {
	return Result{Outcome: OutcomeStalled, Reason: reason, Message: message}
}

// InvalidSpec is Stalled with ReasonInvalidSpec and err's text: the spec
// read from the store (past admission) cannot be acted on.
func InvalidSpec(err error) Result { return Stalled(ReasonInvalidSpec, err.Error()) }

// Sooner returns r with After lowered to d when d > 0 is sooner (a Done
// becomes a Requeue after d). Stalled is kept as it is.
func (r Result) Sooner(d time.Duration) Result {
	if d <= 0 || r.Outcome == OutcomeStalled {
		return r
	}
	if r.Outcome == OutcomeDone {
		return Requeue(d)
	}
	if r.After <= 0 || d < r.After {
		r.After = d
	}
	return r
}
