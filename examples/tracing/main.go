// Tracing: one trace from publish through a delayed retry to process,
// printed by OpenTelemetry's stdout exporter.
package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/warrenmq/warren"
	"github.com/warrenmq/warren/conn"
	"github.com/warrenmq/warren/examples"
	"github.com/warrenmq/warren/middleware"
	"github.com/warrenmq/warren/router"
	"github.com/warrenmq/warren/topology"
)

func main() {
	ctx, cancel := examples.Context(time.Minute)
	defer cancel()
	exp, err := stdouttrace.New(stdouttrace.WithWriter(os.Stdout))
	if err != nil {
		log.Fatal(err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	defer tp.Shutdown(context.Background())
	tel, err := middleware.NewTelemetry(middleware.TelemetryConfig{TracerProvider: tp})
	if err != nil {
		log.Fatal(err)
	}
	c, err := conn.New(examples.URL(), conn.Config{})
	if err != nil {
		log.Fatal(err)
	}
	if err := c.Open(ctx); err != nil {
		log.Fatal(err)
	}
	r, err := router.New(c, router.Config{Telemetry: tel, Output: warren.PublisherConfig{Mapping: warren.ExistingQueues{}}})
	if err != nil {
		log.Fatal(err)
	}
	const q = "example.tracing"
	var calls atomic.Int32
	done := make(chan struct{})
	err = r.AddRoute(router.Route{
		Name: "traced", Queue: topology.QueueSpec{Name: q, Durable: true},
		Retry:        router.RetrySettings{Disabled: true},
		DelayedRetry: router.DelayedRetrySettings{Levels: []time.Duration{time.Second}},
		Handler: func(m *message.Message) error {
			if calls.Add(1) == 1 {
				return errors.New("first attempt fails: goes through the delay queue")
			}
			close(done)
			return nil
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	runErr := make(chan error, 1)
	go func() { runErr <- r.Run(ctx) }()
	if err := r.WaitRunning(ctx); err != nil {
		log.Fatal(err)
	}
	reqCtx, span := tp.Tracer("example").Start(ctx, "http request")
	msg := message.NewMessage("traced-1", []byte("{}"))
	msg.SetContext(reqCtx)
	if err := r.Publisher().Publish(q, msg); err != nil {
		log.Fatal(err)
	}
	span.End()
	select {
	case <-done:
	case <-ctx.Done():
		log.Fatal("never processed")
	}
	fmt.Printf("# trace %s: send, a failed process, a delayed retry, a successful process (both linked to the send)\n", span.SpanContext().TraceID())
	ops := r.Ops()
	for _, name := range []string{q, q + ".dlq"} {
		_, _ = ops.DeleteQueue(ctx, name, topology.DeleteOptions{})
	}
	if err := r.Close(ctx); err != nil { // drains: the last span ends before it returns
		log.Fatal(err)
	}
	if err := <-runErr; err != nil {
		log.Fatal(err)
	}
	_ = c.Close(ctx)
}
