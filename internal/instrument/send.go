package instrument

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/warrenmq/warren/internal/errkind"
)

var (
	producerKind = trace.WithSpanKind(trace.SpanKindProducer)
	clientKind   = trace.WithSpanKind(trace.SpanKindClient)
	consumerKind = trace.WithSpanKind(trace.SpanKindConsumer)
)

// Outgoing is one message of a send.
type Outgoing struct {
	// Ctx is the message's own context: its span is the parent of the
	// message's send (or create) span.
	Ctx           context.Context
	MessageID     string
	CorrelationID string
	// Headers points at the AMQP headers the message goes out with: the
	// span's trace context is written into them (replacing any the message
	// carried, so that a republished copy continues from its republish),
	// the table made only when there is something to write.
	Headers *map[string]any
	// BodySize is messaging.message.body.size: the body's bytes as sent.
	BodySize int
}

// Send is a send operation in flight: the spans and the start time of one
// Publish call.
type Send struct {
	t     *Instruments
	ctx   context.Context
	dst   *described
	span  trace.Span
	n     int
	start time.Time
	errs  map[int]error
	// quiet: no measurement is taken (otel's global meter delegate with no
	// provider set when the send started).
	quiet bool
}

// noSend is the Send of a send nothing records: every method of a Send
// that holds no messages does nothing, so one value serves all of them.
var noSend = &Send{}

// StartSend starts the spans of sending msgs to dest through peer, by the
// conventions' shapes: one message is one "send" span (PRODUCER), whose
// context the message carries; a batch is one "create" span (PRODUCER) per
// message, carried by it, and one "send" span (CLIENT) with
// messaging.batch.message_count, linked to every create span. ctx is the
// Publish call's context: a batch's send span is its child when it has a
// span, else a child of the first message's. memo, when not nil, is the
// sender's cache of its last destination (a Publisher's).
func (t *Instruments) StartSend(ctx context.Context, peer Peer, dest Destination, msgs []Outgoing, memo *Memo) *Send {
	if t.off || len(msgs) == 0 {
		return noSend
	}
	if !t.tracing() {
		// Nothing would record the spans: the metrics only, and the
		// messages carry their own context on.
		for _, m := range msgs {
			t.propagator.Inject(m.Ctx, lazyHeaderCarrier{m.Headers})
		}
		if !t.metering() {
			return noSend
		}
		s := &Send{t: t, n: len(msgs), start: time.Now()}
		s.dst = t.dests.remembered(memo, opSend, dest, peer)
		s.ctx, s.span = ctx, trace.SpanFromContext(msgs[0].Ctx)
		return s
	}
	s := &Send{t: t, n: len(msgs), start: time.Now(), quiet: !t.metering()}
	if len(msgs) == 1 {
		s.dst = t.dests.remembered(memo, opSend, dest, peer)
		s.ctx, s.span = t.tracer.Start(msgs[0].Ctx, s.dst.spanName, s.dst.spanStart...)
		setMessageAttributes(s.span, msgs[0])
		t.propagator.Inject(s.ctx, lazyHeaderCarrier{msgs[0].Headers})
		return s
	}
	create := t.dests.get(opCreate, dest, peer)
	s.dst = t.dests.remembered(memo, opSend, dest, peer)
	links := make([]trace.Link, 0, len(msgs))
	for _, m := range msgs {
		mctx, span := t.tracer.Start(m.Ctx, create.spanName, create.spanStart...)
		setMessageAttributes(span, m)
		t.propagator.Inject(mctx, lazyHeaderCarrier{m.Headers})
		span.End()
		if sc := span.SpanContext(); sc.IsValid() {
			links = append(links, trace.Link{SpanContext: sc})
		}
	}
	parent := ctx
	if !trace.SpanContextFromContext(ctx).IsValid() {
		parent = msgs[0].Ctx
	}
	attrs := append(s.dst.spanAttrs[:len(s.dst.spanAttrs):len(s.dst.spanAttrs)],
		attribute.Int("messaging.batch.message_count", len(msgs)))
	s.ctx, s.span = t.tracer.Start(parent, s.dst.spanName, clientKind, trace.WithAttributes(attrs...), trace.WithLinks(links...))
	return s
}

// setMessageAttributes gives a span that records m's own attributes; a
// span not sampled gets none, so a message not sampled builds none (the
// destination's, given at the start, are the ones samplers read).
func setMessageAttributes(span trace.Span, m Outgoing) {
	if span.IsRecording() {
		span.SetAttributes(messageAttributes(nil, m.MessageID, m.CorrelationID, m.BodySize)...)
	}
}

// messageAttributes are attrs plus the per-message ones.
func messageAttributes(attrs []attribute.KeyValue, id, correlationID string, bodySize int) []attribute.KeyValue {
	out := make([]attribute.KeyValue, len(attrs), len(attrs)+3)
	copy(out, attrs)
	out = append(out, attribute.Int("messaging.message.body.size", bodySize))
	if id != "" {
		out = append(out, attribute.String("messaging.message.id", id))
	}
	if correlationID != "" {
		out = append(out, attribute.String("messaging.message.conversation_id", correlationID))
	}
	return out
}

// Fail records that message i of the send failed with err.
func (s *Send) Fail(i int, err error) {
	if err == nil || s.n == 0 {
		return
	}
	if s.errs == nil {
		s.errs = map[int]error{}
	}
	s.errs[i] = err
}

// End ends the send: every message not failed with Fail succeeded, unless
// err (a failure of the whole call) is set. It records
// messaging.client.sent.messages per message and
// messaging.client.operation.duration once, in the send span's context
// (exemplars point at it).
func (s *Send) End(err error) {
	if s.n == 0 {
		return
	}
	elapsed := time.Since(s.start).Seconds()
	first := err
	for i := 0; i < s.n; i++ {
		e := err
		if e == nil {
			e = s.errs[i]
		}
		if first == nil {
			first = e
		}
		if !s.quiet {
			s.t.sent.Add(s.ctx, 1, s.dst.withError(false, errkind.Type(e)).add...)
		}
	}
	errType := errkind.Type(first)
	if first != nil {
		s.span.RecordError(first)
		s.span.SetStatus(codes.Error, first.Error())
		s.span.SetAttributes(attribute.String("error.type", errType))
	}
	s.span.End()
	if !s.quiet {
		s.t.opDuration.Record(s.ctx, elapsed, s.dst.withError(true, errType).record...)
	}
}

// TraceParent is the context a message's send span starts under: the
// message's own when it carries a span (Watermill's way of passing one),
// else the caller's (a Requester's Request ctx).
func TraceParent(msg, caller context.Context) context.Context {
	if msg != nil && trace.SpanContextFromContext(msg).IsValid() {
		return msg
	}
	return caller
}
