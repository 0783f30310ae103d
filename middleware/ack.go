package middleware

import (
	"fmt"
	"runtime/debug"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/warrenmq/warren/ack"
	"github.com/warrenmq/warren/internal/configerr"
)

var (
	// ErrPanic wraps a panic recovered from a handler.
	ErrPanic = ack.NamedError("middleware: handler panicked", "panic")
)

// PanicError is a recovered panic with its stack.
type PanicError struct {
	Value any
	Stack string
}

func (e *PanicError) Error() string { return fmt.Sprintf("middleware: handler panicked: %v", e.Value) }

// Is makes PanicError match ErrPanic.
func (e *PanicError) Is(target error) bool { return target == ErrPanic }

// AckConfig shapes Ack.
type AckConfig struct {
	// OnError is the disposition of a failed message that is neither
	// Permanent nor AsRequeue. Default: ack.RejectRequeue (the Subscriber
	// redelivers it after a backoff, bounded, then dead-letters it; it
	// counts toward a quorum queue's delivery limit, unlike a plain
	// requeue).
	OnError ack.Disposition
	// OnPermanent is the disposition of an ack.Permanent error (and of a
	// recovered panic, which is Permanent). Default: ack.Reject, to the
	// queue's dead-letter exchange.
	OnPermanent ack.Disposition
}

func (c *AckConfig) setDefaults() {
	if c.OnError == ack.Unset {
		c.OnError = ack.RejectRequeue
	}
	if c.OnPermanent == ack.Unset {
		c.OnPermanent = ack.Reject
	}
}

// Validate reports every problem, each naming its field.
func (c *AckConfig) Validate() error {
	f := configerr.For("middleware.AckConfig")
	f.Check(!knownDisposition(c.OnError) || c.OnError == ack.Ack, "OnError", "want Requeue, Reject or RejectRequeue")
	f.Check(!knownDisposition(c.OnPermanent) || c.OnPermanent == ack.Ack, "OnPermanent", "want Requeue, Reject or RejectRequeue")
	return f.Err()
}

func knownDisposition(d ack.Disposition) bool {
	switch d {
	case ack.Ack, ack.Requeue, ack.Reject, ack.RejectRequeue:
		return true
	}
	return false
}

// Ack turns the handler's result into a disposition that the Subscriber
// applies when the router acks or nacks: success acks; ack.AsRequeue errors
// requeue; ack.Permanent errors take OnPermanent; other errors take
// OnError. A panic is recovered into a Permanent *PanicError. Dispositions a
// handler or an inner middleware set explicitly are kept.
func Ack(cfg AckConfig) (message.HandlerMiddleware, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) (out []*message.Message, err error) {
			ack.Track(msg)
			defer func() {
				if r := recover(); r != nil {
					out, err = nil, ack.Permanent(&PanicError{Value: r, Stack: string(debug.Stack())})
				}
				settleDisposition(msg, err, cfg)
			}()
			return h(msg)
		}
	}, nil
}

func settleDisposition(msg *message.Message, err error, cfg AckConfig) {
	if d, _ := ack.Get(msg); d != ack.Unset {
		if err == nil || d != ack.Ack {
			return // an explicit choice stands
		}
	}
	switch {
	case err == nil:
		ack.Set(msg, ack.Ack, nil)
	case ack.KindOf(err) == ack.RequeueKind:
		ack.Set(msg, ack.Requeue, err)
	case ack.KindOf(err) == ack.PermanentKind:
		ack.Set(msg, cfg.OnPermanent, err)
	default:
		ack.Set(msg, cfg.OnError, err)
	}
}

// ErrorType is "panic" (ack.ErrorType).
func (e *PanicError) ErrorType() string { return "panic" }
