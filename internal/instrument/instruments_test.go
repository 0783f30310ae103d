package instrument

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
)

// TestDisabledRecordsNothing: Off (telemetry.Disabled) writes no trace context into
// messages, starts no process, and its nil Process and empty Send take
// every call.
func TestDisabledRecordsNothing(t *testing.T) {
	off := Off()
	var headers map[string]any
	send := off.StartSend(context.Background(), Peer{}, Destination{RoutingKey: "q"}, []Outgoing{{Ctx: context.Background(), Headers: &headers}}, nil)
	send.Fail(0, errors.New("x"))
	send.End(nil)
	if headers != nil {
		t.Fatalf("Disabled wrote headers %v", headers)
	}
	ctx := context.Background()
	got, p := off.StartProcess(ctx, Peer{}, Incoming{Destination: Destination{Queue: "q"}, Headers: map[string]any{"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}})
	if p != nil || got != ctx || FromContext(got) != nil {
		t.Fatal("Disabled started a process")
	}
	p.Fail(errors.New("x"), 1)
	p.End(errors.New("x"))
	p.Settle(Ack, nil, send.start)
	RecordFailure(got, errors.New("x"), 1)
}

// TestNothingSetMakesNoProcess: built on both of otel's global delegates
// before the application sets a provider (telemetry.Default), a message
// gets no Process and allocates nothing for its telemetry, as a publish
// gets no Send; the sender's trace context still passes through to what
// the handler publishes. (The tests after this one set the providers,
// which cannot be unset: it runs first. Once a provider is set, messages
// get a Process: TestGlobalDelegateUnsetStartsNoSpan and
// TestGlobalMeterDelegateUnsetMeasuresNothing.)
func TestNothingSetMakesNoProcess(t *testing.T) {
	in, err := New(otel.GetTracerProvider(), otel.GetMeterProvider(), propagation.TraceContext{}, false)
	if err != nil {
		t.Fatal(err)
	}
	if in.globalTP == nil || in.globalMP == nil {
		t.Fatalf("%T or %T is not recognised as otel's global delegate", otel.GetTracerProvider(), otel.GetMeterProvider())
	}
	plain := Incoming{Destination: Destination{Queue: "q"}, MessageID: "m-1", DeliveryTag: 7, Headers: map[string]any{}, BodySize: 256}
	if got := testing.AllocsPerRun(200, func() {
		_, p := in.StartProcess(context.Background(), Peer{}, plain)
		p.Settle(Ack, nil, time.Now())
		p.End(nil)
	}); got != 0 {
		t.Errorf("%v allocations per message with no provider set, want 0", got)
	}

	const parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	ctx, p := in.StartProcess(context.Background(), Peer{}, Incoming{Destination: Destination{Queue: "q"}, Headers: map[string]any{"traceparent": parent}})
	if p != nil || FromContext(ctx) != nil {
		t.Fatal("a Process made with no provider set")
	}
	if got := trace.SpanContextFromContext(ctx).TraceID().String(); got != "0af7651916cd43dd8448eb211c80319c" {
		t.Fatalf("the sender's trace did not pass through: %q", got)
	}
	var headers map[string]any
	send := in.StartSend(context.Background(), Peer{}, Destination{RoutingKey: "q"}, []Outgoing{{Ctx: ctx, Headers: &headers}}, nil)
	send.End(nil)
	if headers["traceparent"] == nil {
		t.Fatal("a publish from the handler lost the trace context")
	}
}

// TestGlobalDelegateUnsetStartsNoSpan: built on otel's global provider
// before the application sets one (telemetry.Default), a message starts no
// span, yet the sender's trace context passes through to the handler's
// context; once the application sets a provider, spans record.
func TestGlobalDelegateUnsetStartsNoSpan(t *testing.T) {
	in, err := New(otel.GetTracerProvider(), metricnoop.NewMeterProvider(), propagation.TraceContext{}, false)
	if err != nil {
		t.Fatal(err)
	}
	if in.globalTP == nil {
		t.Fatalf("%T is not recognised as otel's global delegate", otel.GetTracerProvider())
	}
	const parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	ctx, p := in.StartProcess(context.Background(), Peer{}, Incoming{Destination: Destination{Queue: "q"}, Headers: map[string]any{"traceparent": parent}})
	if p == nil || p.recording {
		t.Fatal("no process, or a recording one, before a provider is set")
	}
	if got := trace.SpanContextFromContext(ctx).TraceID().String(); got != "0af7651916cd43dd8448eb211c80319c" {
		t.Fatalf("the sender's trace did not pass through: %q", got)
	}
	p.Settle(Ack, nil, time.Now())
	var headers map[string]any
	send := in.StartSend(context.Background(), Peer{}, Destination{RoutingKey: "q"}, []Outgoing{{Ctx: ctx, Headers: &headers}}, nil)
	send.End(nil)
	if headers["traceparent"] == nil {
		t.Fatal("a publish from the handler lost the trace context")
	}

	rec := tracetest.NewSpanRecorder()
	otel.SetTracerProvider(sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec)))
	defer otel.SetTracerProvider(tracenoop.NewTracerProvider())
	_, p = in.StartProcess(context.Background(), Peer{}, Incoming{Destination: Destination{Queue: "q"}})
	if p == nil || !p.recording {
		t.Fatal("the process span does not record once a provider is set")
	}
	p.Settle(Ack, nil, time.Now())
	if n := len(rec.Ended()); n != 2 {
		t.Fatalf("%d spans ended, want the process and the settle span", n)
	}
}

// TestProcessAllocations: what one consumed message allocates for its
// telemetry, counted (not timed): nothing when disabled; with providers
// that record nothing, the Process (which is the message's context too)
// and the context the tracer puts its span in. A context or an option list
// made per message shows here first.
func TestProcessAllocations(t *testing.T) {
	noop, err := New(tracenoop.NewTracerProvider(), metricnoop.NewMeterProvider(), propagation.TraceContext{}, false)
	if err != nil {
		t.Fatal(err)
	}
	in := Incoming{Destination: Destination{Queue: "orders"}, MessageID: "m-1", DeliveryTag: 7, Headers: map[string]any{}, BodySize: 256}
	for _, c := range []struct {
		name string
		t    *Instruments
		max  float64
	}{{"disabled", Off(), 0}, {"noop providers", noop, 2}} {
		got := testing.AllocsPerRun(200, func() {
			_, p := c.t.StartProcess(context.Background(), Peer{Address: "localhost", Port: 5672}, in)
			p.Settle(Ack, nil, time.Now())
		})
		if got > c.max {
			t.Errorf("%s: %v allocations per message, want at most %v", c.name, got, c.max)
		}
	}
}

// TestGlobalMeterDelegateUnsetMeasuresNothing: built on otel's global
// meter provider before the application sets one (telemetry.Default), a
// message takes no measurement (it would go nowhere): no clock read for it,
// no recording. Once the application sets a provider, the same instruments
// measure, and the measurements reach it.
func TestGlobalMeterDelegateUnsetMeasuresNothing(t *testing.T) {
	in, err := New(tracenoop.NewTracerProvider(), otel.GetMeterProvider(), propagation.TraceContext{}, false)
	if err != nil {
		t.Fatal(err)
	}
	if in.globalMP == nil {
		t.Fatalf("%T is not recognised as otel's global delegate", otel.GetMeterProvider())
	}
	message := func() (*Process, *Send) {
		_, p := in.StartProcess(context.Background(), Peer{}, Incoming{Destination: Destination{Queue: "q"}, Headers: map[string]any{}})
		p.Settle(Ack, nil, time.Now())
		var headers map[string]any
		s := in.StartSend(context.Background(), Peer{}, Destination{RoutingKey: "q"}, []Outgoing{{Ctx: context.Background(), Headers: &headers}}, nil)
		s.End(nil)
		return p, s
	}
	if p, s := message(); !p.quiet || !p.start.IsZero() || !s.quiet {
		t.Fatal("a message measured with no meter provider set")
	}

	reader := sdkmetric.NewManualReader()
	otel.SetMeterProvider(sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)))
	defer otel.SetMeterProvider(metricnoop.NewMeterProvider())
	if p, s := message(); p.quiet || s.quiet {
		t.Fatal("a message took no measurement once a meter provider was set")
	}
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	got := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				for _, dp := range d.DataPoints {
					got[m.Name] += dp.Value
				}
			case metricdata.Histogram[float64]:
				for _, dp := range d.DataPoints {
					got[m.Name] += int64(dp.Count)
				}
			}
		}
	}
	want := map[string]int64{MetricConsumedMessages: 1, MetricSentMessages: 1, MetricProcessDuration: 1, MetricOperationDuration: 2}
	for name, n := range want {
		if got[name] != n {
			t.Errorf("%s: %d after the provider was set, want %d (all: %v)", name, got[name], n, got)
		}
	}
}
