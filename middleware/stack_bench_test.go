package middleware_test

import (
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"go.opentelemetry.io/otel/metric/noop"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/warrenmq/warren/middleware"
	kit "github.com/warrenmq/warren/middleware/middlewaretest"
)

// BenchmarkStackSuccess is the cost the full stack (Tracing with a no-op
// tracer, Ack, DeadLetter, DelayedRetry, Retry) adds to a message that
// succeeds, against the bare handler in the same run. Goal: under 2µs and
// 20 allocations per message.
//
//	go test -run '^$' -bench StackSuccess -benchmem ./middleware
func BenchmarkStackSuccess(b *testing.B) {
	tel, err := middleware.NewTelemetry(middleware.TelemetryConfig{TracerProvider: tracenoop.NewTracerProvider(), MeterProvider: noop.NewMeterProvider()})
	if err != nil {
		b.Fatal(err)
	}
	delayed, _ := middleware.DelayedRetry(middleware.DelayedRetryConfig{Publisher: &kit.Publisher{}})
	dead, _ := middleware.DeadLetter(middleware.DeadLetterConfig{})
	handler := func(*message.Message) ([]*message.Message, error) { return nil, nil }
	stacked := message.HandlerFunc(handler)
	for _, mw := range []message.HandlerMiddleware{
		kit.Must(middleware.Retry(middleware.RetryConfig{})), delayed, dead,
		kit.Must(middleware.Ack(middleware.AckConfig{})), kit.Must(middleware.Tracing(middleware.TracingConfig{Telemetry: tel})),
	} {
		stacked = mw(stacked)
	}
	for _, bc := range []struct {
		name string
		h    message.HandlerFunc
	}{{"bare", handler}, {"stack", stacked}} {
		b.Run(bc.name, func(b *testing.B) {
			msgs := make([]*message.Message, 1024)
			for i := range msgs {
				msgs[i] = kit.NewMessage("x")
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := bc.h(msgs[i%len(msgs)]); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
