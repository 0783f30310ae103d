package telemetry

import (
	"sync"

	"github.com/warrenmq/warren/internal/configerr"

	"go.opentelemetry.io/otel"
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

// Relation is how a process span relates to the span that sent its
// message.
type Relation int

const (
	// Parent makes the send span (the message's creation context) the
	// parent of the process span: publish, every attempt, every retry and
	// the dead-letter are one trace, which a trace viewer shows as a tree.
	// The cost: a trace stays open as long as its messages travel (a
	// delayed retry of minutes is a trace of minutes), and a message fanned
	// out to many queues makes one wide trace. The default.
	Parent Relation = iota
	// Link starts a new trace for each process span and links it to the
	// send span, as the messaging conventions advise when processing
	// happens within another span's scope. Traces stay short and bounded;
	// following a message across services means following links.
	Link
)

func (r Relation) String() string {
	if r == Link {
		return "link"
	}
	return "parent"
}

// Config chooses the OpenTelemetry providers and how spans relate. Zero
// fields use the otel globals.
type Config struct {
	TracerProvider trace.TracerProvider
	MeterProvider  metric.MeterProvider
	// Propagator carries trace context and baggage across the broker, in
	// AMQP headers. Default: W3C trace context and baggage.
	Propagator propagation.TextMapPropagator
	// Process is how a process span relates to its send span. Default:
	// Parent.
	Process Relation
}

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

// Telemetry is the tracer, propagator and instruments of one configuration,
// shared by a connection, its publishers and subscribers, the router and
// the middleware. Safe for concurrent use.
type Telemetry struct {
	tracer     trace.Tracer
	propagator propagation.TextMapPropagator
	relation   Relation
	// off: Disabled; the per-message work is skipped, not done for nothing.
	off bool

	sent, consumed                   metric.Int64Counter
	opDuration, processDuration      metric.Float64Histogram
	retries, deadLetters             metric.Int64Counter
	reconnects, staleAcks, poison    metric.Int64Counter
	scheduledUnroutable              metric.Int64Counter
	restoreDuration, blockedDuration metric.Float64Histogram

	dests destinations
}

// New builds a Telemetry: the instruments are listed in the package
// documentation.
func New(cfg Config) (*Telemetry, error) {
	if cfg.TracerProvider == nil {
		cfg.TracerProvider = otel.GetTracerProvider()
	}
	if cfg.MeterProvider == nil {
		cfg.MeterProvider = otel.GetMeterProvider()
	}
	if cfg.Propagator == nil {
		cfg.Propagator = propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
	}
	if cfg.Process != Parent && cfg.Process != Link {
		return nil, &configerr.Error{Field: "telemetry.Config.Process", Reason: "must be Parent or Link"}
	}
	t := &Telemetry{
		tracer:     cfg.TracerProvider.Tracer(ScopeName, trace.WithSchemaURL(SchemaURL)),
		propagator: cfg.Propagator,
		relation:   cfg.Process,
	}
	m := cfg.MeterProvider.Meter(ScopeName, metric.WithSchemaURL(SchemaURL))
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
)

var (
	defaultOnce sync.Once
	defaultTel  *Telemetry
)

// Default is Telemetry on the otel global providers (which do nothing until
// the application sets them), made once. It is what every warren component
// uses unless told otherwise.
func Default() *Telemetry {
	defaultOnce.Do(func() {
		t, err := New(Config{})
		if err != nil {
			// New fails only on an invalid Config; the zero one is valid.
			t = Disabled()
		}
		defaultTel = t
	})
	return defaultTel
}

// Disabled is Telemetry that records nothing: no spans, no metrics, no
// trace context written into messages.
func Disabled() *Telemetry {
	t, _ := New(Config{TracerProvider: tracenoop.NewTracerProvider(), MeterProvider: metricnoop.NewMeterProvider(),
		Propagator: propagation.NewCompositeTextMapPropagator()})
	t.off = true
	return t
}

// Relation is how this Telemetry's process spans relate to send spans.
func (t *Telemetry) Relation() Relation { return t.relation }

// Propagator is the propagator that carries context across the broker.
func (t *Telemetry) Propagator() propagation.TextMapPropagator { return t.propagator }

// Tracer is warren's tracer, for spans an application adds under warren's.
func (t *Telemetry) Tracer() trace.Tracer { return t.tracer }
