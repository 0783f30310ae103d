package tests

import (
	"context"
	"errors"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	amqp "github.com/rabbitmq/amqp091-go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/warrenmq/warren"
	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/conn"
	"github.com/warrenmq/warren/internal/instrument"
	"github.com/warrenmq/warren/internal/rabbittest"
	"github.com/warrenmq/warren/middleware"
	"github.com/warrenmq/warren/retry"
	"github.com/warrenmq/warren/router"
	"github.com/warrenmq/warren/telemetry"
	"github.com/warrenmq/warren/telemetry/telemetrytest"
	"github.com/warrenmq/warren/topology"
)

// spanConvention is what the messaging semantic conventions v1.44.0 ask of
// one kind of span (docs/messaging/rabbitmq.md: "Send span (producer)",
// "Process span", "Settle span"; docs/messaging/messaging-spans.md: "Batch
// publishing with Create spans", "Span name").
type spanConvention struct {
	operation string // messaging.operation.name
	kind      trace.SpanKind
	// attributes: Required, and Conditionally Required or Recommended where
	// they apply, with their values ("*": any non-empty value).
	attributes map[string]string
	// atStart: the attributes the conventions say SHOULD be provided at
	// span creation time (for sampling).
	atStart []string
	// absent: attributes that must not be there.
	absent []string
}

var samplingAttributes = []string{"messaging.destination.name", "messaging.operation.name", "messaging.operation.type",
	"messaging.system", "server.address", "server.port"}

// metricConvention is one metric of docs/messaging/messaging-metrics.md
// (v1.44.0), or one of warren's own.
type metricConvention struct {
	name, unit string
	histogram  bool
	bounds     []float64
	// keys: the attribute keys of every data point (error.type only on
	// failures, checked separately).
	keys []string
}

var metricConventions = []metricConvention{
	// "Metric: messaging.client.operation.duration": ExplicitBucketBoundaries
	// [0.005 ... 10]; messaging.operation.name, messaging.system (Required),
	// messaging.destination.name iff low cardinality else the template,
	// messaging.operation.type, server.address, server.port;
	// messaging.consumer.group.name where applicable (settle).
	{name: telemetry.MetricOperationDuration, unit: "s", histogram: true, bounds: instrument.DurationBuckets},
	// "Metric: messaging.client.sent.messages": a counter of {message}.
	{name: telemetry.MetricSentMessages, unit: "{message}", keys: []string{"messaging.destination.template", "messaging.operation.name",
		"messaging.system", "server.address", "server.port"}},
	// "Metric: messaging.client.consumed.messages".
	{name: telemetry.MetricConsumedMessages, unit: "{message}", keys: []string{"messaging.consumer.group.name", "messaging.destination.template",
		"messaging.operation.name", "messaging.system", "server.address", "server.port"}},
	// "Metric: messaging.process.duration": the same buckets.
	{name: telemetry.MetricProcessDuration, unit: "s", histogram: true, bounds: instrument.DurationBuckets, keys: []string{
		"messaging.consumer.group.name", "messaging.destination.template", "messaging.operation.name", "messaging.operation.type",
		"messaging.system", "server.address", "server.port"}},
}

// telemetryShop is a recorded connection with a Publisher and a Subscriber
// on a topic exchange ("shop"), and the queue of its topic "order.paid"
// declared; both are closed with t.
func telemetryShop(t *testing.T) (b *rabbittest.Broker, rec *telemetrytest.Recorder, exchange, queue string, pub *warren.Publisher, sub *warren.Subscriber) {
	t.Helper()
	b = rabbittest.Shared(t)
	rec = telemetrytest.New(t, telemetry.Config{})
	c := rabbittest.OpenConn(t, b.URL, conn.Config{Telemetry: rec.Telemetry})
	exchange, queue = b.Name("shop"), b.Name("order.paid")
	mapping := warren.TopicExchange{Exchange: exchange, Prefix: b.Prefix, Transient: true}
	pub, err := warren.NewPublisher(c, warren.PublisherConfig{Mapping: mapping})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pub.Close() })
	sub, err = warren.NewSubscriber(c, warren.SubscriberConfig{Mapping: mapping})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Close() })
	if err := sub.SubscribeInitialize("order.paid"); err != nil {
		t.Fatal(err)
	}
	return b, rec, exchange, queue, pub, sub
}

// TestTelemetryFollowsTheMessagingConventions publishes one message and a
// batch of three through a topic exchange, consumes them, and checks every
// span and metric against the conventions' tables.
func TestTelemetryFollowsTheMessagingConventions(t *testing.T) {
	_, rec, exchange, queue, pub, sub := telemetryShop(t)
	ctx := ctxT(t, 30*time.Second)
	var handled atomic.Int32
	if err := sub.SubscribeFunc(ctx, "order.paid", func(*message.Message) error { handled.Add(1); return nil }); err != nil {
		t.Fatal(err)
	}
	one := message.NewMessage("m-1", []byte("1"))
	one.Metadata.Set("amqp.correlation_id", "conversation-1")
	if err := pub.Publish("order.paid", one); err != nil {
		t.Fatal(err)
	}
	batch := []*message.Message{message.NewMessage("m-2", nil), message.NewMessage("m-3", nil), message.NewMessage("m-4", nil)}
	if err := pub.Publish("order.paid", batch...); err != nil {
		t.Fatal(err)
	}
	spans := waitSpans(t, rec, func(s tracetest.SpanStubs) bool { return count(s, "ack "+exchange+":"+queue) == 4 })

	sendName, consumeName := exchange+":order.paid", exchange+":order.paid:"+queue
	server := map[string]string{"server.address": "127.0.0.1", "server.port": "5672", "messaging.client.id": "*"}
	with := func(m map[string]string) map[string]string {
		out := map[string]string{"messaging.system": "rabbitmq"}
		for k, v := range server {
			out[k] = v
		}
		for k, v := range m {
			out[k] = v
		}
		return out
	}
	conventions := map[string]spanConvention{
		"send " + exchange: {operation: "send", kind: trace.SpanKindProducer, atStart: samplingAttributes, attributes: with(map[string]string{
			"messaging.operation.name": "send", "messaging.operation.type": "send", "messaging.destination.name": sendName,
			"messaging.destination.template": exchange, "messaging.rabbitmq.destination.routing_key": "order.paid", "messaging.message.id": "*",
			"messaging.message.body.size": "1",
		})},
		"batch send " + exchange: {operation: "send", kind: trace.SpanKindClient, atStart: samplingAttributes, attributes: with(map[string]string{
			"messaging.operation.name": "send", "messaging.operation.type": "send", "messaging.destination.name": sendName,
			"messaging.destination.template": exchange, "messaging.batch.message_count": "3",
		}), absent: []string{"messaging.message.id", "messaging.message.body.size"}},
		"create " + exchange: {operation: "create", kind: trace.SpanKindProducer, atStart: samplingAttributes, attributes: with(map[string]string{
			"messaging.operation.name": "create", "messaging.operation.type": "create", "messaging.destination.name": sendName,
			"messaging.message.id": "*", "messaging.message.body.size": "0",
		}), absent: []string{"messaging.batch.message_count"}},
		"process " + exchange + ":" + queue: {operation: "process", kind: trace.SpanKindConsumer, atStart: samplingAttributes, attributes: with(map[string]string{
			"messaging.operation.name": "process", "messaging.operation.type": "process", "messaging.destination.name": consumeName,
			"messaging.destination.template": exchange + ":" + queue, "messaging.rabbitmq.destination.routing_key": "order.paid",
			"messaging.rabbitmq.message.delivery_tag": "*", "messaging.message.id": "*", "messaging.consumer.group.name": queue,
			"messaging.message.body.size": "*",
		}), absent: []string{"error.type", "messaging.batch.message_count"}},
		"ack " + exchange + ":" + queue: {operation: "ack", kind: trace.SpanKindClient, atStart: samplingAttributes, attributes: with(map[string]string{
			"messaging.operation.name": "ack", "messaging.operation.type": "settle", "messaging.destination.name": consumeName,
			"messaging.rabbitmq.message.delivery_tag": "*",
		}), absent: []string{"error.type"}},
	}
	byID := map[trace.SpanID]tracetest.SpanStub{}
	for _, s := range spans {
		byID[s.SpanContext.SpanID()] = s
	}
	var sends []tracetest.SpanStub
	for _, s := range spans {
		key := s.Name
		if _, batch := attrMap(s.Attributes)["messaging.batch.message_count"]; batch {
			key = "batch " + key
		}
		conv, ok := conventions[key]
		if !ok {
			t.Errorf("span %q is not in the conventions table", s.Name)
			continue
		}
		if s.SpanKind != conv.kind {
			t.Errorf("%s: kind %v, want %v", s.Name, s.SpanKind, conv.kind)
		}
		attrs := attrMap(s.Attributes)
		for k, want := range conv.attributes {
			if got, ok := attrs[k]; !ok || (want != "*" && got != want) || got == "" {
				t.Errorf("%s: %s = %q, want %q", s.Name, k, got, want)
			}
		}
		for _, k := range conv.absent {
			if _, ok := attrs[k]; ok {
				t.Errorf("%s: %s set", s.Name, k)
			}
		}
		atStart := attrMap(rec.StartAttributes(s.SpanContext.SpanID()))
		for _, k := range conv.atStart {
			if _, ok := atStart[k]; !ok {
				t.Errorf("%s: %s not given at span start", s.Name, k)
			}
		}
		if s.Name == "send "+exchange {
			sends = append(sends, s)
		}
	}
	// One message: one send span, the process span's parent. A batch: a
	// create span per message (each its process span's parent) and one
	// send span (CLIENT) linked to them, with the batch's size.
	if len(sends) != 2 {
		t.Fatalf("%d send spans, want 2 (one per Publish call)", len(sends))
	}
	sort.Slice(sends, func(i, j int) bool { return sends[i].StartTime.Before(sends[j].StartTime) })
	if sends[0].SpanKind != trace.SpanKindProducer || attrMap(sends[0].Attributes)["messaging.message.conversation_id"] != "conversation-1" {
		t.Errorf("single send: kind %v, attributes %v", sends[0].SpanKind, attrMap(sends[0].Attributes))
	}
	if sends[1].SpanKind != trace.SpanKindClient || attrMap(sends[1].Attributes)["messaging.batch.message_count"] != "3" || len(sends[1].Links) != 3 {
		t.Errorf("batch send: kind %v, batch count %q, %d links", sends[1].SpanKind, attrMap(sends[1].Attributes)["messaging.batch.message_count"], len(sends[1].Links))
	}
	for _, s := range spans {
		switch {
		case strings.HasPrefix(s.Name, "process "):
			parent, ok := byID[s.Parent.SpanID()]
			if !ok || (parent.Name != "send "+exchange && parent.Name != "create "+exchange) || len(s.Links) != 0 {
				t.Errorf("process span's parent is %q (links %d), want its message's send or create span", parent.Name, len(s.Links))
			}
			if parent.Name == "send "+exchange && parent.SpanKind != trace.SpanKindProducer {
				t.Error("a batch message's process span has the batch send span as parent")
			}
		case strings.HasPrefix(s.Name, "ack "):
			if parent := byID[s.Parent.SpanID()]; !strings.HasPrefix(parent.Name, "process ") {
				t.Errorf("settle span's parent is %q, want the process span", parent.Name)
			}
		}
	}

	// Metrics: names, units, buckets and attribute keys.
	for _, mc := range metricConventions {
		m, ok := rec.Metric(t, mc.name)
		if !ok {
			t.Errorf("metric %s not recorded", mc.name)
			continue
		}
		if m.Unit != mc.unit {
			t.Errorf("%s: unit %q, want %q", mc.name, m.Unit, mc.unit)
		}
		for _, keys := range pointKeys(t, m, mc) {
			if mc.keys != nil && !slices.Equal(keys, mc.keys) {
				t.Errorf("%s: attribute keys %v, want %v", mc.name, keys, mc.keys)
			}
			if slices.Contains(keys, "messaging.rabbitmq.destination.routing_key") || slices.Contains(keys, "messaging.destination.name") &&
				slices.Contains(keys, "messaging.destination.template") {
				t.Errorf("%s: a high-cardinality attribute in %v", mc.name, keys)
			}
		}
	}
	// Measurements are made in their span's context: the histograms carry
	// exemplars pointing at traces. Every instrument and tracer carries
	// the conventions' schema URL.
	for _, name := range []string{telemetry.MetricOperationDuration, telemetry.MetricProcessDuration} {
		m, _ := rec.Metric(t, name)
		if !hasExemplar(m) {
			t.Errorf("%s: no exemplar with a trace id", name)
		}
	}
	var rm metricdata.ResourceMetrics
	if err := rec.Reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	for _, sm := range rm.ScopeMetrics {
		if sm.Scope.SchemaURL != telemetry.SchemaURL {
			t.Errorf("meter %s: schema URL %q", sm.Scope.Name, sm.Scope.SchemaURL)
		}
	}
	for _, s := range spans {
		if s.InstrumentationScope.SchemaURL != telemetry.SchemaURL {
			t.Errorf("span %s: schema URL %q", s.Name, s.InstrumentationScope.SchemaURL)
		}
	}
	if got := rec.Counter(t, telemetry.MetricSentMessages); got != 4 {
		t.Errorf("%s = %d, want 4", telemetry.MetricSentMessages, got)
	}
	if got := rec.Counter(t, telemetry.MetricConsumedMessages); got != 4 {
		t.Errorf("%s = %d, want 4", telemetry.MetricConsumedMessages, got)
	}
	if got := rec.HistogramCount(t, telemetry.MetricOperationDuration); got != 2+4 {
		t.Errorf("%s counted %d operations, want 6 (2 sends, 4 acks)", telemetry.MetricOperationDuration, got)
	}
}

// TestTelemetryErrorTypes: a failed send and a failed processing carry
// error.type with warren's low-cardinality names, on the span and the
// metrics, and the span's status is Error.
func TestTelemetryErrorTypes(t *testing.T) {
	b := rabbittest.Shared(t)
	rec := telemetrytest.New(t, telemetry.Config{})
	c := rabbittest.OpenConn(t, b.URL, conn.Config{Telemetry: rec.Telemetry})
	pub, err := warren.NewPublisher(c, warren.PublisherConfig{Mapping: warren.ExistingQueues{}, Mandatory: true})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	missing := b.Name("nobody-home")
	if err := pub.Publish(missing, message.NewMessage("lost", nil)); !errors.Is(err, broker.ErrUnroutable) {
		t.Fatalf("publish to a missing queue: %v", err)
	}
	spans := rec.Spans()
	if len(spans) != 1 || spans[0].Name != "send "+missing || spans[0].Status.Code != codes.Error || attrMap(spans[0].Attributes)["error.type"] != "unroutable" {
		t.Fatalf("failed send span: %+v", spans)
	}
	m, _ := rec.Metric(t, telemetry.MetricSentMessages)
	if !hasPointWith(m, "error.type", "unroutable") {
		t.Fatalf("%s has no point with error.type unroutable", telemetry.MetricSentMessages)
	}

	// A plain Watermill handler's error reaches the subscriber as a nack.
	q := b.Name("failing")
	sub, err := warren.NewSubscriber(c, warren.SubscriberConfig{Mapping: warren.QueuePerTopic{},
		Redelivery: warren.RedeliveryConfig{MaxAttempts: 1, Backoff: retry.Backoff{InitialInterval: time.Millisecond}}})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	if err := sub.SubscribeInitialize(q); err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int32
	if err := sub.SubscribeFunc(ctxT(t, 30*time.Second), q, func(*message.Message) error {
		if calls.Add(1) == 1 {
			return errors.New("boom")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	qpub, err := warren.NewPublisher(c, warren.PublisherConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer qpub.Close()
	if err := qpub.Publish(q, message.NewMessage("fails-once", nil)); err != nil {
		t.Fatal(err)
	}
	spans = waitSpans(t, rec, func(s tracetest.SpanStubs) bool { return count(s, "ack "+q) == 1 })
	var failed *tracetest.SpanStub
	for i, s := range spans {
		if s.Name == "process "+q && s.Status.Code == codes.Error {
			failed = &spans[i]
		}
	}
	if failed == nil || attrMap(failed.Attributes)["error.type"] != "_OTHER" || len(failed.Events) != 1 || failed.Events[0].Name != "exception" {
		t.Fatalf("the failed process span: %+v", failed)
	}
	if count(spans, "reject "+q) != 1 {
		t.Fatalf("no reject settle span for the requeue: %v", names(spans))
	}
	m, _ = rec.Metric(t, telemetry.MetricProcessDuration)
	if !hasPointWith(m, "error.type", "_OTHER") {
		t.Fatalf("%s has no point with error.type", telemetry.MetricProcessDuration)
	}
}

// TestTelemetryRecoveredMessageIsASuccess: a message acked after a failed
// in-process attempt did not fail. Its process span keeps the failed
// attempt as an exception event and warren.retries counts the retry, but
// the span's status is unset and neither the span nor
// messaging.process.duration carries error.type, so an error-rate panel
// does not count a recovery as a failure.
func TestTelemetryRecoveredMessageIsASuccess(t *testing.T) {
	t.Parallel()
	b := rabbittest.Shared(t)
	rec := telemetrytest.New(t, telemetry.Config{})
	r := newRouter(t, b.URL, router.Config{Telemetry: rec.Telemetry})
	q := b.Name("recovers")
	var calls atomic.Int32
	if err := r.AddRoute(router.Route{
		Name: "recovers", Queue: topology.QueueSpec{Name: q, Durable: true},
		Retry: router.RetrySettings{RetryConfig: middleware.RetryConfig{MaxAttempts: 3, Backoff: retry.Backoff{InitialInterval: time.Millisecond}}},
		Handler: func(*message.Message) error {
			if calls.Add(1) == 1 {
				return errors.New("a blip")
			}
			return nil
		},
	}); err != nil {
		t.Fatal(err)
	}
	startRouter(t, r)
	publish(t, r, q, message.NewMessage("recovers", nil))
	spans := waitSpans(t, rec, func(s tracetest.SpanStubs) bool { return count(s, "ack "+q) == 1 })
	var process *tracetest.SpanStub
	for i, s := range spans {
		if s.Name == "process "+q {
			process = &spans[i]
		}
	}
	if process == nil {
		t.Fatalf("no process span: %v", names(spans))
	}
	if process.Status.Code != codes.Unset {
		t.Errorf("recovered message's process span has status %v, want Unset", process.Status.Code)
	}
	if v, ok := attrMap(process.Attributes)["error.type"]; ok {
		t.Errorf("recovered message's process span has error.type %q", v)
	}
	if len(process.Events) != 1 || process.Events[0].Name != "exception" || attrMap(process.Events[0].Attributes)["warren.attempt"] != "1" {
		t.Errorf("the failed attempt is not one exception event with warren.attempt 1: %+v", process.Events)
	}
	m, _ := rec.Metric(t, telemetry.MetricProcessDuration)
	h, ok := m.Data.(metricdata.Histogram[float64])
	if !ok || len(h.DataPoints) == 0 {
		t.Fatalf("%s has no points", telemetry.MetricProcessDuration)
	}
	for _, dp := range h.DataPoints {
		if v, ok := dp.Attributes.Value("error.type"); ok {
			t.Errorf("%s recorded the recovered message under error.type %q", telemetry.MetricProcessDuration, v.AsString())
		}
	}
	if got := rec.Counter(t, telemetry.MetricRetries); got != 1 {
		t.Errorf("%s = %d, want 1", telemetry.MetricRetries, got)
	}
}

// TestTelemetryOneTraceThroughRetriesAndDeadLetter: with telemetry.Parent
// (the default) a message's whole life is one trace: its send, each process
// span (every failed attempt an exception event), the in-process retry, the
// delayed retry's send through the delay queue, and the dead letter's send
// to the dead-letter queue. With telemetry.Link each process span starts a trace of its own,
// linked to the send span that carried its message.
func TestTelemetryOneTraceThroughRetriesAndDeadLetter(t *testing.T) {
	for _, rel := range []telemetry.Relation{telemetry.Parent, telemetry.Link} {
		t.Run(rel.String(), func(t *testing.T) {
			b := rabbittest.Shared(t)
			rec := telemetrytest.New(t, telemetry.Config{Process: rel})
			r := newRouter(t, b.URL, router.Config{Telemetry: rec.Telemetry})
			q := b.Name("traced")
			b.Name("traced.dlq")
			if err := r.AddRoute(router.Route{
				Name: "traced", Queue: topology.QueueSpec{Name: q, Durable: true},
				Retry:        router.RetrySettings{RetryConfig: middleware.RetryConfig{MaxAttempts: 2, Backoff: retry.Backoff{InitialInterval: time.Millisecond}}},
				DelayedRetry: router.DelayedRetrySettings{Levels: []time.Duration{time.Second}},
				Handler:      func(*message.Message) error { return errors.New("always fails") },
			}); err != nil {
				t.Fatal(err)
			}
			startRouter(t, r)
			ctx, root := rec.Provider.Tracer("test").Start(context.Background(), "request")
			msg := message.NewMessage("traced", nil)
			msg.SetContext(ctx)
			publish(t, r, q, msg)
			root.End()
			spans := waitSpans(t, rec, func(s tracetest.SpanStubs) bool { return count(s, "send "+q+".dlq") == 1 && count(s, "ack "+q) == 2 })
			want := map[string]int{"request": 1, "send " + q: 2, "send " + q + ".dlq": 1, "process " + q: 2, "retry": 2, "ack " + q: 2, "reject " + q: 0}
			for name, n := range want {
				if count(spans, name) != n {
					t.Errorf("%d %q spans, want %d: %v", count(spans, name), name, n, names(spans))
				}
			}
			traceIDs := map[trace.TraceID]bool{}
			for _, s := range spans {
				traceIDs[s.SpanContext.TraceID()] = true
				switch s.Name {
				case "process " + q:
					if s.Status.Code != codes.Error || len(s.Events) != 2 {
						t.Errorf("process span: status %v, %d exception events, want Error and 2 (one per failed attempt)", s.Status.Code, len(s.Events))
					}
					if rel == telemetry.Link && (len(s.Links) != 1 || s.Parent.IsValid()) {
						t.Errorf("Link: process span has parent %v and %d links", s.Parent.IsValid(), len(s.Links))
					}
				case "retry":
					if s.Status.Code != codes.Error {
						t.Error("a failed retry's span is not status Error")
					}
				}
			}
			wantTraces := 1
			if rel == telemetry.Link {
				wantTraces = 3 // the request's, and one per delivery
			}
			if len(traceIDs) != wantTraces {
				t.Fatalf("%d traces, want %d", len(traceIDs), wantTraces)
			}
			if got := rec.Counter(t, telemetry.MetricRetries); got != 3 {
				t.Errorf("%s = %d, want 3 (2 in-process, 1 delayed)", telemetry.MetricRetries, got)
			}
			if got := rec.Counter(t, telemetry.MetricDeadLetters); got != 1 {
				t.Errorf("%s = %d, want 1", telemetry.MetricDeadLetters, got)
			}
		})
	}
}

// TestTelemetryConnectionMetrics: a connection cut is a reconnect with a
// restore measured; an undecodable delivery is counted as poison; a
// settlement whose channel died is counted as stale.
func TestTelemetryConnectionMetrics(t *testing.T) {
	b := rabbittest.Shared(t)
	rec := telemetrytest.New(t, telemetry.Config{})
	proxy := rabbittest.NewProxy(t, rabbittest.SharedAddr)
	c := rabbittest.OpenConn(t, proxy.URL(b.Vhost), conn.Config{Telemetry: rec.Telemetry,
		Reconnect: conn.RetryPolicy{FirstRetryImmediate: true, Backoff: retry.Backoff{MaxInterval: 200 * time.Millisecond}}})
	q, poisonQ := b.Name("held"), b.Name("poison")
	sub, err := warren.NewSubscriber(c, warren.SubscriberConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	poisonSub, err := warren.NewSubscriber(c, warren.SubscriberConfig{Marshaler: refusingMarshaler{},
		OnPoison: func(*warren.PoisonError) error { return nil }})
	if err != nil {
		t.Fatal(err)
	}
	defer poisonSub.Close()
	ctx := ctxT(t, 60*time.Second)
	started, release := make(chan struct{}, 1), make(chan struct{})
	var releaseOnce sync.Once
	unblock := func() { releaseOnce.Do(func() { close(release) }) }
	defer unblock() // before the subscriber closes, even when the test fails
	if err := sub.SubscribeFunc(ctx, q, func(*message.Message) error {
		select {
		case started <- struct{}{}:
		default:
		}
		<-release
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := poisonSub.SubscribeFunc(ctx, poisonQ, func(*message.Message) error { return nil }); err != nil {
		t.Fatal(err)
	}
	pub, err := warren.NewPublisher(c, warren.PublisherConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	if err := pub.Publish(poisonQ, message.NewMessage("undecodable", nil)); err != nil {
		t.Fatal(err)
	}
	if err := pub.Publish(q, message.NewMessage("held", nil)); err != nil {
		t.Fatal(err)
	}
	<-started
	proxy.Cut()
	waitUntil(t, "the connection lost", func() bool { return c.State() != conn.StateConnected })
	unblock() // the handler acks a delivery whose channel is gone
	waitUntil(t, "the held delivery's settlement counted stale", func() bool { return rec.Counter(t, telemetry.MetricStaleAcks) >= 1 })
	if err := proxy.Restore(); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitConnected(ctx); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "a reconnect and its restore measured", func() bool {
		return rec.Counter(t, telemetry.MetricReconnects) == 1 && rec.HistogramCount(t, telemetry.MetricRestoreDuration) >= 1
	})
	waitUntil(t, "the poison delivery counted", func() bool { return rec.Counter(t, telemetry.MetricPoison) >= 1 })
	m, _ := rec.Metric(t, telemetry.MetricReconnects)
	if !hasPointWith(m, "server.address", "127.0.0.1") {
		t.Errorf("%s without server.address", telemetry.MetricReconnects)
	}
}

func waitSpans(t *testing.T, rec *telemetrytest.Recorder, done func(tracetest.SpanStubs) bool) tracetest.SpanStubs {
	t.Helper()
	waitUntil(t, "the spans", func() bool { return done(rec.Spans()) })
	return rec.Spans()
}

// waitUntil polls cond until it holds, failing after 20s.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	rabbittest.Eventually(t, 20*time.Second, what, cond)
}

func count(spans tracetest.SpanStubs, name string) int {
	n := 0
	for _, s := range spans {
		if s.Name == name {
			n++
		}
	}
	return n
}

func names(spans tracetest.SpanStubs) []string {
	var out []string
	for _, s := range spans {
		out = append(out, s.Name)
	}
	return out
}

func attrMap(attrs []attribute.KeyValue) map[string]string {
	m := map[string]string{}
	for _, a := range attrs {
		m[string(a.Key)] = a.Value.String()
	}
	return m
}

// pointKeys checks a metric's kind and buckets and returns each data
// point's attribute keys (sorted), error.type left out.
func pointKeys(t *testing.T, m metricdata.Metrics, mc metricConvention) [][]string {
	t.Helper()
	var sets []attribute.Set
	switch d := m.Data.(type) {
	case metricdata.Histogram[float64]:
		if !mc.histogram {
			t.Errorf("%s is a histogram, want a counter", m.Name)
		}
		for _, dp := range d.DataPoints {
			if !slices.Equal(dp.Bounds, mc.bounds) {
				t.Errorf("%s: bounds %v, want %v", m.Name, dp.Bounds, mc.bounds)
			}
			sets = append(sets, dp.Attributes)
		}
	case metricdata.Sum[int64]:
		if mc.histogram || !d.IsMonotonic {
			t.Errorf("%s is a counter, want a histogram", m.Name)
		}
		for _, dp := range d.DataPoints {
			sets = append(sets, dp.Attributes)
		}
	default:
		t.Errorf("%s: unexpected data %T", m.Name, m.Data)
	}
	var out [][]string
	for _, s := range sets {
		var keys []string
		for _, kv := range s.ToSlice() {
			if kv.Key != "error.type" {
				keys = append(keys, string(kv.Key))
			}
		}
		sort.Strings(keys)
		out = append(out, keys)
	}
	return out
}

func hasPointWith(m metricdata.Metrics, key, value string) bool {
	var sets []attribute.Set
	switch d := m.Data.(type) {
	case metricdata.Histogram[float64]:
		for _, dp := range d.DataPoints {
			sets = append(sets, dp.Attributes)
		}
	case metricdata.Sum[int64]:
		for _, dp := range d.DataPoints {
			sets = append(sets, dp.Attributes)
		}
	}
	for _, s := range sets {
		if v, ok := s.Value(attribute.Key(key)); ok && v.String() == value {
			return true
		}
	}
	return false
}

func hasExemplar(m metricdata.Metrics) bool {
	h, ok := m.Data.(metricdata.Histogram[float64])
	if !ok {
		return false
	}
	for _, dp := range h.DataPoints {
		for _, e := range dp.Exemplars {
			if len(e.TraceID) == 16 {
				return true
			}
		}
	}
	return false
}

// TestTelemetryTracesRequests: a request goes through the traced, counted
// send path like every publish: its send span carries the caller's trace,
// the responder's process span continues it, and it counts as a sent
// message.
func TestTelemetryTracesRequests(t *testing.T) {
	b := rabbittest.Shared(t)
	q := b.Name("rpc-traced")
	b.Name(q + ".dlq")
	respRec := telemetrytest.New(t, telemetry.Config{})
	r := newRouter(t, b.URL, router.Config{Telemetry: respRec.Telemetry})
	if err := r.AddRoute(router.Route{
		Name: "echo", Queue: topology.QueueSpec{Name: q, Durable: true},
		Respond: func(m *message.Message) (*message.Message, error) { return message.NewMessage("reply", m.Payload), nil },
	}); err != nil {
		t.Fatal(err)
	}
	startRouter(t, r)

	reqRec := telemetrytest.New(t, telemetry.Config{})
	rq, err := warren.NewRequester(openConn(t, b.URL), warren.RequesterConfig{Telemetry: reqRec.Telemetry})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rq.Close() })
	ctx, root := reqRec.Provider.Tracer("test").Start(ctxT(t, 30*time.Second), "caller")
	if _, err := rq.Request(ctx, q, message.NewMessage("req", []byte("x"))); err != nil {
		t.Fatal(err)
	}
	root.End()

	sends := waitSpans(t, reqRec, func(s tracetest.SpanStubs) bool { return count(s, "send "+q) == 1 })
	var send tracetest.SpanStub
	for _, s := range sends {
		if s.Name == "send "+q {
			send = s
		}
	}
	if send.SpanContext.TraceID() != root.SpanContext().TraceID() || send.Parent.SpanID() != root.SpanContext().SpanID() {
		t.Fatalf("the request's send span is not the caller's child: trace %s parent %s, caller %s/%s",
			send.SpanContext.TraceID(), send.Parent.SpanID(), root.SpanContext().TraceID(), root.SpanContext().SpanID())
	}
	processes := waitSpans(t, respRec, func(s tracetest.SpanStubs) bool { return count(s, "process "+q) == 1 })
	for _, s := range processes {
		if s.Name == "process "+q && s.SpanContext.TraceID() != send.SpanContext.TraceID() {
			t.Fatalf("the responder's process span is in trace %s, the request's send span in %s: not one trace",
				s.SpanContext.TraceID(), send.SpanContext.TraceID())
		}
	}
	if got := reqRec.Counter(t, telemetry.MetricSentMessages); got != 1 {
		t.Fatalf("%s = %d after one request, want 1", telemetry.MetricSentMessages, got)
	}
}

// countingPropagator is W3C trace context and baggage, counting its
// extractions.
type countingPropagator struct {
	propagation.TextMapPropagator
	extracts atomic.Int64
}

func newCountingPropagator() *countingPropagator {
	return &countingPropagator{TextMapPropagator: propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})}
}

func (p *countingPropagator) Extract(ctx context.Context, c propagation.TextMapCarrier) context.Context {
	p.extracts.Add(1)
	return p.TextMapPropagator.Extract(ctx, c)
}

// TestTelemetryNothingSetExtractsTraceContextOnce: on otel's global
// providers with none set (this package sets none), a route's handler gets
// the trace context a non-warren producer sent, extracted once: by the
// route's Subscriber, not again by the stack's Tracing step, which has the
// same telemetry (issue 33: the second extraction, and the stack growth it
// set off on the workers' goroutines, cost a routed message about 1 µs). A
// Tracing step with telemetry of its own over a warren Subscriber still
// extracts it itself.
func TestTelemetryNothingSetExtractsTraceContextOnce(t *testing.T) {
	const traceID = "0af7651916cd43dd8448eb211c80319c"
	const traceparent = "00-" + traceID + "-b7ad6b7169203331-01"
	b := rabbittest.Shared(t)
	routed, plain := b.Name("traced-once"), b.Name("traced-own")
	b.Name(routed + ".dlq")
	publish := func(q string) {
		t.Helper()
		ch := rawChannel(t, b.URL)
		if err := ch.Confirm(false); err != nil {
			t.Fatal(err)
		}
		dc, err := ch.PublishWithDeferredConfirmWithContext(ctxT(t, 10*time.Second), "", q, true, false,
			amqp.Publishing{Headers: amqp.Table{"traceparent": traceparent}, Body: []byte("x")})
		if err != nil || !dc.Wait() {
			t.Fatalf("publish to %s: %v", q, err)
		}
	}
	newTelemetry := func(p *countingPropagator) *telemetry.Telemetry {
		tel, err := telemetry.New(telemetry.Config{Propagator: p})
		if err != nil {
			t.Fatal(err)
		}
		return tel
	}

	got := make(chan string, 1) // the trace id each handler found
	handled := func(who string) {
		t.Helper()
		select {
		case id := <-got:
			if id != traceID {
				t.Fatalf("%s has trace %q, the producer sent %q", who, id, traceID)
			}
		case <-ctxT(t, 30*time.Second).Done():
			t.Fatalf("the message never reached %s", who)
		}
	}

	routeProp := newCountingPropagator()
	r := newRouter(t, b.URL, router.Config{Telemetry: newTelemetry(routeProp)})
	if err := r.AddRoute(router.Route{
		Name: "once", Queue: topology.QueueSpec{Name: routed, Durable: true},
		Handler: func(m *message.Message) error {
			got <- trace.SpanContextFromContext(m.Context()).TraceID().String()
			return nil
		},
	}); err != nil {
		t.Fatal(err)
	}
	startRouter(t, r)
	publish(routed)
	handled("the route's handler")
	if n := routeProp.extracts.Load(); n != 1 {
		t.Fatalf("the routed message's trace context was extracted %d times, want once (by its Subscriber)", n)
	}

	subProp, stepProp := newCountingPropagator(), newCountingPropagator()
	c := openConn(t, b.URL)
	if _, err := rawChannel(t, b.URL).QueueDeclare(plain, true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	sub, err := warren.NewSubscriber(c, warren.SubscriberConfig{Mapping: warren.ExistingQueues{}, Telemetry: newTelemetry(subProp)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Close() })
	step, err := middleware.Tracing(middleware.TracingConfig{Telemetry: newTelemetry(stepProp)})
	if err != nil {
		t.Fatal(err)
	}
	traced := step(func(m *message.Message) ([]*message.Message, error) {
		got <- trace.SpanContextFromContext(m.Context()).TraceID().String()
		return nil, nil
	})
	if err := sub.SubscribeFunc(ctxT(t, 30*time.Second), plain, func(m *message.Message) error {
		_, err := traced(m)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	publish(plain)
	handled("the Tracing step's handler")
	if s, m := subProp.extracts.Load(), stepProp.extracts.Load(); s != 1 || m != 1 {
		t.Fatalf("extractions: the Subscriber's telemetry %d, the Tracing step's %d; want one each (their telemetry differs)", s, m)
	}
}

// rawChannel opens a channel on a connection of its own, a client that is
// not warren; both close with the test.
func rawChannel(t *testing.T, url string) *amqp.Channel {
	t.Helper()
	c, err := amqp.Dial(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	ch, err := c.Channel()
	if err != nil {
		t.Fatal(err)
	}
	return ch
}

// TestTelemetryNamesEachMessagesOwnDestination: a Publisher and a
// subscription each remember the last destination's description
// (instrument.Memo), and a process its settle's; spans must still name
// every message's own. One Publisher sends to two topics in turn, and one
// queue, bound to both routing keys, receives both: every send, process
// and ack span names the routing key its message went with.
func TestTelemetryNamesEachMessagesOwnDestination(t *testing.T) {
	b, rec, exchange, queue, pub, sub := telemetryShop(t)
	if err := rawChannel(t, b.URL).QueueBind(queue, "order.sent", exchange, false, nil); err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t, 30*time.Second)
	if err := sub.SubscribeFunc(ctx, "order.paid", func(*message.Message) error { return nil }); err != nil {
		t.Fatal(err)
	}
	const each = 6
	keyOf := map[string]string{} // message id: the routing key it went with
	for i := range 2 * each {
		key := []string{"order.paid", "order.sent"}[i%2]
		id := key + "-" + strconv.Itoa(i)
		keyOf[id] = key
		if err := pub.Publish(key, message.NewMessage(id, nil)); err != nil {
			t.Fatal(err)
		}
	}
	spans := waitSpans(t, rec, func(s tracetest.SpanStubs) bool {
		return count(s, "ack "+exchange+":"+queue) == 2*each
	})
	processKey := map[trace.SpanID]string{} // a process span: its message's routing key
	sent, processed := 0, 0
	for _, s := range spans {
		a := attrMap(s.Attributes)
		switch s.Name {
		case "send " + exchange:
			key := keyOf[a["messaging.message.id"]]
			if a["messaging.rabbitmq.destination.routing_key"] != key || a["messaging.destination.name"] != exchange+":"+key {
				t.Errorf("send span of %s: routing key %q, destination %q; want %s", a["messaging.message.id"], a["messaging.rabbitmq.destination.routing_key"], a["messaging.destination.name"], key)
			}
			sent++
		case "process " + exchange + ":" + queue:
			key := keyOf[a["messaging.message.id"]]
			if a["messaging.rabbitmq.destination.routing_key"] != key || a["messaging.destination.name"] != exchange+":"+key+":"+queue {
				t.Errorf("process span of %s: routing key %q, destination %q; want %s", a["messaging.message.id"], a["messaging.rabbitmq.destination.routing_key"], a["messaging.destination.name"], key)
			}
			processKey[s.SpanContext.SpanID()] = key
			processed++
		}
	}
	if sent != 2*each || processed != 2*each {
		t.Fatalf("%d send and %d process spans, want %d each", sent, processed, 2*each)
	}
	for _, s := range spans {
		if s.Name != "ack "+exchange+":"+queue {
			continue
		}
		key, ok := processKey[s.Parent.SpanID()]
		if want := exchange + ":" + key + ":" + queue; !ok || attrMap(s.Attributes)["messaging.destination.name"] != want {
			t.Errorf("ack span: destination %q under a process span of key %q, want %q", attrMap(s.Attributes)["messaging.destination.name"], key, want)
		}
	}
}
