package middleware

import (
	"context"
	"strings"
	"sync"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/ThreeDotsLabs/watermill/message"
)

// instrumentationName identifies warren's tracer and meter.
const instrumentationName = "github.com/warrenmq/warren/middleware"

// DurationBuckets are the bucket boundaries (seconds) of warren's duration
// histograms: the ones the messaging semantic conventions advise for
// messaging.client.operation.duration and messaging.process.duration. The
// SDK's default boundaries are made for milliseconds and would put nearly
// every duration in seconds into the first bucket.
var DurationBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10}

// TelemetryConfig chooses the OpenTelemetry providers. Zero fields use the
// otel globals.
type TelemetryConfig struct {
	TracerProvider trace.TracerProvider
	MeterProvider  metric.MeterProvider
	// Propagator carries context across the broker. Default: W3C trace
	// context and baggage.
	Propagator propagation.TextMapPropagator
}

// Telemetry is the tracer, meter and instruments shared by Tracing, the
// tracing publisher, Retry, DelayedRetry and DeadLetter.
type Telemetry struct {
	tracer     trace.Tracer
	propagator propagation.TextMapPropagator

	sent, consumed, retries, deadLetters metric.Int64Counter
	opDuration, processDuration          metric.Float64Histogram

	destMu sync.RWMutex
	dests  map[destKey]*destination
}

// NewTelemetry builds the instruments: messaging.client.sent.messages,
// messaging.client.consumed.messages, messaging.client.operation.duration,
// messaging.process.duration (the semantic conventions' names), and
// warren.retries and warren.dead_letters.
func NewTelemetry(cfg TelemetryConfig) (*Telemetry, error) {
	if cfg.TracerProvider == nil {
		cfg.TracerProvider = otel.GetTracerProvider()
	}
	if cfg.MeterProvider == nil {
		cfg.MeterProvider = otel.GetMeterProvider()
	}
	if cfg.Propagator == nil {
		cfg.Propagator = propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
	}
	m := cfg.MeterProvider.Meter(instrumentationName, metric.WithSchemaURL(semconv.SchemaURL))
	t := &Telemetry{tracer: cfg.TracerProvider.Tracer(instrumentationName, trace.WithSchemaURL(semconv.SchemaURL)), propagator: cfg.Propagator}
	var err error
	counters := []struct {
		dst        *metric.Int64Counter
		name, desc string
	}{
		{&t.sent, "messaging.client.sent.messages", "Messages a producer attempted to send."},
		{&t.consumed, "messaging.client.consumed.messages", "Messages delivered to the application."},
		{&t.retries, "warren.retries", "Retries scheduled (in-process or delayed)."},
		{&t.deadLetters, "warren.dead_letters", "Messages dead-lettered."},
	}
	for _, c := range counters {
		if *c.dst, err = m.Int64Counter(c.name, metric.WithDescription(c.desc), metric.WithUnit("{message}")); err != nil {
			return nil, err
		}
	}
	if t.opDuration, err = m.Float64Histogram("messaging.client.operation.duration", metric.WithUnit("s"),
		metric.WithDescription("Duration of messaging operations (send)."), metric.WithExplicitBucketBoundaries(DurationBuckets...)); err != nil {
		return nil, err
	}
	if t.processDuration, err = m.Float64Histogram("messaging.process.duration", metric.WithUnit("s"),
		metric.WithDescription("Duration of processing a message."), metric.WithExplicitBucketBoundaries(DurationBuckets...)); err != nil {
		return nil, err
	}
	return t, nil
}

var (
	defaultTelemetryOnce sync.Once
	defaultTelemetry     *Telemetry
)

// globalTelemetry is Telemetry on the otel globals, made once.
func globalTelemetry() *Telemetry {
	defaultTelemetryOnce.Do(func() {
		t, err := NewTelemetry(TelemetryConfig{})
		if err != nil {
			// The global providers do not fail to make instruments; fall
			// back to no instruments at all rather than panic.
			t = &Telemetry{tracer: otel.GetTracerProvider().Tracer(instrumentationName), propagator: propagation.TraceContext{}}
		}
		defaultTelemetry = t
	})
	return defaultTelemetry
}

func (t *Telemetry) countRetry(ctx context.Context, kind string) {
	if t.retries != nil {
		t.retries.Add(ctx, 1, metric.WithAttributes(attribute.String("warren.retry.kind", kind)))
	}
}

func (t *Telemetry) countDeadLetter(ctx context.Context, mode string) {
	if t.deadLetters != nil {
		t.deadLetters.Add(ctx, 1, metric.WithAttributes(attribute.String("warren.dead_letter.mode", mode)))
	}
}

// destination is the span name and attributes of one destination, built
// once and reused: a successful message allocates nothing for them.
type destination struct {
	name  string
	attrs []attribute.KeyValue
	set   metric.MeasurementOption
}

// spanName joins the non-empty parts with ":" after the operation, the
// default exchange shown as amq.default.
func spanName(op string, parts ...string) string {
	var b strings.Builder
	b.WriteString(op)
	sep := " "
	for _, p := range parts {
		if p == "" {
			continue
		}
		b.WriteString(sep)
		b.WriteString(p)
		sep = ":"
	}
	return b.String()
}

// destKey keys the destination cache without building a string per
// message.
type destKey struct{ op, exchange, routingKey, queue string }

func (t *Telemetry) destinationFor(op, exchange, routingKey, queue string) *destination {
	key := destKey{op, exchange, routingKey, queue}
	t.destMu.RLock()
	d, ok := t.dests[key]
	t.destMu.RUnlock()
	if ok {
		return d
	}
	shownExchange := exchange
	if exchange == "" {
		shownExchange = "amq.default"
	}
	operationType := "process"
	if op == "send" {
		operationType = "send"
	}
	attrs := []attribute.KeyValue{
		attribute.String("messaging.system", "rabbitmq"),
		attribute.String("messaging.operation.name", op),
		attribute.String("messaging.operation.type", operationType),
		attribute.String("messaging.destination.name", shownExchange),
	}
	if routingKey != "" {
		attrs = append(attrs, attribute.String("messaging.rabbitmq.destination.routing_key", routingKey))
	}
	if queue != "" {
		attrs = append(attrs, attribute.String("messaging.destination.subscription.name", queue))
	}
	d = &destination{
		name:  spanName(op, shownExchange, routingKey, queue),
		attrs: attrs,
		set:   metric.WithAttributeSet(attribute.NewSet(attrs...)),
	}
	t.destMu.Lock()
	defer t.destMu.Unlock()
	if t.dests == nil {
		t.dests = map[destKey]*destination{}
	}
	if len(t.dests) >= maxDestinations {
		clear(t.dests) // routing keys can be many: stay bounded
	}
	if cur, ok := t.dests[key]; ok {
		return cur
	}
	t.dests[key] = d
	return d
}

// maxDestinations bounds the destination cache.
const maxDestinations = 4096

// metadataCarrier lets a propagator read and write Watermill metadata, which
// becomes AMQP headers.
type metadataCarrier message.Metadata

func (c metadataCarrier) Get(key string) string { return c[key] }
func (c metadataCarrier) Set(key, value string) { c[key] = value }
func (c metadataCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}
