// Package stackx lends package routertest the router's own route stack, so
// that a unit test runs exactly what the router runs, without making the
// stack part of the router's API. Package router sets Build in its init.
package stackx

import (
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/warrenmq/warren/telemetry"
)

// Build builds the stack of route (a router.Route, its defaults applied as
// AddRoute does) over pub (delayed retries, dead letters, replies) and tel,
// and returns its handler and the route's Timeout.
var Build func(route any, pub message.Publisher, tel *telemetry.Telemetry) (message.HandlerFunc, time.Duration, error)
