package instrument

import (
	"context"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
)

// benchInstruments are the kinds of provider the benchmarks compare, by
// name; the SDK's are shut down with b.
func benchInstruments(b *testing.B) map[string]*Instruments {
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	b.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	prop := propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
	sampled := sdktrace.NewTracerProvider(sdktrace.WithBatcher(tracetest.NewNoopExporter()))
	b.Cleanup(func() { _ = sampled.Shutdown(context.Background()) })
	unsampled := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.NeverSample())))
	b.Cleanup(func() { _ = unsampled.Shutdown(context.Background()) })
	noopSDKMetrics, _ := New(tracenoop.NewTracerProvider(), mp, prop, false)
	noopAll, _ := New(tracenoop.NewTracerProvider(), metricnoop.NewMeterProvider(), prop, false)
	on, _ := New(sampled, mp, prop, false)
	off, _ := New(unsampled, mp, prop, false)
	global, _ := New(otel.GetTracerProvider(), otel.GetMeterProvider(), prop, false)
	return map[string]*Instruments{"disabled": Off(), "otel globals, none set (Default)": global, "noop providers": noopAll,
		"SDK metrics only": noopSDKMetrics, "SDK not sampled": off, "SDK sampled": on}
}

// BenchmarkProcess is what telemetry costs one consumed message without a
// broker: its process span, its settle and its metrics, for each kind of
// provider (the bench module measures the same through the broker), with a
// subscription's Memo and without one (the shared cache alone).
//
//	go test -run '^$' -bench . -benchmem ./internal/instrument
func BenchmarkProcess(b *testing.B) {
	for name, t := range benchInstruments(b) {
		for _, memo := range []*Memo{new(Memo), nil} {
			in := Incoming{Destination: Destination{Queue: "orders"}, MessageID: "m-1", DeliveryTag: 7, Headers: map[string]any{}, BodySize: 256, Memo: memo}
			b.Run(name+memoName(memo), func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					_, p := t.StartProcess(context.Background(), Peer{Address: "localhost", Port: 5672}, in)
					p.Settle(Ack, nil, time.Now())
				}
			})
		}
	}
}

func memoName(m *Memo) string {
	if m == nil {
		return ", shared cache"
	}
	return ", memo"
}

// BenchmarkSend is the same for one published message: its send span, the
// trace context written into its headers, and its metrics.
func BenchmarkSend(b *testing.B) {
	dest := Destination{Exchange: "orders", RoutingKey: "created"}
	for name, t := range benchInstruments(b) {
		for _, memo := range []*Memo{new(Memo), nil} {
			b.Run(name+memoName(memo), func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					var h map[string]any // a message without headers, as most are
					msgs := []Outgoing{{Ctx: context.Background(), MessageID: "m-1", Headers: &h, BodySize: 256}}
					t.StartSend(context.Background(), Peer{Address: "localhost", Port: 5672}, dest, msgs, memo).End(nil)
				}
			})
		}
	}
}
