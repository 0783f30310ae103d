package bench

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/warrenmq/warren"
	"github.com/warrenmq/warren/telemetry"
)

// telemetryMessages per round and side.
const telemetryMessages = 5000

// BenchmarkTelemetry is what tracing and metrics cost per message, against
// the same work with telemetry off (telemetry.Disabled()), in interleaved
// rounds (medians): publishing one message at a time with confirms, and
// consuming through a router route's whole stack. "On" is the SDK's tracer
// sampling everything, its spans batched to a no-op exporter, and the SDK's
// meter with a reader: what a service that exports pays, less the export.
//
//	cd bench && go test -run '^$' -bench Telemetry -benchtime 1x
func BenchmarkTelemetry(b *testing.B) {
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(tracetest.NewNoopExporter()))
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	defer tp.Shutdown(context.Background())
	defer mp.Shutdown(context.Background())
	on, err := telemetry.New(telemetry.Config{TracerProvider: tp, MeterProvider: mp})
	if err != nil {
		b.Fatal(err)
	}
	// The same SDK sampling nothing: what a message not sampled costs.
	ntp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.NeverSample())),
		sdktrace.WithBatcher(tracetest.NewNoopExporter()))
	defer ntp.Shutdown(context.Background())
	unsampled, err := telemetry.New(telemetry.Config{TracerProvider: ntp, MeterProvider: mp})
	if err != nil {
		b.Fatal(err)
	}
	off := telemetry.Disabled()
	const rounds = 5
	var pubOn, pubOff, conOn, conOff, pubUnsampled, conUnsampled []time.Duration
	for r := 0; r < rounds; r++ {
		for _, side := range []struct {
			tel      *telemetry.Telemetry
			pub, con *[]time.Duration
		}{{off, &pubOff, &conOff}, {on, &pubOn, &conOn}, {unsampled, &pubUnsampled, &conUnsampled}} {
			url, remove := vhost(b)
			*side.pub = append(*side.pub, publishCPU(b, url, "tel.q", telemetryMessages, side.tel))
			*side.con = append(*side.con, routerConsumeCPUWith(b, url, "tel.q", telemetryMessages, 256, side.tel))
			remove()
		}
	}
	us := func(d time.Duration) float64 { return float64(d.Microseconds()) / telemetryMessages }
	fmt.Printf("%-9s %-40s %10s   %10s   %7s %s\n", "group", "row", "on", "off", "ratio", "added per message")
	for _, row := range []struct {
		name, target string
		bound        float64
		on, off      []time.Duration
	}{
		{"client CPU us/msg, publish (confirmed)", "telemetry sampled, added per publish (us)", 8, pubOn, pubOff},
		{"client CPU us/msg, consume (router)", "telemetry sampled, added per consume (us)", 8, conOn, conOff},
		{"not sampled: publish", "telemetry not sampled, added per publish (us)", 1, pubUnsampled, pubOff},
		{"not sampled: consume (router)", "telemetry not sampled, added per consume (us)", 1, conUnsampled, conOff},
	} {
		onUS, offUS := us(median(row.on)), us(median(row.off))
		fmt.Printf("%-9s %-40s %10.2fus %10.2fus %7.2f %+.2f us\n", "telemetry", row.name, onUS, offUS, onUS/offUS, onUS-offUS)
		fmt.Printf("TARGET name=%q value=%.2f bound=%.0f met=%t\n", row.target, onUS-offUS, row.bound, onUS-offUS <= row.bound)
	}
}

// publishCPU publishes n messages one call at a time (each waits for its
// confirm) and returns the CPU time spent.
func publishCPU(b *testing.B, url, q string, n int, tel *telemetry.Telemetry) time.Duration {
	fillQueue(b, url, q, 0) // declared as the route declares it
	c := openWarrenAt(b, url)
	defer c.Close(context.Background())
	pub, err := warren.NewPublisher(c, warren.PublisherConfig{Mapping: warren.ExistingQueues{}, Telemetry: tel})
	if err != nil {
		b.Fatal(err)
	}
	defer pub.Close()
	_, cpu := measure(func() {
		for i := 0; i < n; i++ {
			if err := pub.Publish(q, message.NewMessage(watermill.NewUUID(), body)); err != nil {
				b.Fatal(err)
			}
		}
	})
	return cpu
}
