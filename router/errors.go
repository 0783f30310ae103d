package router

import (
	"errors"
	"fmt"
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
// else of the route was declared. Route.Queue.ReadOnly adopts the queue as
// it is.
type QueueConflictError struct {
	Route, Queue string
	Err          error
}

func (e *QueueConflictError) Error() string {
	return fmt.Sprintf("router: route %q: queue %q exists with other properties than the route declares: %v; "+
		"to consume it as it is, set Route.Queue.ReadOnly (the queue is only checked, and dead letters are published); "+
		"`warren topology diff` lists every difference", e.Route, e.Queue, e.Err)
}

func (e *QueueConflictError) Unwrap() error { return e.Err }
