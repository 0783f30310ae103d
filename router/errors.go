package router

import (
	"errors"

	"github.com/warrenmq/warren/internal/configerr"
)

var (
	// ErrInvalidRoute: a route failed validation.
	ErrInvalidRoute = errors.New("router: invalid route")
	// ErrDeadLetterMissing: a route's dead-letter target does not exist on
	// the broker; messages would be dropped silently (PITFALLS 15).
	ErrDeadLetterMissing = errors.New("router: dead-letter target missing")
	// ErrRunning: routes are added before Run.
	ErrRunning = errors.New("router: already running")
	// ErrInvalidConfig: New was given a nil connection or a bad Config. The
	// same error as every other package's ErrInvalidConfig.
	ErrInvalidConfig = configerr.ErrInvalidConfig
	// ErrClosed: the router was closed.
	ErrClosed = errors.New("router: closed")
	// ErrConnectionClosed: Run ended because the router's connection closed
	// for good (it gave up reconnecting, or was closed under the router);
	// the connection's reason (conn.Conn.Err) is in the chain.
	ErrConnectionClosed = errors.New("router: the connection closed for good")
)
