// Tracing: one trace from an HTTP-like request through a publish, a failed
// attempt, an in-process retry, a delayed retry through a delay queue, and
// a dead letter (a copy published to the dead-letter queue), printed as
// the tree a trace viewer shows. Every failed attempt is an exception event
// on its process span, every retry a span, every failure status Error.
//
// Telemetry is configuration: the connection's telemetry.Config (or a
// router's, publisher's or subscriber's) names the providers, and every
// publish and delivery on it is traced. With telemetry.Parent (the default)
// each process span is a child of the send span whose context its message
// carries in its AMQP headers, so the whole flow is one trace; with
// telemetry.Link each process span starts a trace of its own, linked to the
// send span.
package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"sort"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/conn"
	"github.com/warrenmq/warren/examples"
	"github.com/warrenmq/warren/middleware"
	"github.com/warrenmq/warren/retry"
	"github.com/warrenmq/warren/router"
	"github.com/warrenmq/warren/telemetry"
	"github.com/warrenmq/warren/topology"
)

func main() {
	ctx, cancel := examples.Context(20 * time.Second)
	defer cancel()
	spans := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(spans))
	defer tp.Shutdown(context.Background())
	tel, err := telemetry.New(telemetry.Config{TracerProvider: tp, Process: telemetry.Parent})
	if err != nil {
		log.Fatal(err)
	}
	c, err := conn.New(examples.URL(), conn.Config{Telemetry: tel})
	if err != nil {
		log.Fatal(err)
	}
	if err := c.Open(ctx); err != nil {
		log.Fatal(err)
	}
	defer c.Close(context.Background())
	r, err := router.New(c, router.Config{}) // the connection's telemetry
	if err != nil {
		log.Fatal(err)
	}
	const q = "example.tracing"
	err = r.AddRoute(router.Route{
		Name: "traced", Queue: topology.QueueSpec{Name: q, Durable: true},
		Retry:        router.RetrySettings{RetryConfig: middleware.RetryConfig{MaxAttempts: 2, Backoff: retry.Backoff{InitialInterval: 10 * time.Millisecond}}},
		DelayedRetry: router.DelayedRetrySettings{Levels: []time.Duration{time.Second}},
		Handler: func(m *message.Message) error {
			return errors.New("payment service unavailable")
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
	reqCtx, request := tp.Tracer("example").Start(ctx, "POST /orders")
	msg := message.NewMessage("order-1", []byte(`{"id":1}`))
	msg.SetContext(reqCtx)
	if err := r.Publisher().Publish(q, msg); err != nil {
		log.Fatal(err)
	}
	request.End()
	// The dead letter (a copy published to the dead-letter queue, with the
	// error in its headers) is the last step.
	if err := waitFor(ctx, func() bool { return hasSpan(spans.GetSpans(), "send "+q+".dlq") }); err != nil {
		printTree(spans.GetSpans())
		log.Fatal("never dead-lettered: ", err)
	}
	if err := r.Close(ctx); err != nil { // drains: the last spans end before it returns
		log.Fatal(err)
	}
	if err := <-runErr; err != nil {
		log.Fatal(err)
	}
	got := spans.GetSpans()
	fmt.Printf("trace %s: %d spans, %d trace(s)\n", request.SpanContext().TraceID(), len(got), traces(got))
	printTree(got)
	ops := r.Ops()
	for _, name := range []string{q, q + ".dlq"} {
		_, _ = ops.DeleteQueue(ctx, name, broker.DeleteOptions{})
	}
}

func hasSpan(spans tracetest.SpanStubs, name string) bool {
	for _, s := range spans {
		if s.Name == name {
			return true
		}
	}
	return false
}

func traces(spans tracetest.SpanStubs) int {
	ids := map[string]bool{}
	for _, s := range spans {
		ids[s.SpanContext.TraceID().String()] = true
	}
	return len(ids)
}

func waitFor(ctx context.Context, cond func() bool) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}

// printTree prints spans as a tree under their parents, in start order:
// kind, status, and the exception events of failed attempts.
func printTree(spans tracetest.SpanStubs) {
	children := map[string][]tracetest.SpanStub{}
	ids := map[string]bool{}
	for _, s := range spans {
		ids[s.SpanContext.SpanID().String()] = true
	}
	var roots []tracetest.SpanStub
	for _, s := range spans {
		p := s.Parent.SpanID().String()
		if s.Parent.IsValid() && ids[p] {
			children[p] = append(children[p], s)
		} else {
			roots = append(roots, s)
		}
	}
	var walk func(s tracetest.SpanStub, indent string)
	walk = func(s tracetest.SpanStub, indent string) {
		line := fmt.Sprintf("%s%s [%s]", indent, s.Name, strings.ToLower(s.SpanKind.String()))
		if s.Status.Code.String() == "Error" {
			line += " ERROR: " + s.Status.Description
		}
		fmt.Println(line)
		for _, e := range s.Events {
			if e.Name == "exception" {
				fmt.Printf("%s  ! exception", indent)
				for _, a := range e.Attributes {
					if a.Key == "warren.attempt" {
						fmt.Printf(" (attempt %s)", a.Value.String())
					}
				}
				fmt.Println()
			}
		}
		kids := children[s.SpanContext.SpanID().String()]
		sort.Slice(kids, func(i, j int) bool { return kids[i].StartTime.Before(kids[j].StartTime) })
		for _, k := range kids {
			walk(k, indent+"  ")
		}
	}
	sort.Slice(roots, func(i, j int) bool { return roots[i].StartTime.Before(roots[j].StartTime) })
	for _, r := range roots {
		walk(r, "")
	}
}
