package router

import (
	"errors"
	"fmt"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/warrenmq/warren"
	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/internal/delay"
	"github.com/warrenmq/warren/internal/logx"
	"github.com/warrenmq/warren/middleware"
	"github.com/warrenmq/warren/topology"
)

// Route is one consumer declared in one place: its queue and bindings (and
// the exchanges they need), how many messages it takes at once, its retry,
// delayed retry, dead-letter and tracing settings, and its handler. Zero
// values are the safe defaults: at-least-once, bounded retry, a dead-letter
// queue of its own.
type Route struct {
	// Name identifies the route (handler name in Watermill, dead-letter
	// headers, health). Required, unique.
	Name string
	// Queue is consumed, declared as it is given: the router adds no
	// argument of its own, except with DeadLetter.Mode RejectToDLX when the
	// spec names no dead-letter target: then x-dead-letter-exchange ""
	// (the default exchange) and x-dead-letter-routing-key the dead-letter
	// queue. With the default mode (PublishToDLQ) nothing is added. So a
	// queue that a publisher in another service (or watermill-amqp) declared
	// first with the same spec is the route's queue as it is. A queue that
	// exists with other arguments fails Run with a *QueueConflictError
	// (the broker's 406), whose WayOut says what to change: a queue's
	// arguments never change, so a change of DeadLetter.Mode on an existing
	// queue is a migration (docs/GUIDE.md). Set ReadOnly to adopt it as it is: it is then only
	// checked to exist, never declared, and dead-lettering publishes (a
	// ReadOnly queue's arguments are not the router's to set).
	Queue topology.QueueSpec
	// Exchanges the bindings need, declared first.
	Exchanges []topology.ExchangeSpec
	// Bindings of the queue; an empty Destination means the route's queue.
	Bindings []topology.BindSpec

	// Prefetch and MaxInFlight are the subscriber's (see
	// warren.SubscriberConfig: raise MaxInFlight for handlers that wait, not
	// for ones that only compute). Default: MaxInFlight 1 (ordered).
	Prefetch    int
	MaxInFlight int
	// Marshaler decodes deliveries. Default: warren.DefaultMarshaler.
	Marshaler warren.Marshaler

	// Retry is the in-process retry. Default: middleware.RetryConfig's.
	Retry RetrySettings
	// DelayedRetry is the broker-side retry through the delay levels.
	DelayedRetry DelayedRetrySettings
	// DeadLetter is where messages go when retries are exhausted.
	DeadLetter DeadLetterSettings
	// KillSwitch pauses the route while what its handler depends on is
	// down. Default: off.
	KillSwitch KillSwitchSettings
	// RateLimit limits how many messages a second start (PerSecond; 0, the
	// default: no limit). MaxInFlight stays the concurrency limit. A
	// rate-limited route's Prefetch defaults to its MaxInFlight, so that
	// the broker, not the process, holds the backlog.
	RateLimit middleware.RateLimitConfig
	// Timeout bounds one attempt of the handler. Default: 1 minute; it must
	// stay well below the broker's consumer_timeout (30 min).
	Timeout time.Duration

	// Handler consumes messages and produces none.
	Handler message.NoPublishHandlerFunc
	// Produce consumes messages and returns messages to publish to
	// PublishTopic with the router's output publisher (set exactly one of
	// Handler and Produce).
	Produce      message.HandlerFunc
	PublishTopic string
	// Respond answers requests (warren.Requester): the message it returns
	// goes to the request's reply-to address with the request's
	// correlation id. An error, once the in-process retries are spent,
	// becomes an error reply (the requester's *warren.RemoteError) and the
	// request is acked: the requester is waiting, so there is no delayed
	// retry and no dead-lettering of a failed request. Set exactly one of
	// Handler, Produce and Respond.
	Respond func(*message.Message) (*message.Message, error)
	// Batch handles several messages in one call (BatchSettings.Handler),
	// instead of Handler.
	Batch BatchSettings

	// Middleware are extra Watermill middleware, innermost (closest to the
	// handler, inside the timeout).
	Middleware []message.HandlerMiddleware
}

// RetrySettings shape the in-process retry of a route.
type RetrySettings struct {
	Disabled bool
	middleware.RetryConfig
}

// DelayedRetrySettings shape the delayed retries of a route.
//
// Footprint: the copies wait in the vhost's delay levels, shared by every
// route, router and Publisher of the vhost. Level k is a quorum queue (a
// Raft group on a cluster) and a topic exchange, holding waits of 2^k
// seconds; a delay of d needs levels 0 to log2(d): a router declares those
// of its routes' longest level at Run, and a longer delay (a scheduled
// message) extends them when published. The default levels (longest 10m)
// take 10 levels; delays of 1s and 3s take 2; the most, 28, is for delays
// up to 8.5 years. Beside them, once per vhost, the deliver exchange, its
// alternate exchange and two quorum queues (warren.delay.due,
// warren.delay.unroutable). `warren topology export` leaves them out.
type DelayedRetrySettings struct {
	Disabled bool
	// Levels default to middleware.DefaultDelayLevels (1s, 10s, 1m, 10m:
	// 10 delay levels).
	Levels []time.Duration
	// OnRetry is called after each confirmed scheduled copy.
	OnRetry func(middleware.DelayedRetryEvent)
}

// KillSwitchSettings shape a route's kill switch (middleware.KillSwitch):
// once Enabled, a route whose handler fails TripThreshold (15%) of at
// least ActivationThreshold (10) attempts within TrackingPeriod (1m), or
// returns middleware.DependencyDown, pauses: the attempt in hand and what
// arrives meanwhile go back to the queue, neither retried nor
// dead-lettered, and the broker holds the backlog. After RestartTimeout
// (1m) it tries one message and consumes again on its success. Each change
// is logged, counted (warren.kill_switch.transitions) and in Health. The
// router sets Pauser, Name, Logger and Telemetry.
type KillSwitchSettings struct {
	Enabled bool
	middleware.KillSwitchConfig
}

// DeadLetterSettings shape the dead-lettering of a route.
type DeadLetterSettings struct {
	// Disabled drops dead-lettering: exhausted messages are rejected with
	// requeue (counting toward a quorum queue's delivery limit).
	Disabled bool
	// Mode: middleware.PublishToDLQ (the default: a copy with diagnostic
	// headers, confirmed before the original is acked; nothing of the
	// queue's arguments) or middleware.RejectToDLX (the broker moves the
	// message through dead-letter arguments the router adds to the queue;
	// its x-death says only "rejected").
	Mode middleware.DeadLetterMode
	// Queue is the dead-letter queue. Default: "<queue>.dlq".
	Queue string
	// OnDeadLetter is the terminal hook.
	OnDeadLetter func(middleware.DeadLetterEvent)
}

func (r *Route) setDefaults() {
	if r.MaxInFlight == 0 {
		r.MaxInFlight = 1
	}
	if r.Batch.Handler != nil {
		if r.Batch.Size == 0 {
			r.Batch.Size = 100
		}
		if r.Batch.Wait == 0 {
			r.Batch.Wait = 50 * time.Millisecond
		}
		// Each message waits in the process for its batch: a batch can
		// fill only with Size messages in flight.
		r.MaxInFlight = max(r.MaxInFlight, r.Batch.Size)
		if r.Prefetch != 0 {
			r.Prefetch = max(r.Prefetch, r.MaxInFlight)
		}
	}
	if r.RateLimit.PerSecond > 0 && r.Prefetch == 0 {
		r.Prefetch = r.MaxInFlight
	}
	if r.Timeout == 0 {
		r.Timeout = time.Minute
	}
	if !r.DelayedRetry.Disabled && len(r.DelayedRetry.Levels) == 0 {
		r.DelayedRetry.Levels = middleware.DefaultDelayLevels
	}
	if r.DeadLetter.Queue == "" {
		r.DeadLetter.Queue = r.Queue.Name + ".dlq"
	}
	if !r.DeadLetter.Disabled && r.DeadLetter.Mode == middleware.RejectToDLX &&
		r.Queue.Args.DeadLetterExchange == "" && r.Queue.Args.DeadLetterRoutingKey == "" {
		// Dead-letter through the default exchange straight to the DLQ.
		r.Queue.Args.DeadLetterRoutingKey = r.DeadLetter.Queue
	}
	for i := range r.Bindings {
		if r.Bindings[i].Destination == "" {
			r.Bindings[i].Destination = r.Queue.Name
		}
	}
}

// Validate reports every problem of the route, each naming its field.
func (r *Route) Validate() error {
	var errs []error
	bad := func(field, reason string) {
		errs = append(errs, fmt.Errorf("%w: route %q: %s: %s", ErrInvalidRoute, r.Name, field, reason))
	}
	if r.Name == "" {
		bad("Name", "must not be empty")
	}
	if r.Queue.Name == "" {
		bad("Queue.Name", "must be set (a route's queue outlives reconnects and restarts)")
	}
	if r.Batch.Handler != nil && (r.Batch.Size < 0 || r.Batch.Wait < 0) {
		bad("Batch", "Size and Wait must not be negative")
	}
	if r.Batch.Handler == nil && (r.Batch.Size != 0 || r.Batch.Wait != 0) {
		bad("Batch", "Size and Wait need Batch.Handler")
	}
	if r.RateLimit != (middleware.RateLimitConfig{}) {
		if err := r.RateLimit.Validate(); err != nil {
			bad("RateLimit", err.Error())
		}
	}
	set := 0
	for _, h := range []bool{r.Handler != nil, r.Produce != nil, r.Respond != nil, r.Batch.Handler != nil} {
		if h {
			set++
		}
	}
	if set != 1 {
		bad("Handler", "set exactly one of Handler, Produce, Respond and Batch.Handler")
	}
	if r.Produce != nil && r.PublishTopic == "" {
		bad("PublishTopic", "required with Produce")
	}
	if r.Timeout < 0 {
		bad("Timeout", "must not be negative")
	}
	for i, l := range r.DelayedRetry.Levels {
		if l < time.Second || l%time.Second != 0 {
			bad(fmt.Sprintf("DelayedRetry.Levels[%d]", i), fmt.Sprintf("%v: whole seconds, at least 1s (the delay levels' granularity)", l))
		}
	}
	if r.DeadLetter.Mode != middleware.RejectToDLX && r.DeadLetter.Mode != middleware.PublishToDLQ {
		bad("DeadLetter.Mode", "unknown")
	}
	if r.Queue.ReadOnly && !r.DeadLetter.Disabled && r.DeadLetter.Mode == middleware.RejectToDLX {
		bad("DeadLetter.Mode", "RejectToDLX needs dead-letter arguments on the queue, and a ReadOnly queue's arguments are not the router's to set: use PublishToDLQ (the default)")
	}
	if err := r.topology().Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// topology is everything the route needs on the broker: its exchanges,
// queue, bindings, dead-letter queue and the binding that brings its
// delayed retries back (the delay levels themselves are the router's).
func (r *Route) topology() topology.Topology {
	t := topology.Topology{Exchanges: r.Exchanges, Queues: []topology.QueueSpec{r.Queue}, Bindings: r.Bindings}
	if !r.DeadLetter.Disabled {
		// Durable whatever the work queue is: dead letters wait for an
		// operator, across broker restarts (and an adopted ReadOnly queue
		// says nothing of its durability).
		t.Queues = append(t.Queues, topology.QueueSpec{Name: r.DeadLetter.Queue, Durable: true})
	}
	if r.delayed() {
		// Delayed retries come back through the connection's delay levels,
		// which the router declares once for all its routes (start).
		if b := delay.ScheduleDestination("", r.Queue.Name, r.forwardScheduled()).Binding; b != nil {
			t.Bindings = append(t.Bindings, *b)
		}
	}
	return t
}

// forwardScheduled reports whether the route's delayed retries come back
// through the hand-over of due messages (a republish without the broker's
// x-death), for consumers that cannot read array headers.
func (r *Route) forwardScheduled() bool {
	m, ok := r.Marshaler.(warren.DefaultMarshaler)
	return ok && m.WatermillAMQP
}

// delayed reports whether the route's failures are retried after a delay.
func (r *Route) delayed() bool { return !r.DelayedRetry.Disabled && r.Respond == nil }

// subscriberConfig is the route's subscriber.
func (r *Route) subscriberConfig(poison func(*warren.PoisonError) error, onEvent func(string, broker.ConsumerEvent), cfg Config) warren.SubscriberConfig {
	return warren.SubscriberConfig{
		Mapping:         warren.ExistingQueues{},
		Marshaler:       r.Marshaler,
		MaxInFlight:     r.MaxInFlight,
		Prefetch:        r.Prefetch,
		OnPoison:        poison,
		OnConsumerEvent: onEvent,
		CloseTimeout:    cfg.CloseTimeout,
		// The route's Timeout bounds the first attempt through the
		// message's own context (Retry bounds each retry itself).
		HandlerTimeout: r.Timeout,
		Telemetry:      cfg.Telemetry,
		Logger:         cfg.Logger.With(logx.Route, r.Name),
	}
}
