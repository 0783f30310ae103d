package instrument

import (
	"context"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/warrenmq/warren/internal/errkind"
)

// Incoming is one delivered message.
type Incoming struct {
	Destination   Destination
	MessageID     string
	CorrelationID string
	// DeliveryTag is messaging.rabbitmq.message.delivery_tag; 0 when the
	// message did not come from a delivery.
	DeliveryTag uint64
	// Headers carry the sender's trace context: AMQP headers, or a
	// MetadataCarrier's map converted.
	Headers map[string]any
	// Metadata is read instead of Headers when Headers is nil (a message
	// that did not come from a warren Subscriber).
	Metadata map[string]string
	// BodySize is messaging.message.body.size: the body's bytes as
	// delivered (the payload's, for a message without a delivery).
	BodySize int
	// Memo, when set, is the caller's cache of its last destination
	// (a subscription's).
	Memo *Memo
}

// Process is the processing of one message: its process span, then its
// settle span. Safe for concurrent use: a middleware may record a failure
// while the subscriber settles.
type Process struct {
	// Context is the message's context (its span, the sender's baggage);
	// the Process is a context itself, the one the handler runs with, with
	// itself as a value (FromContext): one allocation per message, not two.
	context.Context
	t    *Instruments
	span trace.Span
	// dst is the process operation on the message's destination through
	// its peer; its settles are the settle operations'.
	dst   *described
	tag   uint64
	start time.Time
	// recording: the process span records (IsRecording is false once it
	// ends, before its settle span starts).
	recording bool
	// quiet: no measurement is taken for this message (otel's global
	// meter delegate with no provider set when it started).
	quiet bool

	mu     sync.Mutex
	failed error
	ended  bool
}

type processKey struct{}

// Value is the Process for processKey, its context's values otherwise.
func (p *Process) Value(key any) any {
	if _, ok := key.(processKey); ok {
		return p
	}
	return p.Context.Value(key)
}

func (p *Process) String() string { return "instrument.Process" }

// FromContext is the Process of the message whose context ctx is, nil when
// there is none.
func FromContext(ctx context.Context) *Process {
	p, _ := ctx.Value(processKey{}).(*Process)
	return p
}

type receivedKey struct{}

// Received marks a subscription's base context: every message whose context
// derives from it went through t's StartProcess when it was received (its
// Process is in its context, or nothing records with t and the sender's
// trace context and baggage are). Made once per subscription, so a message
// pays no allocation for it.
func (t *Instruments) Received(ctx context.Context) context.Context {
	return context.WithValue(ctx, receivedKey{}, t)
}

// ReceivedWith reports whether ctx's message went through t's StartProcess
// when it was received (Received): starting it again with t would only
// extract the same trace context a second time.
func ReceivedWith(ctx context.Context, t *Instruments) bool {
	r, _ := ctx.Value(receivedKey{}).(*Instruments)
	return r != nil && r == t
}

// StartProcess starts the process span of in (CONSUMER, "process
// {destination}") as a child or a link of the sender's span, as the
// Telemetry's Relation says, and records messaging.client.consumed.messages.
// The returned context carries the span, the sender's baggage and the
// Process (FromContext): the message's handler runs with it. When nothing
// would record the message (no tracer or meter provider set), there is no
// Process: the context carries the sender's trace context and baggage only,
// and the nil *Process's methods do nothing.
func (t *Instruments) StartProcess(ctx context.Context, peer Peer, in Incoming) (context.Context, *Process) {
	if t.off {
		return ctx, nil // every method of a nil *Process does nothing
	}
	tracing, quiet := t.tracing(), !t.metering()
	var carrier propagation.TextMapCarrier
	switch {
	case in.Headers != nil:
		carrier = headerCarrier(in.Headers)
	case in.Metadata != nil:
		carrier = MetadataCarrier(in.Metadata)
	}
	// The span starts with the destination's attributes (precomputed; the
	// ones the conventions name for sampling); the message's own are added
	// only to a span that records, so a message not sampled builds none.
	parent := ctx
	var link trace.SpanContext
	if carrier != nil {
		sent := t.propagator.Extract(context.Background(), carrier)
		if b := baggage.FromContext(sent); b.Len() > 0 {
			parent = baggage.ContextWithBaggage(parent, b)
		}
		if sc := trace.SpanContextFromContext(sent); sc.IsValid() {
			if !t.link {
				parent = trace.ContextWithRemoteSpanContext(parent, sc)
			} else {
				link = sc
			}
		}
	}
	if !tracing && quiet {
		// Nothing would record this message (otel's global delegates with
		// no provider set): no Process, as StartSend makes no Send; the
		// sender's trace context (and baggage) passes through to what the
		// handler publishes.
		return parent, nil
	}
	p := &Process{t: t, tag: in.DeliveryTag, quiet: quiet,
		dst: t.dests.remembered(in.Memo, opProcess, in.Destination, peer)}
	if !quiet {
		p.start = time.Now()
	}
	if tracing {
		opts := p.dst.spanStart
		if link.IsValid() {
			opts = append(opts[:len(opts):len(opts)], trace.WithLinks(trace.Link{SpanContext: link}))
		}
		ctx, p.span = t.tracer.Start(parent, p.dst.spanName, opts...)
	} else {
		// Nothing would record it: the sender's trace context (and
		// baggage) passes through to what the handler publishes.
		ctx, p.span = parent, trace.SpanFromContext(parent)
	}
	if p.recording = p.span.IsRecording(); p.recording {
		attrs := messageAttributes(nil, in.MessageID, in.CorrelationID, in.BodySize)
		if in.DeliveryTag != 0 {
			attrs = append(attrs, attribute.Int64("messaging.rabbitmq.message.delivery_tag", int64(in.DeliveryTag)))
		}
		p.span.SetAttributes(attrs...)
	}
	p.Context = ctx
	if !p.quiet {
		t.consumed.Add(p, 1, p.dst.countOpts.add...)
	}
	return p, p
}

// FailAttempt records a failed attempt that will be tried again: an
// exception event on the process span (with warren.attempt and
// error.type), and nothing else. Per the conventions error.type and the
// Error status say the operation failed; a message that recovers on a
// later attempt did not, so its span and messaging.process.duration say
// success.
func (p *Process) FailAttempt(err error, attempt int) {
	if p == nil || err == nil {
		return
	}
	p.span.RecordError(err, trace.WithAttributes(attemptAttributes(err, attempt)...))
}

// Fail records that the processing failed: the exception event of the
// last attempt, the Error status and error.type, even when the message is
// then acked: a message sent to a delay queue or the dead-letter queue
// failed its processing. The process span's end and
// messaging.process.duration carry the last failure recorded.
func (p *Process) Fail(err error, attempt int) {
	if p == nil || err == nil {
		return
	}
	p.mu.Lock()
	p.failed = err
	p.mu.Unlock()
	p.span.RecordError(err, trace.WithAttributes(attemptAttributes(err, attempt)...))
	p.span.SetStatus(codes.Error, err.Error())
	p.span.SetAttributes(attribute.String("error.type", errkind.Type(err)))
}

func attemptAttributes(err error, attempt int) []attribute.KeyValue {
	attrs := []attribute.KeyValue{attribute.String("error.type", errkind.Type(err))}
	if attempt > 0 {
		attrs = append(attrs, attribute.Int("warren.attempt", attempt))
	}
	return attrs
}

// RecordAttemptFailure records a failed attempt that will be retried on
// the Process of ctx (FailAttempt), or, for a message that has none, as an
// exception event on ctx's span; attempt (0 when unknown) goes on the
// event.
func RecordAttemptFailure(ctx context.Context, err error, attempt int) {
	if err == nil {
		return
	}
	if p := FromContext(ctx); p != nil {
		p.FailAttempt(err, attempt)
		return
	}
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		span.RecordError(err, trace.WithAttributes(attemptAttributes(err, attempt)...))
	}
}

// RecordFailure records that the processing failed on the Process of ctx
// (Fail), or, for a message that has none, on ctx's span; attempt (0 when
// unknown) goes on the exception event.
func RecordFailure(ctx context.Context, err error, attempt int) {
	if err == nil {
		return
	}
	if p := FromContext(ctx); p != nil {
		p.Fail(err, attempt)
		return
	}
	span := trace.SpanFromContext(ctx)
	if !span.IsRecording() {
		return
	}
	span.RecordError(err, trace.WithAttributes(attemptAttributes(err, attempt)...))
	span.SetStatus(codes.Error, err.Error())
	span.SetAttributes(attribute.String("error.type", errkind.Type(err)))
}

// End ends the process span once the handler is done with the message
// (acked or nacked it), and records messaging.process.duration. err is the
// outcome: nil for a message acked, the handler's error for one nacked;
// a failure recorded with Fail stands when err is nil. Once only.
func (p *Process) End(err error) {
	if p == nil {
		return
	}
	p.mu.Lock()
	if p.ended {
		p.mu.Unlock()
		return
	}
	p.ended = true
	failed := p.failed
	p.mu.Unlock()
	if err != nil && failed == nil {
		p.span.RecordError(err, trace.WithAttributes(attribute.String("error.type", errkind.Type(err))))
		p.span.SetStatus(codes.Error, err.Error())
		p.span.SetAttributes(attribute.String("error.type", errkind.Type(err)))
		failed = err
	}
	p.span.End()
	if !p.quiet {
		p.t.processDuration.Record(p, time.Since(p.start).Seconds(), p.dst.withError(true, errkind.Type(failed)).record...)
	}
}

// SettleOp is how a message is settled.
type SettleOp int

// The settlements, named as the conventions' messaging.operation.name.
const (
	Ack           SettleOp = iota // basic.ack
	NackRequeue                   // basic.nack with requeue
	Reject                        // basic.reject without requeue: dead-lettered by the broker
	RejectRequeue                 // basic.reject with requeue
)

func (o SettleOp) op() op {
	switch o {
	case NackRequeue:
		return opNack
	case Reject, RejectRequeue:
		return opReject
	}
	return opAck
}

// Settle records the settlement of the message: a settle span (CLIENT,
// "ack {destination}") under the process span, and
// messaging.client.operation.duration. err is the settlement's own error.
// The process span is ended first if it is not yet.
func (p *Process) Settle(o SettleOp, err error, start time.Time) {
	if p == nil {
		return
	}
	p.End(nil)
	if p.quiet && !p.recording {
		return
	}
	dst := p.dst.settle(&p.t.dests, o.op())
	errType := errkind.Type(err)
	if !p.recording {
		// The settle span lives under its process span: none for a
		// message not sampled.
		p.t.opDuration.Record(p, time.Since(start).Seconds(), dst.withError(true, errType).record...)
		return
	}
	attrs := dst.spanAttrs
	if p.tag != 0 {
		attrs = append(attrs[:len(attrs):len(attrs)], attribute.Int64("messaging.rabbitmq.message.delivery_tag", int64(p.tag)))
	}
	if o == NackRequeue || o == RejectRequeue {
		attrs = append(attrs[:len(attrs):len(attrs)], attribute.Bool("warren.requeue", true))
	}
	ctx, span := p.t.tracer.Start(p, dst.spanName, clientKind, trace.WithTimestamp(start), trace.WithAttributes(attrs...))
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
		span.SetAttributes(attribute.String("error.type", errType))
	}
	span.End()
	if !p.quiet {
		p.t.opDuration.Record(ctx, time.Since(start).Seconds(), dst.withError(true, errType).record...)
	}
}
