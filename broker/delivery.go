package broker

import (
	"sync/atomic"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren/conn"
	"github.com/warrenmq/warren/internal/connx"
	"github.com/warrenmq/warren/internal/errkind"
)

// ErrAlreadySettled: a delivery was acked, nacked or rejected a second
// time; nothing was sent.
var ErrAlreadySettled = errkind.Named("broker: delivery already settled", "already_settled")

// Delivery is one message a Consumer received, with what settling it needs
// to know about the channel it came on. Ack, Nack and Reject settle it at
// most once: consumers share channels, and a second settlement of a tag
// would close the channel of every consumer on it (406 unknown delivery
// tag), so a second call returns ErrAlreadySettled and sends nothing.
//
// A delivery of a stream is settled with basic.ack whatever the call:
// RabbitMQ 3.10 answers a nack or a reject of a stream delivery, with or
// without requeue, with 540 NOT_IMPLEMENTED, which closes the whole
// connection (PITFALLS 35). On a stream a settlement only gives the consumer
// credit: the message stays in the stream, and where a reader resumes is
// its own record (warren's stream position), not the settlement.
//
// Ack may hold the ack back for a moment (at most a few milliseconds, and
// never past a quarter of the consumer's prefetch) to send it with others
// of its channel as one basic.ack (see ackBatch). The broker counts a held
// ack's message as unacknowledged: if the connection dies meanwhile it is
// redelivered, as any message in hand is. AckNow sends it before it
// returns.
type Delivery struct {
	amqp.Delivery
	ch *conn.Channel
	// acks is the channel's batch (nil: a Delivery no consumer made);
	// hold is how many acks its consumer may have held (holdLimit).
	acks    *ackBatch
	hold    int
	stream  bool
	settled atomic.Bool
}

// Ack acknowledges the delivery, perhaps a moment later with others of its
// channel (see Delivery).
func (d *Delivery) Ack() error {
	if !d.settled.CompareAndSwap(false, true) {
		return ErrAlreadySettled
	}
	if d.acks == nil || !d.ch.IsOpen() {
		// A channel gone refuses the ack (its message comes back), as
		// the caller must hear: a held ack would be lost without a word.
		return d.Delivery.Ack(false)
	}
	return d.acks.ack(&d.Delivery, d.hold)
}

// AckNow acknowledges the delivery and writes the ack before it returns:
// for a caller that acts on the ack having left (a claim check that
// deletes the message's blob once it is acked).
func (d *Delivery) AckNow() error {
	if !d.settled.CompareAndSwap(false, true) {
		return ErrAlreadySettled
	}
	if d.acks == nil || !d.ch.IsOpen() {
		return d.Delivery.Ack(false)
	}
	if d.hold < 2 {
		return d.acks.ack(&d.Delivery, d.hold) // nothing held: sent at once
	}
	return d.acks.ackNow(&d.Delivery)
}

// Nack refuses the delivery; requeue puts it back in its queue.
func (d *Delivery) Nack(requeue bool) error {
	if !d.settled.CompareAndSwap(false, true) {
		return ErrAlreadySettled
	}
	var err error
	if d.stream {
		err = d.Delivery.Ack(false)
	} else {
		err = d.Delivery.Nack(false, requeue)
	}
	d.settledAlone()
	return err
}

// settledAlone tells the channel's batch that the delivery's settlement
// went out on its own (after the write: see ackBatch).
func (d *Delivery) settledAlone() {
	if d.acks != nil {
		d.acks.sent(d.DeliveryTag)
	}
}

// Reject refuses the delivery; requeue puts it back in its queue, and
// without it the broker dead-letters it (or drops it without a dead-letter
// exchange).
func (d *Delivery) Reject(requeue bool) error {
	if !d.settled.CompareAndSwap(false, true) {
		return ErrAlreadySettled
	}
	var err error
	if d.stream {
		err = d.Delivery.Ack(false)
	} else {
		err = d.Delivery.Reject(requeue)
	}
	d.settledAlone()
	return err
}

// Generation is the connection generation the delivery came on (0 for a
// Delivery no consumer made).
func (d *Delivery) Generation() uint64 {
	if d.ch == nil {
		return 0
	}
	return connx.ChannelGeneration(d.ch)
}

// Gone is closed when the channel the delivery came on is gone: its tag can
// no longer be settled, and the broker redelivers the message (PITFALLS 4).
// A Delivery no consumer made has no channel: it is gone.
func (d *Delivery) Gone() <-chan struct{} {
	if d.ch == nil {
		return closedChan
	}
	return d.ch.Done()
}

// closedChan is the Gone of a Delivery without a channel.
var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// Settleable reports whether the delivery's channel is still open.
func (d *Delivery) Settleable() bool { return d.ch != nil && d.ch.IsOpen() }
