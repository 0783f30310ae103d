package telemetry

import (
	"sync"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/warrenmq/warren/internal/configerr"
	"github.com/warrenmq/warren/internal/instrument"
)

// ScopeName names warren's tracer and meter (the instrumentation scope).
const ScopeName = instrument.ScopeName

// SchemaURL is the semantic conventions schema warren's telemetry follows.
// The Go SDK ships the v1.43.0 schema; the RabbitMQ messaging conventions
// warren follows did not change between v1.43.0 and v1.44.0.
const SchemaURL = instrument.SchemaURL

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

// The instruments' names. The first four are the messaging conventions'
// (messaging metrics, v1.44.0); the others are warren's own, under
// "warren." because the conventions name nothing for them.
const (
	MetricOperationDuration   = instrument.MetricOperationDuration
	MetricSentMessages        = instrument.MetricSentMessages
	MetricConsumedMessages    = instrument.MetricConsumedMessages
	MetricProcessDuration     = instrument.MetricProcessDuration
	MetricRetries             = instrument.MetricRetries
	MetricDeadLetters         = instrument.MetricDeadLetters
	MetricReconnects          = instrument.MetricReconnects
	MetricRestoreDuration     = instrument.MetricRestoreDuration
	MetricBlockedDuration     = instrument.MetricBlockedDuration
	MetricStaleAcks           = instrument.MetricStaleAcks
	MetricPoison              = instrument.MetricPoison
	MetricScheduledUnroutable = instrument.MetricScheduledUnroutable
	MetricKillSwitch          = instrument.MetricKillSwitch
	MetricQueueMessages       = instrument.MetricQueueMessages
	MetricQueueConsumers      = instrument.MetricQueueConsumers
)

// Telemetry is the tracer, propagator and instruments of one configuration,
// given to a connection (conn.Config.Telemetry) and used by everything on
// it: its publishers and subscribers, the router and the middleware. Safe
// for concurrent use.
type Telemetry struct {
	in *instrument.Instruments
}

func init() {
	instrument.Register(func(v any) *instrument.Instruments {
		if t, ok := v.(*Telemetry); ok && t != nil {
			return t.in
		}
		return nil
	})
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
	in, err := instrument.New(cfg.TracerProvider, cfg.MeterProvider, cfg.Propagator, cfg.Process == Link)
	if err != nil {
		return nil, err
	}
	return &Telemetry{in: in}, nil
}

var (
	defaultOnce sync.Once
	defaultTel  *Telemetry
)

// Default is Telemetry on the otel global providers (which do nothing until
// the application sets them), made once. It is what every warren component
// uses unless told otherwise. Until the application sets a tracer provider
// no span is started (trace context and baggage still pass through), and
// until it sets a meter provider no measurement is taken; from then on,
// spans record and measurements reach the provider.
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
func Disabled() *Telemetry { return &Telemetry{in: instrument.Off()} }
