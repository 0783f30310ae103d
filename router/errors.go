package router

import "errors"

var (
	// ErrInvalidRoute: a route failed validation.
	ErrInvalidRoute = errors.New("router: invalid route")
	// ErrDeadLetterMissing: a route's dead-letter target does not exist on
	// the broker; messages would be dropped silently (PITFALLS 15).
	ErrDeadLetterMissing = errors.New("router: dead-letter target missing")
	// ErrRunning: routes are added before Run.
	ErrRunning = errors.New("router: already running")
	// ErrClosed: the router was closed.
	ErrClosed = errors.New("router: closed")
)
