// Package telemetrytest records warren's telemetry in memory, for tests:
// the SDK's in-memory span exporter and a manual metric reader behind a
// telemetry.Telemetry.
package telemetrytest

import (
	"context"
	"sync"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/warrenmq/warren/telemetry"
)

// Recorder is telemetry recorded in memory.
type Recorder struct {
	Telemetry *telemetry.Telemetry
	Exporter  *tracetest.InMemoryExporter
	Reader    *sdkmetric.ManualReader
	Provider  *sdktrace.TracerProvider

	starts *startRecorder
}

// startRecorder keeps each span's attributes as they were when it started:
// the ones a sampler sees.
type startRecorder struct {
	mu    sync.Mutex
	attrs map[trace.SpanID][]attribute.KeyValue
}

func (r *startRecorder) OnStart(_ context.Context, s sdktrace.ReadWriteSpan) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.attrs[s.SpanContext().SpanID()] = s.Attributes()
}
func (r *startRecorder) OnEnd(sdktrace.ReadOnlySpan)      {}
func (r *startRecorder) Shutdown(context.Context) error   { return nil }
func (r *startRecorder) ForceFlush(context.Context) error { return nil }

// StartAttributes are the attributes span had when it started.
func (r *Recorder) StartAttributes(span trace.SpanID) []attribute.KeyValue {
	r.starts.mu.Lock()
	defer r.starts.mu.Unlock()
	return r.starts.attrs[span]
}

// New returns a Recorder; cfg's providers are replaced by in-memory ones
// (its Propagator and Process are kept). The providers shut down with t.
func New(t testing.TB, cfg telemetry.Config) *Recorder {
	t.Helper()
	exp := tracetest.NewInMemoryExporter()
	starts := &startRecorder{attrs: map[trace.SpanID][]attribute.KeyValue{}}
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(starts), sdktrace.WithSyncer(exp))
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	cfg.TracerProvider, cfg.MeterProvider = tp, mp
	tel, err := telemetry.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = tp.Shutdown(context.Background())
		_ = mp.Shutdown(context.Background())
	})
	return &Recorder{Telemetry: tel, Exporter: exp, Reader: reader, Provider: tp, starts: starts}
}

// Spans returns the spans ended so far.
func (r *Recorder) Spans() tracetest.SpanStubs { return r.Exporter.GetSpans() }

// Metrics collects the metrics recorded so far.
func (r *Recorder) Metrics(t testing.TB) []metricdata.Metrics {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := r.Reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	var out []metricdata.Metrics
	for _, sm := range rm.ScopeMetrics {
		out = append(out, sm.Metrics...)
	}
	return out
}

// Counter returns the sum of an Int64 counter over all attribute sets.
func (r *Recorder) Counter(t testing.TB, name string) int64 {
	t.Helper()
	var total int64
	for _, m := range r.Metrics(t) {
		if m.Name != name {
			continue
		}
		if sum, ok := m.Data.(metricdata.Sum[int64]); ok {
			for _, dp := range sum.DataPoints {
				total += dp.Value
			}
		}
	}
	return total
}

// Metric returns the metric named name, false when nothing was recorded.
func (r *Recorder) Metric(t testing.TB, name string) (metricdata.Metrics, bool) {
	t.Helper()
	for _, m := range r.Metrics(t) {
		if m.Name == name {
			return m, true
		}
	}
	return metricdata.Metrics{}, false
}

// HistogramCount returns how many values a float64 histogram recorded,
// over all attribute sets.
func (r *Recorder) HistogramCount(t testing.TB, name string) uint64 {
	t.Helper()
	m, _ := r.Metric(t, name)
	var n uint64
	if h, ok := m.Data.(metricdata.Histogram[float64]); ok {
		for _, dp := range h.DataPoints {
			n += dp.Count
		}
	}
	return n
}
