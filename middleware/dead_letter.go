package middleware

import (
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"strconv"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	wmw "github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"go.opentelemetry.io/otel/trace"

	"github.com/warrenmq/warren/ack"
	"github.com/warrenmq/warren/internal/configerr"
	"github.com/warrenmq/warren/internal/instrument"
	"github.com/warrenmq/warren/internal/logx"
	"github.com/warrenmq/warren/telemetry"
)

// DeadLetterMode is how DeadLetter gets rid of a message.
type DeadLetterMode int

const (
	// PublishToDLQ publishes a copy with diagnostic headers (the error, its
	// type, the attempts, the handler, the original exchange, routing key
	// and queue, a panic's stack) to a dead-letter queue, confirmed before
	// the original is acked. It needs nothing of the consumed queue's
	// arguments, so it works on any queue, whoever declared it. The
	// default.
	PublishToDLQ DeadLetterMode = iota
	// RejectToDLX rejects the delivery without requeue: the broker moves it
	// to the queue's dead-letter exchange, which the queue's arguments (or
	// a policy) must name and which must exist (PITFALLS 15). The broker's
	// x-death says only the reason ("rejected") and where it died: no
	// error, no handler.
	RejectToDLX
)

// String names the mode.
func (m DeadLetterMode) String() string {
	switch m {
	case PublishToDLQ:
		return "PublishToDLQ"
	case RejectToDLX:
		return "RejectToDLX"
	}
	return fmt.Sprintf("DeadLetterMode(%d)", int(m))
}

// DeadLetterEvent is passed to the terminal hook, once per dead-lettered
// message.
type DeadLetterEvent struct {
	Msg      *message.Message
	Err      error
	Mode     DeadLetterMode
	Attempts int
	// Topic is where PublishToDLQ sent it.
	Topic string
}

// DeadLetterConfig shapes DeadLetter.
type DeadLetterConfig struct {
	// Mode is how dead letters leave. Default: PublishToDLQ.
	Mode DeadLetterMode
	// Publisher publishes dead letters (PublishToDLQ): a warren.Publisher
	// with warren.ExistingQueues mapping, so Publish returns once confirmed.
	// Required with PublishToDLQ.
	Publisher message.Publisher
	// Topic is where a message goes (PublishToDLQ). Default: the consumed
	// queue's name + ".dlq".
	Topic func(msg *message.Message) string
	// HandlerName is written to the warren-dl-handler header.
	HandlerName string
	// MaxErrorLength truncates the error text header. Default: 1024 bytes.
	MaxErrorLength int
	// OnDeadLetter is the terminal hook, called once per dead-lettered
	// message, on the handler's goroutine.
	OnDeadLetter func(DeadLetterEvent)
	// Telemetry records the failure on the message's process span and
	// counts dead letters. Default: telemetry.Default().
	Telemetry *telemetry.Telemetry
	// Logger logs each dead letter once, at Warn (at Error for a panic,
	// with its stack), and a dead letter that could not be published (the
	// message is requeued) at Error, with the message's UUID, the attempt,
	// the error and its error.type. A poison delivery is logged by the
	// Subscriber that found it, not again here. Default: silent.
	Logger *slog.Logger
	// Now is the clock. Default: time.Now.
	Now func() time.Time
}

// DefaultDeadLetterTopic is the dead-letter queue of a work queue: the
// consumed queue's name (or Watermill's subscribe topic) + ".dlq"; "" for a
// nil message.
func DefaultDeadLetterTopic(msg *message.Message) string {
	if msg == nil {
		return ""
	}
	q := queueOf(msg)
	if q == "" {
		q = message.SubscribeTopicFromCtx(msg.Context())
	}
	return q + ".dlq"
}

// DeadLetter dead-letters every message whose handler failed (except
// ack.AsRequeue errors, which pass through to be requeued): with
// PublishToDLQ it publishes a copy with diagnostic headers (error text
// truncated, error type, attempts, first and last failure time, original
// exchange, routing key and queue, handler name, trace id, a panic's stack)
// and returns nil once that is confirmed; with RejectToDLX it sets the
// ack.Reject disposition and returns the error. A failed publish returns an
// ack.AsRequeue error, so the message is requeued, not lost. A panic of the
// handler (or of any middleware inside this one) is recovered here into a
// permanent *PanicError, so that it reaches the dead-letter queue like any
// other permanent failure, wherever DeadLetter sits in a stack.
func DeadLetter(cfg DeadLetterConfig) (message.HandlerMiddleware, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			out, err := recovered(h, msg)
			if err == nil || ack.KindOf(err) == ack.RequeueKind {
				return out, err
			}
			if dlErr := cfg.deadLetter(msg, err, true); dlErr != nil {
				return nil, dlErr
			}
			if cfg.Mode == RejectToDLX {
				return nil, err
			}
			return nil, nil
		}
	}, nil
}

// DeadLetterPoison dead-letters a message that never reached a handler (a
// poison delivery the Subscriber could not decode, rebuilt as a message
// from its raw body and headers) on the same path as DeadLetter. With
// RejectToDLX it does nothing but call the hook and returns an error, so
// the Subscriber rejects the delivery to the dead-letter exchange.
func DeadLetterPoison(cfg DeadLetterConfig) (func(msg *message.Message, cause error) error, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return func(msg *message.Message, cause error) error {
		ack.Track(msg)
		if err := cfg.deadLetter(msg, ack.Permanent(cause), false); err != nil {
			return err
		}
		if cfg.Mode == RejectToDLX {
			return cause
		}
		return nil
	}, nil
}

// recovered runs h, turning a panic into a permanent *PanicError with its
// stack.
func recovered(h message.HandlerFunc, msg *message.Message) (out []*message.Message, err error) {
	defer func() {
		if r := recover(); r != nil {
			out, err = nil, ack.Permanent(&PanicError{Value: r, Stack: string(debug.Stack())})
		}
	}()
	return h(msg)
}

// maxStackHeader bounds the stack a dead letter carries.
const maxStackHeader = 8192

func (c *DeadLetterConfig) setDefaults() {
	if c.Telemetry == nil {
		c.Telemetry = telemetry.Default()
	}
	if c.Topic == nil {
		c.Topic = DefaultDeadLetterTopic
	}
	if c.MaxErrorLength == 0 {
		c.MaxErrorLength = 1024
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	c.Logger = logx.Or(c.Logger)
}

// Validate reports every problem, each naming its field.
func (c *DeadLetterConfig) Validate() error {
	f := configerr.For("middleware.DeadLetterConfig")
	f.Check(c.Mode != RejectToDLX && c.Mode != PublishToDLQ, "Mode", fmt.Sprintf("%d unknown", c.Mode))
	f.Check(c.Mode == PublishToDLQ && c.Publisher == nil, "Publisher", "required with PublishToDLQ (the default Mode); or set Mode to RejectToDLX")
	f.Check(c.MaxErrorLength < 0, "MaxErrorLength", "must not be negative")
	return f.Err()
}

// deadLetter dead-letters msg for err; logged says whether to log it (a
// poison delivery's line is the Subscriber's).
func (c *DeadLetterConfig) deadLetter(msg *message.Message, err error, logged bool) error {
	attempts := ack.Attempt(msg)
	ev := DeadLetterEvent{Msg: msg, Err: err, Mode: c.Mode, Attempts: attempts}
	if c.Mode == RejectToDLX {
		ack.Set(msg, ack.Reject, err)
	} else {
		dl := ack.Copy(msg)
		now := c.Now().UTC().Format(time.RFC3339Nano)
		text := err.Error()
		if len(text) > c.MaxErrorLength {
			text = text[:c.MaxErrorLength] + "...(truncated)"
		}
		info, _ := ack.InfoOf(msg)
		exchange, key := info.Exchange, info.RoutingKey
		if v := msg.Metadata.Get(ack.HeaderOriginalExchange); v != "" || msg.Metadata.Get(ack.HeaderOriginalRoutingKey) != "" {
			exchange, key = v, msg.Metadata.Get(ack.HeaderOriginalRoutingKey)
		}
		first := msg.Metadata.Get(HeaderFirstFailure)
		if first == "" {
			first = now
		}
		set := dl.Metadata.Set
		set(HeaderDLError, text)
		set(HeaderDLErrorType, ack.ErrorType(err))
		set(HeaderDLAttempts, strconv.Itoa(attempts))
		set(HeaderDLFirstFail, first)
		set(HeaderDLLastFail, now)
		set(HeaderDLExchange, exchange)
		set(HeaderDLRoutingKey, key)
		set(HeaderDLQueue, info.Queue)
		set(HeaderDLHandler, c.HandlerName)
		if sc := trace.SpanContextFromContext(msg.Context()); sc.HasTraceID() {
			set(HeaderDLTraceID, sc.TraceID().String())
		}
		var pe *PanicError
		if errors.As(err, &pe) {
			stack := pe.Stack
			if len(stack) > maxStackHeader {
				stack = stack[:maxStackHeader] + "...(truncated)"
			}
			set(HeaderDLStack, stack)
		}
		// Watermill's poison metadata beside warren's own, so Watermill's
		// tools (components/requeuer) read a warren dead letter too.
		setPoisonMetadata(dl, msg, text, info.Queue, c.HandlerName)
		ev.Topic = c.Topic(msg)
		if perr := c.Publisher.Publish(ev.Topic, dl); perr != nil {
			c.Logger.Error("warren: message failed and its dead letter could not be published; the message is requeued",
				append(logx.Failure(msg.UUID, attempts, err), "dead_letter_queue", ev.Topic, "publish_error", perr)...)
			return ack.AsRequeue(fmt.Errorf("middleware: dead-letter publish to %s failed (%w) after: %w", ev.Topic, perr, err))
		}
	}
	mode := "reject"
	if c.Mode == PublishToDLQ {
		mode = "publish"
	}
	if logged {
		c.logDeadLetter(msg, err, ev)
	}
	instrument.RecordFailure(msg.Context(), err, attempts)
	instrument.Of(c.Telemetry).DeadLetter(msg.Context(), mode, queueOf(msg))
	if c.OnDeadLetter != nil {
		c.OnDeadLetter(ev)
	}
	return nil
}

// logDeadLetter logs a dead letter: at Warn, or at Error with the stack
// for a panic (a bug, not a bad message).
func (c *DeadLetterConfig) logDeadLetter(msg *message.Message, err error, ev DeadLetterEvent) {
	attrs := append(logx.Failure(msg.UUID, ev.Attempts, err), "mode", ev.Mode.String())
	if ev.Topic != "" {
		attrs = append(attrs, "dead_letter_queue", ev.Topic)
	}
	var pe *PanicError
	if errors.As(err, &pe) {
		c.Logger.Error("warren: handler panicked; message dead-lettered", append(attrs, "stack", pe.Stack)...)
		return
	}
	c.Logger.Warn("warren: message dead-lettered", attrs...)
}

// setPoisonMetadata writes Watermill's poison metadata
// (message/router/middleware.PoisonQueue's keys) on dl: the reason, the
// topic the message came from (Watermill's subscribe topic when a
// Watermill router ran the handler, else the queue: the topic a
// warren.ExistingQueues publisher sends it back to), the handler and the
// subscriber.
func setPoisonMetadata(dl, msg *message.Message, reason, queue, handler string) {
	ctx := msg.Context()
	topic := message.SubscribeTopicFromCtx(ctx)
	if topic == "" {
		topic = queue
	}
	if handler == "" {
		handler = message.HandlerNameFromCtx(ctx)
	}
	subscriber := message.SubscriberNameFromCtx(ctx)
	if subscriber == "" {
		subscriber = "warren.Subscriber"
	}
	dl.Metadata.Set(wmw.ReasonForPoisonedKey, reason)
	dl.Metadata.Set(wmw.PoisonedTopicKey, topic)
	dl.Metadata.Set(wmw.PoisonedHandlerKey, handler)
	dl.Metadata.Set(wmw.PoisonedSubscriberKey, subscriber)
}
