package router

import (
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/warrenmq/warren/middleware"
)

var (
	// ErrInvalidRoute: a route failed validation.
	ErrInvalidRoute = errors.New("router: invalid route")
	// ErrDeadLetterMissing: a route's dead-letter target does not exist on
	// the broker; messages would be dropped silently (PITFALLS 15).
	ErrDeadLetterMissing = errors.New("router: dead-letter target missing")
	// ErrRunning: routes are added before Run.
	ErrRunning = errors.New("router: already running")
)

// QueueConflictError: a route's queue exists on the broker with other
// properties or arguments than the route declares, and the broker refused
// the declaration (406 PRECONDITION_FAILED, conn.ErrPreconditionFailed,
// in the chain with the broker's text, which names the argument). Nothing
// else of the route was declared. A queue's arguments never change once it
// is declared: WayOut says what to change in the route instead
// (Route.Queue.ReadOnly adopts the queue as it is).
type QueueConflictError struct {
	Route, Queue string
	// Argument is the argument the broker named ("x-dead-letter-exchange"),
	// "" when it named none.
	Argument string
	// WayOut is what to change in the route to start.
	WayOut string
	Err    error
}

func (e *QueueConflictError) Error() string {
	return fmt.Sprintf("router: route %q: queue %q exists with other properties than the route declares: %v; %s",
		e.Route, e.Queue, e.Err, e.WayOut)
}

var inequivalentArg = regexp.MustCompile(`inequivalent arg '([^']+)'`)

// queueConflict explains the broker's refusal of rt's queue, with the way
// out of the common case: a change of DeadLetter.Mode on a queue that
// exists (docs/GUIDE.md, "Changing a route's dead-letter mode").
func queueConflict(rt Route, err error) *QueueConflictError {
	e := &QueueConflictError{Route: rt.Name, Queue: rt.Queue.Name, Err: err}
	if m := inequivalentArg.FindStringSubmatch(err.Error()); m != nil {
		e.Argument = m[1]
	}
	deadLetterArg := strings.HasPrefix(e.Argument, "x-dead-letter-")
	switch {
	case deadLetterArg && !rt.DeadLetter.Disabled && rt.DeadLetter.Mode == middleware.RejectToDLX:
		e.WayOut = "the queue was declared without the dead-letter arguments DeadLetter.Mode RejectToDLX needs, and a queue's arguments never change: " +
			"keep DeadLetter.Mode PublishToDLQ (the default: it needs no queue argument and its dead letters carry the error; " +
			"with Route.Queue.ReadOnly the queue is consumed as it is), or consume a new queue, declared with them"
	case deadLetterArg:
		e.WayOut = "the queue keeps the dead-letter arguments it was declared with (an earlier DeadLetter.Mode RejectToDLX), and a queue's arguments never change: " +
			"declare them as they are in Route.Queue.Args (DeadLetterExchange, DeadLetterRoutingKey; the broker then uses them only for expired or overflowing messages, " +
			"dead letters are published), or set Route.Queue.ReadOnly to consume the queue as it is"
	default:
		e.WayOut = "to consume it as it is, set Route.Queue.ReadOnly (the queue is only checked, and dead letters are published), or make Route.Queue match it; " +
			"`warren topology diff` lists every difference"
	}
	return e
}

func (e *QueueConflictError) Unwrap() error { return e.Err }
