package warren

import (
	"errors"
	"log/slog"
	"time"

	"github.com/warrenmq/warren/ack"
	"github.com/warrenmq/warren/topology"
)

// PublisherConfig shapes a Publisher. The zero value is usable.
type PublisherConfig struct {
	// Mapping turns topics into exchanges and routing keys. Default:
	// QueuePerTopic{}.
	Mapping Mapping
	// Marshaler encodes messages. Default: DefaultMarshaler{} (persistent).
	Marshaler Marshaler
	// Mandatory makes the broker return messages that reach no queue:
	// Publish then fails with ErrUnroutable naming them. Default: false.
	Mandatory bool
	// ConfirmChannels is how many confirm-mode channels concurrent Publish
	// calls share (never a channel per call). Default: 4.
	ConfirmChannels int
	// PublishTimeout bounds one Publish call: waiting for a connection, a
	// blocked broker, the confirms, and republishing what a connection drop
	// left unconfirmed. Default: 30s.
	PublishTimeout time.Duration
	// CloseTimeout bounds how long Close waits for in-flight publishes.
	// Default: PublishTimeout.
	CloseTimeout time.Duration
	// Logger. Default: silent.
	Logger *slog.Logger
}

func (c *PublisherConfig) setDefaults() {
	if c.Mapping == nil {
		c.Mapping = QueuePerTopic{}
	}
	if c.Marshaler == nil {
		c.Marshaler = DefaultMarshaler{}
	}
	if c.ConfirmChannels == 0 {
		c.ConfirmChannels = 4
	}
	if c.PublishTimeout == 0 {
		c.PublishTimeout = 30 * time.Second
	}
	if c.CloseTimeout == 0 {
		c.CloseTimeout = c.PublishTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Validate reports every problem, each naming its field.
func (c *PublisherConfig) Validate() error {
	var errs []error
	if c.ConfirmChannels < 1 || c.ConfirmChannels > 256 {
		errs = append(errs, &ConfigError{"PublisherConfig.ConfirmChannels", "want 1-256"})
	}
	if c.PublishTimeout < 0 {
		errs = append(errs, &ConfigError{"PublisherConfig.PublishTimeout", "must not be negative"})
	}
	if c.CloseTimeout < 0 {
		errs = append(errs, &ConfigError{"PublisherConfig.CloseTimeout", "must not be negative"})
	}
	return errors.Join(errs...)
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
	// was acked or nacked. N lets N handlers run at once.
	MaxInFlight int
	// Prefetch is basic.qos prefetch-count. Default: MaxInFlight, at least
	// 32, so the broker keeps the client busy.
	Prefetch int
	// NackDisposition is what a Nack does when no ack.Disposition was set.
	// Default: ack.Requeue.
	NackDisposition ack.Disposition
	// CloseTimeout bounds how long Close (and a cancelled Subscribe ctx)
	// wait for handlers to settle the messages they hold (their contexts are
	// cancelled at once, so handlers can give up early). Default: 10s.
	CloseTimeout time.Duration
	// OnPoison is called for every delivery the Marshaler could not decode.
	// Returning nil acks the delivery (the hook dead-lettered it itself, for
	// example with middleware.DeadLetterPoison); an error, or no hook,
	// rejects it without requeue to the queue's dead-letter exchange. It
	// runs on the subscription's goroutine.
	OnPoison func(*PoisonError) error
	// Ops configures the subscriber's topology operations (timeouts,
	// restore error reports).
	Ops topology.OpsConfig
	// Logger. Default: silent.
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
		c.NackDisposition = ack.Requeue
	}
	if c.CloseTimeout == 0 {
		c.CloseTimeout = 10 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Ops.Logger == nil {
		c.Ops.Logger = c.Logger
	}
}

// Validate reports every problem, each naming its field.
func (c *SubscriberConfig) Validate() error {
	var errs []error
	if c.MaxInFlight < 1 || c.MaxInFlight > 65535 {
		errs = append(errs, &ConfigError{"SubscriberConfig.MaxInFlight", "want 1-65535"})
	}
	if c.Prefetch < c.MaxInFlight || c.Prefetch > 65535 {
		errs = append(errs, &ConfigError{"SubscriberConfig.Prefetch", "want MaxInFlight-65535 (a smaller prefetch starves the in-flight slots)"})
	}
	switch c.NackDisposition {
	case ack.Requeue, ack.Reject, ack.RejectRequeue:
	default:
		errs = append(errs, &ConfigError{"SubscriberConfig.NackDisposition", "want Requeue, Reject or RejectRequeue"})
	}
	if c.CloseTimeout < 0 {
		errs = append(errs, &ConfigError{"SubscriberConfig.CloseTimeout", "must not be negative"})
	}
	return errors.Join(errs...)
}
