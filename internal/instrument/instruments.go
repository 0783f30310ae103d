// Package instrument is warren's OpenTelemetry instrumentation: the send,
// create, process and settle spans, the metrics, trace context in AMQP
// headers. Package telemetry is its public face (Config, New, the metric
// names); every layer of warren reaches the instruments of a
// *telemetry.Telemetry through Of.
package instrument

import (
	"context"
	"fmt"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
)

// ScopeName names warren's tracer and meter (the instrumentation scope).
const ScopeName = "github.com/warrenmq/warren"

// SchemaURL is the semantic conventions schema warren's telemetry follows.
// The Go SDK ships the v1.43.0 schema; the RabbitMQ messaging conventions
// warren follows did not change between v1.43.0 and v1.44.0.
const SchemaURL = semconv.SchemaURL

// DurationBuckets are the bucket boundaries (seconds) the messaging
// conventions advise for messaging.client.operation.duration and
// messaging.process.duration. The SDK's default boundaries are made for
// milliseconds and would put nearly every duration in seconds into the
// first bucket.
var DurationBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10}

// RestoreBuckets are the bucket boundaries (seconds) of
// warren.connection.restore.duration and warren.connection.blocked.duration:
// a restore of thousands of entities or a broker alarm lasts longer than a
// message.
var RestoreBuckets = []float64{0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300}

// Instruments are the tracer, propagator and instruments of one
// configuration (a *telemetry.Telemetry), shared by a connection, its
// publishers and subscribers, the router and the middleware. Safe for
// concurrent use.
type Instruments struct {
	tracer     trace.Tracer
	propagator propagation.TextMapPropagator
	// link: process spans link to their send span instead of being its
	// children (telemetry.Link).
	link bool
	// off: Disabled; the per-message work is skipped, not done for nothing.
	off bool
	// globalTP is the otel global provider this was built on (Default),
	// while it is the global delegate: until the application sets a
	// provider, its spans record nothing, so none is started.
	globalTP trace.TracerProvider
	// globalMP is the same of the meter provider: until the application
	// sets one, a measurement goes nowhere, so none is taken (no clock
	// read, no destination looked up).
	globalMP metric.MeterProvider

	sent, consumed                   metric.Int64Counter
	opDuration, processDuration      metric.Float64Histogram
	retries, deadLetters             metric.Int64Counter
	reconnects, staleAcks, poison    metric.Int64Counter
	scheduledUnroutable              metric.Int64Counter
	killSwitch                       metric.Int64Counter
	meter                            metric.Meter
	queueMessages, queueConsumers    metric.Int64ObservableGauge
	restoreDuration, blockedDuration metric.Float64Histogram

	dests destinations
}

// New builds the instruments on tp, mp and prop (telemetry.New checked
// them); link makes process spans link to their send span.
func New(tp trace.TracerProvider, mp metric.MeterProvider, prop propagation.TextMapPropagator, link bool) (*Instruments, error) {
	t := &Instruments{
		tracer:     tp.Tracer(ScopeName, trace.WithSchemaURL(SchemaURL)),
		propagator: prop,
		link:       link,
	}
	if fmt.Sprintf("%T", tp) == "*global.tracerProvider" {
		t.globalTP = tp
	}
	if fmt.Sprintf("%T", mp) == "*global.meterProvider" {
		t.globalMP = mp
	}
	m := mp.Meter(ScopeName, metric.WithSchemaURL(SchemaURL))
	t.meter = m
	var err error
	if t.queueMessages, err = m.Int64ObservableGauge(MetricQueueMessages, metric.WithUnit("{message}"),
		metric.WithDescription("Messages ready in a route's queue, as a passive declaration last read them.")); err != nil {
		return nil, err
	}
	if t.queueConsumers, err = m.Int64ObservableGauge(MetricQueueConsumers, metric.WithUnit("{consumer}"),
		metric.WithDescription("Consumers of a route's queue, as a passive declaration last read them.")); err != nil {
		return nil, err
	}
	counters := []struct {
		dst              *metric.Int64Counter
		name, unit, desc string
	}{
		{&t.sent, MetricSentMessages, "{message}", "Number of messages producer attempted to send to the broker."},
		{&t.consumed, MetricConsumedMessages, "{message}", "Number of messages that were delivered to the application."},
		{&t.retries, MetricRetries, "{retry}", "Retries scheduled, in-process or through a delay queue."},
		{&t.deadLetters, MetricDeadLetters, "{message}", "Messages dead-lettered."},
		{&t.reconnects, MetricReconnects, "{reconnect}", "Connections re-established after a loss or refresh."},
		{&t.staleAcks, MetricStaleAcks, "{settlement}", "Settlements dropped because the channel their delivery came on was gone."},
		{&t.poison, MetricPoison, "{message}", "Deliveries that could not be decoded."},
		{&t.scheduledUnroutable, MetricScheduledUnroutable, "{message}", "Scheduled messages no queue took when they were due (kept in warren.delay.unroutable)."},
		{&t.killSwitch, MetricKillSwitch, "{transition}", "Changes of state of a kill switch (to warren.kill_switch.state)."},
	}
	for _, c := range counters {
		var err error
		if *c.dst, err = m.Int64Counter(c.name, metric.WithDescription(c.desc), metric.WithUnit(c.unit)); err != nil {
			return nil, err
		}
	}
	histograms := []struct {
		dst        *metric.Float64Histogram
		name, desc string
		buckets    []float64
	}{
		{&t.opDuration, MetricOperationDuration, "Duration of messaging operation initiated by a producer or consumer client.", DurationBuckets},
		{&t.processDuration, MetricProcessDuration, "Duration of processing operation.", DurationBuckets},
		{&t.restoreDuration, MetricRestoreDuration, "Duration of restoring a connection's topology and consumers after it connected.", RestoreBuckets},
		{&t.blockedDuration, MetricBlockedDuration, "Time a connection spent blocked by the broker (resource alarm).", RestoreBuckets},
	}
	for _, h := range histograms {
		var err error
		if *h.dst, err = m.Float64Histogram(h.name, metric.WithUnit("s"), metric.WithDescription(h.desc),
			metric.WithExplicitBucketBoundaries(h.buckets...)); err != nil {
			return nil, err
		}
	}
	return t, nil
}

// The instruments' names. The first four are the messaging conventions'
// (messaging metrics, v1.44.0); the others are warren's own, under
// "warren." because the conventions name nothing for them.
const (
	MetricOperationDuration = "messaging.client.operation.duration"
	MetricSentMessages      = "messaging.client.sent.messages"
	MetricConsumedMessages  = "messaging.client.consumed.messages"
	MetricProcessDuration   = "messaging.process.duration"
	MetricRetries           = "warren.retries"
	MetricDeadLetters       = "warren.dead_letters"
	MetricReconnects        = "warren.connection.reconnects"
	MetricRestoreDuration   = "warren.connection.restore.duration"
	MetricBlockedDuration   = "warren.connection.blocked.duration"
	MetricStaleAcks         = "warren.consumer.stale_settlements"
	MetricPoison            = "warren.consumer.poison"
	// MetricScheduledUnroutable counts scheduled messages that no queue
	// took when they were due: kept in the delay levels' unroutable queue.
	MetricScheduledUnroutable = "warren.scheduled.unroutable"
	// MetricKillSwitch counts the changes of state of kill switches.
	MetricKillSwitch = "warren.kill_switch.transitions"
	// MetricQueueMessages and MetricQueueConsumers are a route's queue's
	// depth and consumer count (router.Config.QueueMetricsInterval).
	MetricQueueMessages  = "warren.queue.messages"
	MetricQueueConsumers = "warren.queue.consumers"
)

// QueueDepth is what a passive declaration said of a queue.
type QueueDepth struct {
	Queue               string
	Messages, Consumers int64
}

// ObserveQueues reports read's queues on the queue gauges at every
// collection until the returned func is called.
func (t *Instruments) ObserveQueues(read func() []QueueDepth) (stop func(), err error) {
	reg, err := t.meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		for _, q := range read() {
			attrs := metric.WithAttributes(attribute.String("messaging.destination.name", q.Queue))
			o.ObserveInt64(t.queueMessages, q.Messages, attrs)
			o.ObserveInt64(t.queueConsumers, q.Consumers, attrs)
		}
		return nil
	}, t.queueMessages, t.queueConsumers)
	if err != nil {
		return nil, err
	}
	return func() { _ = reg.Unregister() }, nil
}

// Off is the instruments of telemetry.Disabled: nothing recorded, nothing
// written into messages, the per-message work skipped.
func Off() *Instruments {
	t, _ := New(tracenoop.NewTracerProvider(), metricnoop.NewMeterProvider(), propagation.NewCompositeTextMapPropagator(), false)
	t.off = true
	return t
}

// tracing reports whether a span started now could record: not while
// this is built on otel's global delegate and the application has set no
// provider (otel.GetTracerProvider still returns the delegate; once set it
// returns the application's, which the delegate forwards to).
func (t *Instruments) tracing() bool {
	return t.globalTP == nil || otel.GetTracerProvider() != t.globalTP
}

// metering is tracing's counterpart for measurements: false while this
// is built on otel's global meter delegate and the application has set no
// provider (the delegate's instruments forward to the application's once it
// does, and then this is true).
func (t *Instruments) metering() bool {
	return t.globalMP == nil || otel.GetMeterProvider() != t.globalMP
}

// Propagator is the propagator that carries context across the broker.
func (t *Instruments) Propagator() propagation.TextMapPropagator { return t.propagator }

// Tracer is warren's tracer, for spans an application adds under warren's.
func (t *Instruments) Tracer() trace.Tracer { return t.tracer }

// unwrap is package telemetry's: it opens a *telemetry.Telemetry.
var unwrap func(any) *Instruments

// Register is called once by package telemetry's init, so that Of can open
// the *telemetry.Telemetry values the layers carry in their configs.
func Register(f func(any) *Instruments) { unwrap = f }

// Of is the instruments of t, a *telemetry.Telemetry (Off for a nil one).
func Of(t any) *Instruments {
	if t == nil || unwrap == nil {
		return Off()
	}
	if in := unwrap(t); in != nil {
		return in
	}
	return Off()
}
