package middleware

import (
	"context"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/warrenmq/warren/ack"
	"github.com/warrenmq/warren/internal/headers"
)

// consumerKind is made once: an option built per message is an allocation
// per message.
var consumerKind = trace.WithSpanKind(trace.SpanKindConsumer)

// traceParentKey is where the W3C propagator puts the trace context in a
// message's metadata (and so its AMQP headers).
const traceParentKey = "traceparent"

// TracingConfig shapes Tracing.
type TracingConfig struct {
	// Telemetry to use. Default: the otel global providers.
	Telemetry *Telemetry
	// AsParent makes the producer's span the parent of the process span.
	// Default: the process span starts a trace of its own and links to the
	// producer's, as the messaging conventions recommend.
	AsParent bool
}

func (c *TracingConfig) setDefaults() {
	if c.Telemetry == nil {
		c.Telemetry = globalTelemetry()
	}
}

// Validate reports every problem; every TracingConfig is valid today, and
// it is here so that every middleware config is checked the same way.
func (c *TracingConfig) Validate() error { return nil }

// Tracing starts a consumer span "process <exchange>:<routing key>:<queue>"
// (empty parts dropped, amq.default for the default exchange) for each
// message, linked to (or, with AsParent, a child of) the W3C trace context
// the producer put in the message's headers, with the messaging semantic
// convention attributes; the handler runs with the span in the message's
// context. A failure sets the error status and error.type. It records
// messaging.client.consumed.messages and messaging.process.duration.
func Tracing(cfg TracingConfig) (message.HandlerMiddleware, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	tel := cfg.Telemetry
	return func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			info, ok := ack.InfoOf(msg)
			var dst *destination
			if ok {
				dst = tel.destinationFor("process", info.Exchange, info.RoutingKey, info.Queue)
			} else {
				dst = tel.destinationFor("process", message.SubscribeTopicFromCtx(msg.Context()), "", "")
			}
			original := msg.Context()
			parent := original
			var optsBuf [2]trace.SpanStartOption
			opts := append(optsBuf[:0], consumerKind)
			if _, has := msg.Metadata[traceParentKey]; has {
				producer := trace.SpanContextFromContext(tel.propagator.Extract(context.Background(), metadataCarrier(msg.Metadata)))
				if producer.IsValid() {
					if cfg.AsParent {
						parent = trace.ContextWithRemoteSpanContext(parent, producer)
					} else {
						opts = append(opts, trace.WithLinks(trace.Link{SpanContext: producer}))
					}
				}
			}
			ctx, span := tel.tracer.Start(parent, dst.name, opts...)
			if span.IsRecording() {
				span.SetAttributes(dst.attrs...)
				span.SetAttributes(attribute.String("messaging.message.id", msg.UUID))
				if ok {
					span.SetAttributes(attribute.Int64("messaging.rabbitmq.message.delivery_tag", int64(info.DeliveryTag)))
				}
				if cid := msg.Metadata[headers.MetaCorrelationID]; cid != "" {
					span.SetAttributes(attribute.String("messaging.message.conversation_id", cid))
				}
			}
			msg.SetContext(ctx)
			start := time.Now()
			out, err := h(msg)
			if err != nil {
				span.SetStatus(codes.Error, err.Error())
				span.SetAttributes(attribute.String("error.type", ack.ErrorType(err)))
			}
			span.End()
			if tel.consumed != nil {
				tel.consumed.Add(ctx, 1, dst.set)
				tel.processDuration.Record(ctx, time.Since(start).Seconds(), dst.set)
			}
			msg.SetContext(original)
			return out, err
		}
	}, nil
}

// TracingPublisherConfig shapes NewTracingPublisher.
type TracingPublisherConfig struct {
	// Telemetry to use. Default: the otel global providers.
	Telemetry *Telemetry
	// Destination maps a topic to the exchange and routing key it is
	// published to, for span names and attributes. Default: the topic as
	// the exchange. warren.Mapping's Route gives the real ones.
	Destination func(topic string) (exchange, routingKey string)
}

// NewTracingPublisher decorates pub: each message gets a producer span
// "send <exchange>:<routing key>" (a child of the message's context), and,
// unless it already carries one, the W3C trace context of that span in its
// metadata (AMQP headers). A message republished for a retry or a
// dead-letter keeps the trace context of its creation. It records
// messaging.client.sent.messages and messaging.client.operation.duration.
func NewTracingPublisher(pub message.Publisher, cfg TracingPublisherConfig) (message.Publisher, error) {
	if pub == nil {
		return nil, &ConfigError{Field: "middleware.NewTracingPublisher.pub", Reason: "must not be nil"}
	}
	cfg.setDefaults()
	return &tracingPublisher{pub: pub, cfg: cfg}, nil
}

func (c *TracingPublisherConfig) setDefaults() {
	if c.Telemetry == nil {
		c.Telemetry = globalTelemetry()
	}
	if c.Destination == nil {
		c.Destination = func(topic string) (string, string) { return topic, "" }
	}
}

type tracingPublisher struct {
	pub message.Publisher
	cfg TracingPublisherConfig
}

func (p *tracingPublisher) Publish(topic string, msgs ...*message.Message) error {
	tel := p.cfg.Telemetry
	exchange, key := p.cfg.Destination(topic)
	dst := tel.destinationFor("send", exchange, key, "")
	spans := make([]trace.Span, len(msgs))
	for i, m := range msgs {
		ctx, span := tel.tracer.Start(m.Context(), dst.name, trace.WithSpanKind(trace.SpanKindProducer))
		if span.IsRecording() {
			span.SetAttributes(dst.attrs...)
			span.SetAttributes(attribute.String("messaging.message.id", m.UUID))
			if cid := m.Metadata[headers.MetaCorrelationID]; cid != "" {
				span.SetAttributes(attribute.String("messaging.message.conversation_id", cid))
			}
		}
		if _, has := m.Metadata[traceParentKey]; !has {
			tel.propagator.Inject(ctx, metadataCarrier(m.Metadata))
		}
		spans[i] = span
	}
	start := time.Now()
	err := p.pub.Publish(topic, msgs...)
	elapsed := time.Since(start).Seconds()
	for i, span := range spans {
		if err != nil {
			span.SetStatus(codes.Error, err.Error())
			span.SetAttributes(attribute.String("error.type", ack.ErrorType(err)))
		}
		span.End()
		if tel.sent != nil {
			tel.sent.Add(msgs[i].Context(), 1, dst.set)
		}
	}
	if tel.opDuration != nil {
		tel.opDuration.Record(context.Background(), elapsed, dst.set)
	}
	return err
}

func (p *tracingPublisher) Close() error { return p.pub.Close() }
