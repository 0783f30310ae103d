package warren

import (
	"log/slog"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/warrenmq/warren/ack"
	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/internal/instrument"
	"github.com/warrenmq/warren/internal/logx"
	"github.com/warrenmq/warren/internal/streampos"
)

// kind is what a subscription reads, chosen once at Subscribe: it decides
// what the subscription does where a queue and a stream differ (a queue
// requeues and dead-letters; a stream does neither and is read from a
// position).
type kind interface {
	// passedOver reports a delivery handled already (a stream consume that
	// resumed before its position): it is acked, not handed out.
	passedOver(d *broker.Delivery) bool
	// poison settles a delivery that cannot be decoded.
	poison(st *subscription, d *broker.Delivery)
	// finish settles a message its handler acked or nacked; it returns a
	// message to hand out again, with its attempts so far, or nil.
	finish(st *subscription, d *broker.Delivery, msg *message.Message, disp ack.Disposition, proc *instrument.Process) (*message.Message, int)
	// stopped is told once the subscription has stopped.
	stopped()
}

// queueKind reads a queue: the broker requeues and dead-letters.
type queueKind struct{}

func (queueKind) passedOver(*broker.Delivery) bool { return false }

// poison: it will never decode: to the dead-letter exchange at once, never
// back into the queue in a loop (watermill-amqp issues 65, 184); without a
// dead-letter exchange, never dropped either: back at a growing backoff.
func (queueKind) poison(st *subscription, d *broker.Delivery) {
	if st.hasDeadLetter() {
		st.settle(d, ack.Reject, nil)
		return
	}
	st.fail(d, nil, st.previousAttempts(d)+1, nil, true) // poison logged it
}

func (queueKind) finish(st *subscription, d *broker.Delivery, msg *message.Message, disp ack.Disposition, proc *instrument.Process) (*message.Message, int) {
	switch disp {
	case ack.Requeue:
		st.later(d, ack.Requeue, ack.Attempt(msg), proc)
	case ack.RejectRequeue:
		st.fail(d, msg, ack.Attempt(msg), proc, false)
	case ack.Reject:
		if st.deadLetterKnownMissing() {
			// The broker would drop it: a queue warren declared without a
			// dead-letter target has nowhere to put a rejected message.
			// Logged at Warn once per message, not per redelivery.
			attempt := ack.Attempt(msg)
			level := slog.LevelDebug
			if attempt <= 1 {
				level = slog.LevelWarn
			}
			_, why := ack.Get(msg)
			st.logMessage(level, "warren: a message was rejected, but its queue has no dead-letter exchange; kept and redelivered at the backoff instead of dropped",
				logx.Failure(msg.UUID, attempt, why)...)
			st.fail(d, msg, attempt, proc, true)
			return nil, 0
		}
		fallthrough
	default:
		st.forgetRedelivery(d)
		if st.settle(d, disp, proc) && disp == ack.Ack {
			st.acked(d)
		}
	}
	return nil, 0
}

func (queueKind) stopped() {}

// streamKind reads a stream from its position. A stream neither requeues
// nor dead-letters, and every delivery is settled with basic.ack (a nack or
// reject of a stream delivery closes the whole connection on RabbitMQ 3.10,
// PITFALLS 35).
type streamKind struct{ pos *streampos.Position }

// passedOver: a consume that resumes at an offset may start at the chunk
// that holds it (the stream protocol does; RabbitMQ 3.10 filters for AMQP
// 0-9-1, PITFALLS 36): what was acked before is passed over.
func (k streamKind) passedOver(d *broker.Delivery) bool {
	off, ok := streampos.OffsetOf(d.Headers)
	return ok && k.pos.Skip(off)
}

// poison: the message is passed over (it stays in the stream, and is
// logged by the subscription).
func (k streamKind) poison(st *subscription, d *broker.Delivery) {
	st.settle(d, ack.Ack, nil)
	k.ackedAt(d)
}

// finish: a nacked message is handed out again here, after the redelivery
// backoff, never lost and never spinning; a rejected one is passed over
// (logged), since nothing would ever take it.
func (k streamKind) finish(st *subscription, d *broker.Delivery, msg *message.Message, disp ack.Disposition, proc *instrument.Process) (*message.Message, int) {
	switch disp {
	case ack.Requeue, ack.RejectRequeue:
		attempts := ack.Attempt(msg)
		level := slog.LevelDebug
		if attempts <= 1 {
			level = slog.LevelInfo // once per message, not per attempt
		}
		_, why := ack.Get(msg)
		st.logMessage(level, "warren: handler failed; the stream's message is handled again after a backoff",
			append(logx.Failure(msg.UUID, attempts, why), "retry_in", st.s.cfg.Redelivery.delay(attempts))...)
		t := time.NewTimer(st.s.cfg.Redelivery.delay(attempts))
		defer t.Stop()
		select {
		case <-t.C:
		case <-st.stopping.Done():
			// Not acked: the next reader starts at it.
			return nil, 0
		case <-d.Gone():
			st.stale()
			return nil, 0
		}
		again, err := st.s.cfg.Marshaler.Unmarshal(&d.Delivery)
		if err != nil {
			st.poison(d, err)
			return nil, 0
		}
		return again, attempts
	case ack.Reject:
		_, why := ack.Get(msg)
		st.logMessage(slog.LevelError, "warren: a stream cannot dead-letter; the rejected message is passed over", logx.Failure(msg.UUID, ack.Attempt(msg), why)...)
	}
	st.settle(d, ack.Ack, proc)
	k.ackedAt(d)
	return nil, 0
}

func (k streamKind) ackedAt(d *broker.Delivery) {
	if off, ok := streampos.OffsetOf(d.Headers); ok {
		k.pos.AckedAt(off)
	}
}

// stopped writes the last position.
func (k streamKind) stopped() { k.pos.Close() }
