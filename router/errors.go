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
	// ErrInvalidConfig: New was given a nil connection or a bad Config.
	ErrInvalidConfig = errors.New("router: invalid configuration")
	// ErrClosed: the router was closed.
	ErrClosed = errors.New("router: closed")
)
