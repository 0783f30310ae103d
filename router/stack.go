package router

import (
	"fmt"
	"log/slog"
	"runtime/debug"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	wmw "github.com/ThreeDotsLabs/watermill/message/router/middleware"

	"github.com/warrenmq/warren"
	"github.com/warrenmq/warren/ack"
	"github.com/warrenmq/warren/internal/logx"
	"github.com/warrenmq/warren/middleware"
	"github.com/warrenmq/warren/router/internal/stackx"
	"github.com/warrenmq/warren/telemetry"
)

// stackDeps are what a route's stack uses besides the route itself.
type stackDeps struct {
	// Publisher sends delayed retries and dead letters. The router passes
	// its own confirmed publisher; a unit test passes a
	// middlewaretest.Publisher, which records them. Required unless the
	// route disables both delayed retry and dead-lettering.
	Publisher message.Publisher
	// Telemetry of the tracing and counting steps. Default:
	// telemetry.Default(), the otel global providers.
	Telemetry *telemetry.Telemetry
	// Logger of the retry, delayed-retry and dead-letter steps, which add
	// the route's name. Default: silent.
	Logger *slog.Logger
	// Pauser pauses and resumes the route for its kill switch; nil in a
	// unit test (the switch then only gives messages back).
	Pauser middleware.Pauser
}

// stack is the middleware a route runs, built once: the router runs
// exactly this value, and a unit test runs it without a broker (package
// routertest, through internal/stackx), so the test runs what production
// runs. Outermost first:
//
//  1. recover: a panic of a step outside the dead-letter step becomes the
//     message's error;
//  2. tracing: the process span of a message that has none (a warren
//     Subscriber gives its deliveries theirs; routertest's messages get
//     one here);
//  3. ack: errors become dispositions (ack.AsRequeue requeues; what the
//     dead-letter step leaves is kept: rejected to the dead-letter
//     exchange only with DeadLetter.Mode RejectToDLX, otherwise redelivered,
//     never dropped by a queue without a dead-letter exchange);
//     3a. rate limit (RateLimit.PerSecond): each message waits its turn;
//  4. dead-letter (unless DeadLetter.Disabled): what no retry saves goes to
//     the dead-letter queue (DeadLetter.Mode), a panic with its stack;
//  5. delayed retry (unless DelayedRetry.Disabled): a copy goes to the delay
//     queue of the next level and the original is acked;
//  6. retry (unless Retry.Disabled): in-process attempts with backoff, each
//     bounded by the route's Timeout (the first by the message's own
//     context, which the subscriber gives that deadline);
//  7. the kill switch (KillSwitch.Enabled): counts each attempt's outcome,
//     gives messages back to the queue and pauses the route while tripped;
//  8. the route's own Middleware, then its Handler or Produce, inside a
//     recover: a panic is a permanent failure (*middleware.PanicError, with
//     its stack), never retried, dead-lettered like any other.
type stack struct {
	route    Route
	pub      message.Publisher
	mws      []message.HandlerMiddleware
	poisonFn func(*warren.PoisonError) error
	// killSwitch is the route's, nil without one.
	killSwitch *middleware.KillSwitch
	// batcher runs a batch route's handler; nil for other routes.
	batcher *batcher
}

// newStack builds the stack of route (its defaults applied, as AddRoute
// does) over deps.
func newStack(route Route, deps stackDeps) (*stack, error) {
	route.setDefaults()
	if err := route.Validate(); err != nil {
		return nil, err
	}
	s := &stack{route: route, pub: deps.Publisher}
	if route.Batch.Handler != nil {
		s.batcher = newBatcher(route.Batch, route.Queue.Name, deps.Telemetry)
	}
	log := logx.Or(deps.Logger).With(logx.Route, route.Name)
	add := func(mw message.HandlerMiddleware, err error) error {
		if err != nil {
			return fmt.Errorf("router: route %q: %w", route.Name, err)
		}
		s.mws = append(s.mws, mw)
		return nil
	}
	s.mws = append(s.mws, wmw.Recoverer)
	if err := add(middleware.Tracing(middleware.TracingConfig{Telemetry: deps.Telemetry})); err != nil {
		return nil, err
	}
	// A permanent failure the dead-letter step did not take (dead-lettering
	// disabled) must not be rejected into a queue without a dead-letter
	// exchange, where the broker drops it: only RejectToDLX gives the
	// route's queue one.
	onPermanent := ack.RejectRequeue
	if !route.DeadLetter.Disabled && route.DeadLetter.Mode == middleware.RejectToDLX {
		onPermanent = ack.Reject
	}
	if err := add(middleware.Ack(middleware.AckConfig{OnPermanent: onPermanent})); err != nil {
		return nil, err
	}
	if route.RateLimit.PerSecond > 0 {
		// Once per message, before any attempt: a retry is the same
		// message's turn.
		if err := add(middleware.RateLimit(route.RateLimit)); err != nil {
			return nil, err
		}
	}
	if route.Respond != nil {
		// A failed request becomes an error reply where a message would be
		// dead-lettered; nothing is retried after a delay.
		s.mws = append(s.mws, errorReply(deps.Publisher))
	}
	if !route.DeadLetter.Disabled {
		dlq := route.DeadLetter.Queue
		dlCfg := middleware.DeadLetterConfig{
			Mode: route.DeadLetter.Mode, Publisher: deps.Publisher, HandlerName: route.Name,
			Topic:        func(*message.Message) string { return dlq },
			OnDeadLetter: route.DeadLetter.OnDeadLetter, Telemetry: deps.Telemetry, Logger: log,
		}
		if route.Respond == nil {
			if err := add(middleware.DeadLetter(dlCfg)); err != nil {
				return nil, err
			}
		}
		poisonDL, err := middleware.DeadLetterPoison(dlCfg)
		if err != nil {
			return nil, fmt.Errorf("router: route %q: %w", route.Name, err)
		}
		s.poisonFn = func(pe *warren.PoisonError) error { return poisonDL(pe.Message(), pe) }
	}
	if !route.DelayedRetry.Disabled && route.Respond == nil {
		if err := add(middleware.DelayedRetry(middleware.DelayedRetryConfig{
			Publisher: deps.Publisher, Levels: route.DelayedRetry.Levels, Queue: route.Queue.Name, Telemetry: deps.Telemetry,
			OnRetry: route.DelayedRetry.OnRetry, Logger: log,
		})); err != nil {
			return nil, err
		}
	}
	if !route.Retry.Disabled {
		cfg := route.Retry.RetryConfig
		if cfg.Telemetry == nil {
			cfg.Telemetry = deps.Telemetry
		}
		if cfg.Logger == nil {
			cfg.Logger = log
		}
		if cfg.AttemptTimeout == 0 {
			// The route's timeout bounds each attempt; Retry gives each
			// its deadline (one context per attempt, not two).
			cfg.AttemptTimeout = route.Timeout
		}
		if err := add(middleware.Retry(cfg)); err != nil {
			return nil, err
		}
	}
	if route.KillSwitch.Enabled {
		// Inside Retry: it sees every attempt, and what it gives back to
		// the queue is not retried.
		cfg := route.KillSwitch.KillSwitchConfig
		cfg.Pauser, cfg.Name, cfg.Logger = deps.Pauser, route.Name, logx.Or(deps.Logger)
		if cfg.Telemetry == nil {
			cfg.Telemetry = deps.Telemetry
		}
		ks, err := middleware.NewKillSwitch(cfg)
		if err != nil {
			return nil, fmt.Errorf("router: route %q: %w", route.Name, err)
		}
		s.killSwitch = ks
		s.mws = append(s.mws, ks.Middleware)
	}
	// Without Retry the route's Timeout is the subscription's
	// HandlerTimeout alone: the message's context carries the deadline.
	s.mws = append(s.mws, route.Middleware...)
	s.mws = append(s.mws, recoverPanic)
	return s, nil
}

// recoverPanic turns a panic of the handler into a permanent
// *middleware.PanicError with its stack: never retried, and dead-lettered
// (or, for Respond, answered) like any permanent failure.
func recoverPanic(h message.HandlerFunc) message.HandlerFunc {
	return func(msg *message.Message) (out []*message.Message, err error) {
		defer func() {
			if r := recover(); r != nil {
				out, err = nil, ack.Permanent(&middleware.PanicError{Value: r, Stack: string(debug.Stack())})
			}
		}()
		return h(msg)
	}
}

// wrap puts h inside the stack.
func (s *stack) wrap(h message.HandlerFunc) message.HandlerFunc {
	for i := len(s.mws) - 1; i >= 0; i-- {
		h = s.mws[i](h)
	}
	return h
}

// handler is the route's Handler or Produce inside the stack: what the
// route's subscription runs for each message.
func (s *stack) handler() message.HandlerFunc {
	if s.batcher != nil {
		return s.wrap(s.batcher.handle)
	}
	if h := s.route.Handler; h != nil {
		return s.wrap(func(m *message.Message) ([]*message.Message, error) { return nil, h(m) })
	}
	if h := s.route.Respond; h != nil {
		return s.wrap(func(m *message.Message) ([]*message.Message, error) {
			reply, err := h(m)
			if err != nil {
				return nil, err
			}
			return nil, sendReply(s.pub, m, reply)
		})
	}
	return s.wrap(s.route.Produce)
}

// poison is what the route does with a delivery its marshaler cannot
// decode: a dead-letter copy made from the raw delivery, nil when
// dead-lettering is disabled (the subscriber's own handling applies).
func (s *stack) poison() func(*warren.PoisonError) error { return s.poisonFn }

// The route's stack for package routertest, which runs it without a broker.
func init() {
	stackx.Build = func(route any, pub message.Publisher, tel *telemetry.Telemetry) (message.HandlerFunc, time.Duration, error) {
		s, err := newStack(route.(Route), stackDeps{Publisher: pub, Telemetry: tel})
		if err != nil {
			return nil, 0, err
		}
		return s.handler(), s.route.Timeout, nil
	}
}
