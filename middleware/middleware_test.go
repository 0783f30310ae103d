package middleware_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	wmw "github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/warrenmq/warren/ack"
	"github.com/warrenmq/warren/internal/instrument"
	"github.com/warrenmq/warren/middleware"
	kit "github.com/warrenmq/warren/middleware/middlewaretest"
	"github.com/warrenmq/warren/retry"
	"github.com/warrenmq/warren/telemetry"
	"github.com/warrenmq/warren/telemetry/telemetrytest"
)

func TestAckDispositions(t *testing.T) {
	boom := errors.New("boom")
	tests := []struct {
		name string
		h    message.HandlerFunc
		want ack.Disposition
	}{
		{"success acks", func(*message.Message) ([]*message.Message, error) { return nil, nil }, ack.Ack},
		{"plain error is rejected with requeue", func(*message.Message) ([]*message.Message, error) { return nil, boom }, ack.RejectRequeue},
		{"permanent error is rejected", func(*message.Message) ([]*message.Message, error) { return nil, ack.Permanent(boom) }, ack.Reject},
		{"requeue error is requeued", func(*message.Message) ([]*message.Message, error) { return nil, ack.AsRequeue(boom) }, ack.Requeue},
		{"panic is recovered and rejected", func(*message.Message) ([]*message.Message, error) { panic("bug") }, ack.Reject},
		{"explicit disposition stands", func(m *message.Message) ([]*message.Message, error) {
			ack.Set(m, ack.Requeue, nil)
			return nil, boom
		}, ack.Requeue},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := kit.Run(kit.NewMessage("x"), tt.h, kit.Must(middleware.Ack(middleware.AckConfig{})))
			if r.Disposition != tt.want {
				t.Fatalf("disposition %v, want %v (err %v)", r.Disposition, tt.want, r.Err)
			}
		})
	}
	r := kit.Run(kit.NewMessage("x"), func(*message.Message) ([]*message.Message, error) { panic("bug") }, kit.Must(middleware.Ack(middleware.AckConfig{})))
	var pe *middleware.PanicError
	if !errors.As(r.Err, &pe) || !errors.Is(r.Err, middleware.ErrPanic) || !(ack.KindOf(r.Err) == ack.PermanentKind) || !strings.Contains(pe.Stack, "middleware_test") {
		t.Fatalf("panic error %v", r.Err)
	}
}

func TestRetry(t *testing.T) {
	sl := &kit.Sleeper{}
	var attempts []middleware.RetryAttempt
	h := &kit.Handler{Failures: 2}
	r := kit.Run(kit.NewMessage("x"), h.Func, kit.Must(middleware.Retry(middleware.RetryConfig{
		MaxAttempts: 3,
		Sleep:       sl.Sleep,
		OnAttempt:   func(a middleware.RetryAttempt) { attempts = append(attempts, a) },
		Backoff:     retry.Backoff{InitialInterval: 100 * time.Millisecond, RandomizationFactor: 0.000001},
	})))
	if r.Err != nil || h.Calls() != 3 {
		t.Fatalf("err %v after %d calls", r.Err, h.Calls())
	}
	w := sl.Waits()
	if len(w) != 2 || w[0] < 99*time.Millisecond || w[0] > 101*time.Millisecond || w[1] < 199*time.Millisecond || w[1] > 201*time.Millisecond {
		t.Fatalf("waits %v, want ~[100ms 200ms]", w)
	}
	if len(attempts) != 2 || attempts[0].Attempt != 1 || attempts[1].Next <= attempts[0].Next {
		t.Fatalf("attempt hook %+v", attempts)
	}
	// The first attempt runs on the message's context; each retry on a
	// fresh one, ended after it, the parent untouched (Watermill 467).
	ctxs := h.Contexts()
	if ctxs[0].Err() != nil {
		t.Fatal("the first attempt's context (the message's) was cancelled")
	}
	for i, c := range ctxs[1:] {
		if c.Err() == nil {
			t.Fatalf("retry %d context still live", i+1)
		}
		for j := range i + 1 {
			if ctxs[j] == c {
				t.Fatal("two attempts shared a context")
			}
		}
	}
	// With AttemptTimeout every attempt has a deadline of its own.
	timed := &kit.Handler{Failures: 1}
	kit.Run(kit.NewMessage("x"), timed.Func, kit.Must(middleware.Retry(middleware.RetryConfig{
		MaxAttempts: 2, AttemptTimeout: time.Minute, Sleep: (&kit.Sleeper{}).Sleep,
	})))
	for i, c := range timed.Contexts() {
		if _, ok := c.Deadline(); !ok || c.Err() == nil {
			t.Fatalf("attempt %d: no deadline of its own, or not ended after it", i+1)
		}
	}

	for _, tc := range []struct {
		name  string
		err   error
		calls int
	}{
		{"permanent not retried", ack.Permanent(errors.New("bad input")), 1},
		{"requeue not retried", ack.AsRequeue(errors.New("db down")), 1},
		{"exhausted", errors.New("always"), 4},
	} {
		h := &kit.Handler{Failures: 100, Err: tc.err}
		r := kit.Run(kit.NewMessage("x"), h.Func, kit.Must(middleware.Retry(middleware.RetryConfig{MaxAttempts: 4, Sleep: (&kit.Sleeper{}).Sleep})))
		if h.Calls() != tc.calls || !errors.Is(r.Err, tc.err) {
			t.Errorf("%s: %d calls, err %v", tc.name, h.Calls(), r.Err)
		}
	}
}

// A timeout inside Retry cancels only its own attempt (Watermill issue 467).
func TestRetryWithTimeoutInside(t *testing.T) {
	calls := 0
	h := func(m *message.Message) ([]*message.Message, error) {
		calls++
		if calls == 1 {
			<-m.Context().Done() // the first attempt times out
			return nil, m.Context().Err()
		}
		if m.Context().Err() != nil {
			return nil, errors.New("second attempt started with a dead context")
		}
		return nil, nil
	}
	r := kit.Run(kit.NewMessage("x"), h,
		kit.Must(middleware.Retry(middleware.RetryConfig{MaxAttempts: 2, Sleep: (&kit.Sleeper{}).Sleep})),
		wmw.Timeout(20*time.Millisecond))
	if r.Err != nil || calls != 2 {
		t.Fatalf("err %v after %d calls", r.Err, calls)
	}
}

func TestRetryStopsWhenMessageContextEnds(t *testing.T) {
	msg := kit.NewMessage("x")
	ctx, cancel := context.WithCancel(msg.Context())
	msg.SetContext(ctx)
	cancel()
	h := &kit.Handler{Failures: 10}
	r := kit.Run(msg, h.Func, kit.Must(middleware.Retry(middleware.RetryConfig{MaxAttempts: 5})))
	if h.Calls() != 1 || !errors.Is(r.Err, context.Canceled) {
		t.Fatalf("%d calls, err %v", h.Calls(), r.Err)
	}
}

func TestDelayedRetry(t *testing.T) {
	pub := &kit.Publisher{}
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	var events []middleware.DelayedRetryEvent
	mw, err := middleware.DelayedRetry(middleware.DelayedRetryConfig{
		Publisher: pub, Levels: []time.Duration{time.Second, 10 * time.Second},
		Now:     func() time.Time { return now },
		OnRetry: func(e middleware.DelayedRetryEvent) { events = append(events, e) },
	})
	if err != nil {
		t.Fatal(err)
	}
	fail := &kit.Handler{Failures: 100}
	r := kit.Run(kit.NewMessage("x", kit.WithMetadata("x-death", "[...]"), kit.WithMetadata("traceparent", "00-abc-def-01")), fail.Func, mw)
	if r.Err != nil {
		t.Fatalf("the original must be acked once the republish is confirmed: %v", r.Err)
	}
	got := pub.Published()
	if len(got) != 1 || got[0].Topic != "work" || got[0].Msg.Metadata.Get("_watermill_delayed_for") != "1s" ||
		got[0].Msg.Metadata.Get("_watermill_delayed_until") != "2026-01-02T03:04:06Z" {
		t.Fatalf("published %+v: want the copy scheduled back to its queue in 1s", got)
	}
	m := got[0].Msg
	want := map[string]string{
		ack.AttemptHeader: "1", middleware.HeaderRetryRound: "1", middleware.HeaderRetryLevel: "1s",
		middleware.HeaderFirstFailure: "2026-01-02T03:04:05Z", ack.HeaderOriginalExchange: "orders",
		ack.HeaderOriginalRoutingKey: "order.created", "traceparent": "00-abc-def-01",
	}
	for k, v := range want {
		if m.Metadata.Get(k) != v {
			t.Errorf("header %s = %q, want %q", k, m.Metadata.Get(k), v)
		}
	}
	if _, ok := m.Metadata["x-death"]; ok {
		t.Error("x-death copied to a republished message")
	}
	if m.UUID != "msg-1" || len(events) != 1 || events[0].Round != 1 {
		t.Fatalf("uuid %s events %+v", m.UUID, events)
	}

	// Coming back from the first delay: next level.
	second := kit.NewMessage("x", kit.WithMetadata(middleware.HeaderRetryRound, "1"), kit.WithMetadata(ack.AttemptHeader, "1"))
	kit.Run(second, fail.Func, mw)
	if got := pub.Published(); len(got) != 2 || got[1].Topic != "work" || got[1].Msg.Metadata.Get("_watermill_delayed_for") != "10s" || got[1].Msg.Metadata.Get(ack.AttemptHeader) != "2" {
		t.Fatalf("second round %+v", got[1])
	}
	// Every level used: exhausted, for DeadLetter.
	r = kit.Run(kit.NewMessage("x", kit.WithMetadata(middleware.HeaderRetryRound, "2")), fail.Func, mw)
	if !errors.Is(r.Err, middleware.ErrRetriesExhausted) || len(pub.Published()) != 2 {
		t.Fatalf("exhausted: %v", r.Err)
	}
	// Permanent errors are not delayed.
	perm := &kit.Handler{Failures: 1, Err: ack.Permanent(errors.New("bad"))}
	if r := kit.Run(kit.NewMessage("x"), perm.Func, mw); !(ack.KindOf(r.Err) == ack.PermanentKind) || len(pub.Published()) != 2 {
		t.Fatalf("permanent: %v", r.Err)
	}
	// A failed republish requeues the original instead of losing it.
	broken, _ := middleware.DelayedRetry(middleware.DelayedRetryConfig{Publisher: &kit.Publisher{Fail: errors.New("broker down")}})
	r = kit.Run(kit.NewMessage("x"), fail.Func, broken, kit.Must(middleware.Ack(middleware.AckConfig{})))
	if ack.KindOf(r.Err) != ack.RequeueKind {
		t.Fatalf("failed republish: %v", r.Err)
	}
	if _, err := middleware.DelayedRetry(middleware.DelayedRetryConfig{}); err == nil {
		t.Fatal("no publisher accepted")
	}
	if _, err := middleware.DelayedRetry(middleware.DelayedRetryConfig{Publisher: pub, Levels: []time.Duration{0}}); err == nil {
		t.Fatal("zero level accepted")
	}
}

func TestDeadLetterReject(t *testing.T) {
	var events []middleware.DeadLetterEvent
	mw, err := middleware.DeadLetter(middleware.DeadLetterConfig{Mode: middleware.RejectToDLX, OnDeadLetter: func(e middleware.DeadLetterEvent) { events = append(events, e) }})
	if err != nil {
		t.Fatal(err)
	}
	h := &kit.Handler{Failures: 1}
	r := kit.Run(kit.NewMessage("x"), h.Func, kit.Must(middleware.Ack(middleware.AckConfig{})), mw)
	if r.Disposition != ack.Reject || r.Err == nil || len(events) != 1 {
		t.Fatalf("disposition %v err %v events %d", r.Disposition, r.Err, len(events))
	}
	req := &kit.Handler{Failures: 1, Err: ack.AsRequeue(errors.New("db down"))}
	r = kit.Run(kit.NewMessage("x"), req.Func, kit.Must(middleware.Ack(middleware.AckConfig{})), mw)
	if r.Disposition != ack.Requeue || len(events) != 1 {
		t.Fatalf("a requeue error was dead-lettered: %v", r.Disposition)
	}
}

func TestDeadLetterPublish(t *testing.T) {
	pub := &kit.Publisher{}
	tr := telemetrytest.New(t, telemetry.Config{})
	now := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	var events []middleware.DeadLetterEvent
	mw, err := middleware.DeadLetter(middleware.DeadLetterConfig{
		Mode: middleware.PublishToDLQ, Publisher: pub, HandlerName: "orders-handler", MaxErrorLength: 10,
		Now: func() time.Time { return now }, Telemetry: tr.Telemetry,
		OnDeadLetter: func(e middleware.DeadLetterEvent) { events = append(events, e) },
	})
	if err != nil {
		t.Fatal(err)
	}
	h := &kit.Handler{Failures: 1, Err: errors.New("a very long error text indeed")}
	msg := kit.NewMessage("payload", kit.WithAttempt(5), kit.WithMetadata(middleware.HeaderFirstFailure, "2026-03-04T00:00:00Z"),
		kit.WithMetadata(ack.HeaderOriginalExchange, "shop"), kit.WithMetadata(ack.HeaderOriginalRoutingKey, "order.paid"))
	ctx, span := tr.Provider.Tracer("test").Start(msg.Context(), "process")
	msg.SetContext(ctx)
	r := kit.Run(msg, h.Func, kit.Must(middleware.Ack(middleware.AckConfig{})), mw)
	span.End()
	if r.Err != nil || r.Disposition != ack.Ack {
		t.Fatalf("original must be acked once the dead letter is confirmed: %v %v", r.Err, r.Disposition)
	}
	got := pub.Published()
	if len(got) != 1 || got[0].Topic != "work.dlq" || string(got[0].Msg.Payload) != "payload" {
		t.Fatalf("published %+v", got)
	}
	md := got[0].Msg.Metadata
	want := map[string]string{
		middleware.HeaderDLError: "a very lon...(truncated)", middleware.HeaderDLErrorType: "_OTHER",
		middleware.HeaderDLAttempts: "5", middleware.HeaderDLFirstFail: "2026-03-04T00:00:00Z",
		middleware.HeaderDLLastFail: "2026-03-04T05:06:07Z", middleware.HeaderDLExchange: "shop",
		middleware.HeaderDLRoutingKey: "order.paid", middleware.HeaderDLQueue: "work", middleware.HeaderDLHandler: "orders-handler",
		middleware.HeaderDLTraceID: span.SpanContext().TraceID().String(),
	}
	for k, v := range want {
		if md.Get(k) != v {
			t.Errorf("%s = %q, want %q", k, md.Get(k), v)
		}
	}
	if len(events) != 1 || events[0].Attempts != 5 || tr.Counter(t, "warren.dead_letters") != 1 {
		t.Fatalf("events %+v", events)
	}
	failing, _ := middleware.DeadLetter(middleware.DeadLetterConfig{Mode: middleware.PublishToDLQ, Publisher: &kit.Publisher{Fail: errors.New("down")}})
	r = kit.Run(kit.NewMessage("x"), (&kit.Handler{Failures: 1}).Func, kit.Must(middleware.Ack(middleware.AckConfig{})), failing)
	if r.Disposition != ack.Requeue {
		t.Fatalf("a failed dead-letter publish must requeue: %v", r.Disposition)
	}
	if _, err := middleware.DeadLetter(middleware.DeadLetterConfig{Mode: middleware.PublishToDLQ}); err == nil {
		t.Fatal("publish mode without publisher accepted")
	}
}

func TestTracingConsumerSpans(t *testing.T) {
	for _, asParent := range []bool{false, true} {
		rel := telemetry.Link
		if asParent {
			rel = telemetry.Parent
		}
		tr := telemetrytest.New(t, telemetry.Config{Process: rel})
		// A producer span and its context in the metadata, as a sender
		// leaves them.
		_, sendSpan := tr.Provider.Tracer("test").Start(context.Background(), "send")
		md := instrument.MetadataCarrier{}
		instrument.Of(tr.Telemetry).Propagator().Inject(trace.ContextWithSpan(context.Background(), sendSpan), md)
		sendSpan.End()
		tr.Exporter.Reset()
		traceparent := md["traceparent"]
		msg := kit.NewMessage("x", kit.WithMetadata("traceparent", traceparent), kit.WithMetadata("amqp.correlation_id", "conv-1"))
		h := &kit.Handler{Failures: 1, Err: ack.Permanent(errors.New("bad"))}
		kit.Run(msg, h.Func, kit.Must(middleware.Tracing(middleware.TracingConfig{Telemetry: tr.Telemetry})))
		spans := tr.Spans()
		if len(spans) != 1 {
			t.Fatalf("%d spans", len(spans))
		}
		s := spans[0]
		if s.Name != "process orders:work" || s.SpanKind != trace.SpanKindConsumer {
			t.Fatalf("span %q kind %v", s.Name, s.SpanKind)
		}
		if asParent {
			if s.Parent.SpanID() != sendSpan.SpanContext().SpanID() || len(s.Links) != 0 {
				t.Fatal("Parent: the producer span is not the parent")
			}
		} else if len(s.Links) != 1 || s.Links[0].SpanContext.SpanID() != sendSpan.SpanContext().SpanID() || s.Parent.IsValid() {
			t.Fatal("Link: the process span does not link to the producer span")
		}
		attrs := map[string]string{}
		for _, a := range s.Attributes {
			attrs[string(a.Key)] = a.Value.String()
		}
		for k, v := range map[string]string{
			"messaging.system": "rabbitmq", "messaging.operation.name": "process", "messaging.operation.type": "process",
			"messaging.destination.name": "orders:order.created:work", "messaging.destination.template": "orders:work",
			"messaging.rabbitmq.destination.routing_key": "order.created",
			"messaging.rabbitmq.message.delivery_tag":    "1", "messaging.message.id": "msg-1",
			"messaging.message.conversation_id": "conv-1", "error.type": "_OTHER", "messaging.consumer.group.name": "work",
		} {
			if attrs[k] != v {
				t.Errorf("attribute %s = %q, want %q", k, attrs[k], v)
			}
		}
		if s.Status.Code != codes.Error || len(s.Events) != 1 || s.Events[0].Name != "exception" {
			t.Error("failure without error status and exception event")
		}
		if tr.Counter(t, "messaging.client.consumed.messages") != 1 {
			t.Fatal("metrics not recorded")
		}
	}
}

// The whole stack: two in-process attempts, then a delayed retry; later the
// message comes back, fails through every level and is dead-lettered.
func TestFullStack(t *testing.T) {
	retryPub, dlPub := &kit.Publisher{}, &kit.Publisher{}
	tr := telemetrytest.New(t, telemetry.Config{})
	sl := &kit.Sleeper{}
	delayed, _ := middleware.DelayedRetry(middleware.DelayedRetryConfig{Publisher: retryPub, Levels: []time.Duration{time.Second}, Telemetry: tr.Telemetry})
	dead, _ := middleware.DeadLetter(middleware.DeadLetterConfig{Mode: middleware.PublishToDLQ, Publisher: dlPub, Telemetry: tr.Telemetry})
	stack := []message.HandlerMiddleware{
		kit.Must(middleware.Tracing(middleware.TracingConfig{Telemetry: tr.Telemetry})),
		kit.Must(middleware.Ack(middleware.AckConfig{})),
		dead, delayed,
		kit.Must(middleware.Retry(middleware.RetryConfig{MaxAttempts: 2, Sleep: sl.Sleep, Telemetry: tr.Telemetry})),
	}
	h := &kit.Handler{Failures: 100}
	r := kit.Run(kit.NewMessage("x"), h.Func, stack...)
	if r.Disposition != ack.Ack || h.Calls() != 2 || len(retryPub.Published()) != 1 || len(dlPub.Published()) != 0 {
		t.Fatalf("first delivery: %v, %d calls, %d retries, %d dead", r.Disposition, h.Calls(), len(retryPub.Published()), len(dlPub.Published()))
	}
	back := retryPub.Published()[0].Msg
	again := kit.NewMessage("x", kit.WithMetadata(middleware.HeaderRetryRound, back.Metadata.Get(middleware.HeaderRetryRound)),
		kit.WithMetadata(ack.AttemptHeader, back.Metadata.Get(ack.AttemptHeader)))
	r = kit.Run(again, h.Func, stack...)
	if r.Disposition != ack.Ack || len(dlPub.Published()) != 1 {
		t.Fatalf("after the last level: %v, %d dead letters", r.Disposition, len(dlPub.Published()))
	}
	if !strings.Contains(dlPub.Published()[0].Msg.Metadata.Get(middleware.HeaderDLError), "exhausted") {
		t.Fatal("dead letter does not say why")
	}
	if tr.Counter(t, "warren.retries") != 3 {
		t.Fatalf("retries counted %d, want 3 (2 in-process, 1 delayed)", tr.Counter(t, "warren.retries"))
	}
}
