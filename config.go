package warren

import (
	"log/slog"
	"time"

	"github.com/warrenmq/warren/ack"
	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/internal/configerr"
	"github.com/warrenmq/warren/retry"
	"github.com/warrenmq/warren/telemetry"
)

// PublisherConfig shapes a Publisher. The zero value is usable.
type PublisherConfig struct {
	// Mapping turns topics into exchanges and routing keys. Default:
	// QueuePerTopic{}.
	Mapping Mapping
	// Marshaler encodes messages. Default: DefaultMarshaler{} (persistent).
	Marshaler Marshaler
	// Mandatory makes the broker return messages that reach no queue:
	// Publish then fails with broker.ErrUnroutable naming them. A scheduled
	// message (MetaDelayedUntil) is checked when it is due instead, with or
	// without Mandatory, and kept where an operator sees it when no queue
	// takes it then (see MetaDelayedUntil). Default: false.
	Mandatory bool
	// ForwardScheduled makes every scheduled message reach its destination
	// through the hand-over of due messages (a warren process of the vhost
	// publishes it when it is due) instead of the broker's dead-lettering,
	// so that it arrives as it was published, without the broker's x-death
	// record of the delay hops: for consumers that cannot read array
	// headers (watermill-amqp). DefaultMarshaler.WatermillAMQP sets it.
	// Default: false (messages to a queue need no process when they are
	// due).
	ForwardScheduled bool
	// ConfirmChannels is how many confirm-mode channels concurrent Publish
	// calls share (never a channel per call). Default: 1. More spread the
	// publishes over more of the broker's channel processes, which can pay
	// where one channel's process is the broker's bottleneck. Measured on 2
	// cores, 16 to 256 goroutines each publishing one persistent message at
	// a time: one channel took 15-32% less client CPU a message than four,
	// and gave up to 20% more messages a second (docs/MEASUREMENTS.md). What
	// more channels do buy: a refusal that Publish's checks could not
	// foresee closes only the channel it hit, and only the publishes on
	// that channel are sent again.
	ConfirmChannels int
	// PublishTimeout bounds one Publish call: waiting for a connection, a
	// blocked broker, the confirms, and republishing what a connection drop
	// left unconfirmed. Each message's Context() bounds it too. Default: 30s.
	PublishTimeout time.Duration
	// CloseTimeout bounds how long Close waits for in-flight publishes.
	// Default: PublishTimeout.
	CloseTimeout time.Duration
	// RouteCache is how many topics' routes are kept (least recently used
	// first out). Default: 1024.
	RouteCache int
	// Telemetry traces every publish (send spans whose context the
	// messages carry in their AMQP headers) and records the send metrics.
	// Default: the connection's (conn.Config.Telemetry);
	// telemetry.Disabled() turns it off.
	Telemetry *telemetry.Telemetry
	// Logger. Default: the connection's logger.
	Logger *slog.Logger
}

func (c *PublisherConfig) setDefaults() {
	if c.Mapping == nil {
		c.Mapping = QueuePerTopic{}
	}
	if c.Marshaler == nil {
		c.Marshaler = DefaultMarshaler{}
	}
	if m, ok := c.Marshaler.(DefaultMarshaler); ok && m.WatermillAMQP {
		c.ForwardScheduled = true
	}
	if c.ConfirmChannels == 0 {
		c.ConfirmChannels = 1
	}
	if c.PublishTimeout == 0 {
		c.PublishTimeout = 30 * time.Second
	}
	if c.CloseTimeout == 0 {
		c.CloseTimeout = c.PublishTimeout
	}
	if c.RouteCache == 0 {
		c.RouteCache = 1024
	}
}

// Validate reports every problem, each naming its field.
func (c *PublisherConfig) Validate() error {
	f := configerr.For("warren.PublisherConfig")
	f.Check(c.ConfirmChannels < 1 || c.ConfirmChannels > 256, "ConfirmChannels", "want 1-256")
	f.Check(c.PublishTimeout < 0, "PublishTimeout", "must not be negative")
	f.Check(c.CloseTimeout < 0, "CloseTimeout", "must not be negative")
	f.Check(c.RouteCache < 1, "RouteCache", "must be positive")
	return f.Err()
}

// RedeliveryConfig is how a Subscriber settles failed messages: never at
// once (a failing message must not spin), but after a backoff that grows
// with the message's attempts, and settled with basic.reject so quorum
// queues' delivery limits count it (PITFALLS 17).
type RedeliveryConfig struct {
	// MaxAttempts bounds the attempts of a failed message (RejectRequeue,
	// the default of a Nack): at that many it is rejected without requeue
	// to the queue's dead-letter exchange, when the queue's registered spec
	// has one. Without one it is never dropped: it keeps coming back at
	// Backoff.MaxInterval, logged at Warn with its count. Default: 10.
	MaxAttempts int
	// Backoff is the wait before a failed message is settled (redelivered),
	// growing with its attempts; it depends only on the attempt count, which
	// the Subscriber remembers across redeliveries. Its MaxInterval must stay
	// well below the broker's consumer_timeout (30 min by default): the
	// message is held unsettled while it waits. Default: 100ms, doubling,
	// jittered by a fifth, at most 30s.
	Backoff retry.Backoff
}

func (c *RedeliveryConfig) setDefaults() {
	if c.MaxAttempts == 0 {
		c.MaxAttempts = 10
	}
	c.Backoff = c.Backoff.Or(retry.Backoff{InitialInterval: 100 * time.Millisecond, Multiplier: 2, RandomizationFactor: 0.2, MaxInterval: 30 * time.Second})
}

func (c *RedeliveryConfig) validate(f *configerr.Fields) {
	f.Check(c.MaxAttempts < 1, "Redelivery.MaxAttempts", "must be positive")
	f.Backoff("Redelivery.Backoff", c.Backoff.Problems())
	f.Check(c.Backoff.MaxInterval > 10*time.Minute, "Redelivery.Backoff.MaxInterval", "at most 10m: the message is held unsettled meanwhile (consumer_timeout)")
}

// SubscriberConfig shapes a Subscriber. The zero value is usable.
type SubscriberConfig struct {
	// Mapping turns topics into queues. Default: QueuePerTopic{}.
	Mapping Mapping
	// Marshaler decodes deliveries. Default: DefaultMarshaler{}.
	Marshaler Marshaler
	// MaxInFlight is how many messages of one subscription are handed out
	// before the first is settled. 1 (the default) keeps Watermill's
	// ordering guarantee: the next message comes only after the previous one
	// was acked or nacked. N lets N handlers run at once. With 1 a message
	// is handled on the consumer's own goroutine; with more, on up to N
	// goroutines that each take deliveries from the channel themselves,
	// started as the messages in hand need them. Their scheduling costs
	// client CPU per message (docs/MEASUREMENTS.md): raise it for handlers
	// that wait (I/O, calls to other services), not for handlers that only
	// compute.
	MaxInFlight int
	// Prefetch is basic.qos prefetch-count. Default: MaxInFlight, at least
	// 32, so the broker keeps the client busy.
	Prefetch int
	// NackDisposition is what a Nack does when no ack.Disposition was set.
	// Default: ack.RejectRequeue (redelivered after a backoff, bounded, then
	// dead-lettered; see Redelivery).
	NackDisposition ack.Disposition
	// Redelivery is how failed messages come back. Default: see
	// RedeliveryConfig.
	Redelivery RedeliveryConfig
	// HandlerTimeout, when set, is the deadline of each message's context
	// from the moment it is handed out: a handler that honours its context
	// gives up then. Default: none (package router sets its route's
	// Timeout, which also bounds each in-process retry).
	HandlerTimeout time.Duration
	// CloseTimeout bounds Close (and the end of a subscription whose
	// Subscribe ctx ended): handlers in flight finish and settle with live
	// message contexts until it passes; then their contexts are cancelled
	// and whatever is still unsettled goes back to the queue. Default: 30s.
	CloseTimeout time.Duration
	// OnPoison is called for every delivery the Marshaler could not decode.
	// Returning nil acks the delivery (the hook dead-lettered it itself, for
	// example with middleware.DeadLetterPoison); an error, or no hook,
	// rejects it to the queue's dead-letter exchange when the queue has
	// one, and otherwise requeues it at the capped backoff. It runs on the
	// subscription's goroutine.
	OnPoison func(*PoisonError) error
	// OnConsumerEvent is told whenever a subscription's consumer is
	// interrupted (its queue deleted, its channel or connection closed),
	// waits for its queue, or consumes again. It runs on the consumer's
	// goroutine: it must not block. Every event is also logged.
	OnConsumerEvent func(topic string, e broker.ConsumerEvent)
	// Ops configures the subscriber's topology operations (timeouts).
	Ops broker.OpsConfig
	// Telemetry traces every delivery (a process span from hand-out to
	// settlement, then a settle span), continuing the trace its sender
	// put in its headers, and records the consume and process metrics,
	// stale settlements and poison messages. Default: the connection's
	// (conn.Config.Telemetry); telemetry.Disabled() turns it off.
	Telemetry *telemetry.Telemetry
	// Logger. Default: the connection's logger.
	Logger *slog.Logger
}

func (c *SubscriberConfig) setDefaults() {
	if c.Mapping == nil {
		c.Mapping = QueuePerTopic{}
	}
	if c.Marshaler == nil {
		c.Marshaler = DefaultMarshaler{}
	}
	if c.MaxInFlight == 0 {
		c.MaxInFlight = 1
	}
	if c.Prefetch == 0 {
		c.Prefetch = max(c.MaxInFlight, 32)
	}
	if c.NackDisposition == ack.Unset {
		c.NackDisposition = ack.RejectRequeue
	}
	c.Redelivery.setDefaults()
	if c.CloseTimeout == 0 {
		c.CloseTimeout = 30 * time.Second
	}
	if c.Ops.Logger == nil {
		c.Ops.Logger = c.Logger
	}
}

// Validate reports every problem, each naming its field.
func (c *SubscriberConfig) Validate() error {
	f := configerr.For("warren.SubscriberConfig")
	f.Check(c.MaxInFlight < 1 || c.MaxInFlight > 65535, "MaxInFlight", "want 1-65535")
	f.Check(c.Prefetch < c.MaxInFlight || c.Prefetch > 65535, "Prefetch", "want MaxInFlight-65535 (a smaller prefetch starves the in-flight slots)")
	switch c.NackDisposition {
	case ack.Requeue, ack.Reject, ack.RejectRequeue:
	default:
		f.Add("NackDisposition", "want Requeue, Reject or RejectRequeue")
	}
	c.Redelivery.validate(f)
	f.Check(c.CloseTimeout < 0, "CloseTimeout", "must not be negative")
	f.Check(c.HandlerTimeout < 0, "HandlerTimeout", "must not be negative")
	f.Join(c.Ops.Validate())
	return f.Err()
}
