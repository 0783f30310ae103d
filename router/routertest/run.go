// Package routertest runs one message through a route's production
// middleware stack (router.Stack, the value the router itself runs) with
// no broker and no sleeping: delayed retries and dead letters are recorded,
// not published; Retry's waits are recorded, not slept.
//
//	res, err := routertest.Run(route, middlewaretest.NewMessage(`{"id":1}`))
//	// res.Disposition, res.Calls, res.Published, res.Waits
package routertest

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	kit "github.com/warrenmq/warren/middleware/middlewaretest"
	"github.com/warrenmq/warren/router"
	"github.com/warrenmq/warren/router/internal/stackx"
	"github.com/warrenmq/warren/telemetry"
)

// Result is what one message came to in a route's stack.
type Result struct {
	// Produced, Err, Disposition (what the subscriber settles the
	// delivery with) and Reason.
	kit.Result
	// Calls is how often the route's handler ran (in-process attempts).
	Calls int
	// Published are the delayed retries, dead letters and replies the
	// stack sent, each with its topic (the delay or dead-letter queue, the
	// reply-to address).
	Published []kit.Published
	// Waits are Retry's waits between attempts, recorded instead of slept.
	Waits []time.Duration
}

// Option shapes Run.
type Option func(*options)

type options struct {
	tel *telemetry.Telemetry
	pub *kit.Publisher
}

// WithTelemetry gives the stack telemetry (telemetrytest.New keeps
// spans and metrics in memory). Default: the otel global providers.
func WithTelemetry(t *telemetry.Telemetry) Option { return func(o *options) { o.tel = t } }

// WithPublisher records into p: set p.Fail to see what the stack does when
// the broker refuses a delayed retry or a dead letter.
func WithPublisher(p *kit.Publisher) Option { return func(o *options) { o.pub = p } }

// Run passes msg (see middlewaretest.NewMessage and its options for the
// delivery's attempt, redelivered flag, headers and retry round) through
// route's stack, as route's subscription would: the message's context
// carries the route's Timeout, and the route's handler runs inside. An
// invalid route is the error, as AddRoute would return it. A route's
// Retry.Sleep, when set, is kept; otherwise waits are recorded.
func Run(route router.Route, msg *message.Message, opts ...Option) (Result, error) {
	if msg == nil {
		return Result{}, fmt.Errorf("%w: nil message", kit.ErrNilArgument)
	}
	o := options{}
	for _, opt := range opts {
		if opt != nil {
			opt(&o)
		}
	}
	if o.pub == nil {
		o.pub = &kit.Publisher{}
	}
	var calls atomic.Int32
	if h := route.Handler; h != nil {
		route.Handler = func(m *message.Message) error { calls.Add(1); return h(m) }
	}
	if p := route.Produce; p != nil {
		route.Produce = func(m *message.Message) ([]*message.Message, error) { calls.Add(1); return p(m) }
	}
	if r := route.Respond; r != nil {
		route.Respond = func(m *message.Message) (*message.Message, error) { calls.Add(1); return r(m) }
	}
	if bh := route.Batch.Handler; bh != nil {
		// A batch of one, after the route's Batch.Wait.
		route.Batch.Handler = func(ctx context.Context, msgs []*message.Message) error { calls.Add(1); return bh(ctx, msgs) }
	}
	sleeper := &kit.Sleeper{}
	if route.Retry.Sleep == nil {
		route.Retry.Sleep = sleeper.Sleep
	}
	handler, timeout, err := stackx.Build(route, o.pub, o.tel)
	if err != nil {
		return Result{}, err
	}
	// The subscription gives the first attempt the route's timeout on the
	// message's own context.
	ctx, cancel := context.WithTimeout(msg.Context(), timeout)
	defer cancel()
	msg.SetContext(ctx)
	res := kit.Run(msg, handler)
	return Result{Result: res, Calls: int(calls.Load()), Published: o.pub.Published(), Waits: sleeper.Waits()}, nil
}
