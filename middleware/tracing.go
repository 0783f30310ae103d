package middleware

import (
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/warrenmq/warren/ack"
	"github.com/warrenmq/warren/internal/headers"
	"github.com/warrenmq/warren/internal/instrument"
	"github.com/warrenmq/warren/telemetry"
)

// TracingConfig shapes Tracing.
type TracingConfig struct {
	// Telemetry to use; its Relation decides whether a process span is a
	// child of the sender's span or linked to it. Default:
	// telemetry.Default(), the otel global providers.
	Telemetry *telemetry.Telemetry
}

func (c *TracingConfig) setDefaults() {
	if c.Telemetry == nil {
		c.Telemetry = telemetry.Default()
	}
}

// Validate reports every problem; every TracingConfig is valid today, and
// it is here so that every middleware config is checked the same way.
func (c *TracingConfig) Validate() error { return nil }

// Tracing gives a process span to messages that have none: a warren
// Subscriber traces its deliveries itself (SubscriberConfig.Telemetry), and
// for those Tracing does nothing, nor for a message a warren Subscriber
// received with cfg.Telemetry itself (when that records nothing, the
// Subscriber already put the sender's trace context in the message's
// context: the router's stack on its own routes); a message from any other
// subscriber, or from a warren Subscriber whose telemetry records nothing
// (disabled, or no provider set) and is not cfg.Telemetry, gets a process
// span "process {destination}" here when cfg.Telemetry records, continuing
// the trace context in its metadata, with the handler's error as its
// outcome. Retry,
// DelayedRetry and DeadLetter record their failures on whichever process
// span the message has.
func Tracing(cfg TracingConfig) (message.HandlerMiddleware, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	tel := instrument.Of(cfg.Telemetry)
	return func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			// A warren Subscriber with the same telemetry started this
			// message's processing when it received it: its Process is
			// there, or nothing records and the sender's trace context is
			// in its context already.
			if ctx := msg.Context(); instrument.FromContext(ctx) != nil || instrument.ReceivedWith(ctx, tel) {
				return h(msg)
			}
			in := instrument.Incoming{MessageID: msg.UUID, CorrelationID: msg.Metadata.Get(headers.MetaCorrelationID), Metadata: msg.Metadata, BodySize: len(msg.Payload)}
			if info, ok := ack.InfoOf(msg); ok {
				in.Destination = instrument.Destination{Exchange: info.Exchange, RoutingKey: info.RoutingKey, Queue: info.Queue}
				in.DeliveryTag = info.DeliveryTag
			} else {
				in.Destination = instrument.Destination{Queue: message.SubscribeTopicFromCtx(msg.Context())}
			}
			original := msg.Context()
			ctx, proc := tel.StartProcess(original, instrument.Peer{}, in)
			msg.SetContext(ctx)
			out, err := h(msg)
			proc.End(err)
			msg.SetContext(original)
			return out, err
		}
	}, nil
}
