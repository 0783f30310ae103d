package topology

import (
	"sync/atomic"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren/ack"
	"github.com/warrenmq/warren/conn"
)

// ErrAlreadySettled: a delivery was acked, nacked or rejected a second
// time; nothing was sent.
var ErrAlreadySettled = ack.NamedError("topology: delivery already settled", "already_settled")

// Delivery is one message a Consumer received, with what settling it needs
// to know about the channel it came on. Ack, Nack and Reject settle it at
// most once: consumers share channels, and a second settlement of a tag
// would close the channel of every consumer on it (406 unknown delivery
// tag), so a second call returns ErrAlreadySettled and sends nothing.
type Delivery struct {
	amqp.Delivery
	ch      *conn.Channel
	settled atomic.Bool
}

// Ack acknowledges the delivery (not multiple: consumers share channels).
func (d *Delivery) Ack() error {
	if !d.settled.CompareAndSwap(false, true) {
		return ErrAlreadySettled
	}
	return d.Delivery.Ack(false)
}

// Nack refuses the delivery; requeue puts it back in its queue.
func (d *Delivery) Nack(requeue bool) error {
	if !d.settled.CompareAndSwap(false, true) {
		return ErrAlreadySettled
	}
	return d.Delivery.Nack(false, requeue)
}

// Reject refuses the delivery; requeue puts it back in its queue, and
// without it the broker dead-letters it (or drops it without a dead-letter
// exchange).
func (d *Delivery) Reject(requeue bool) error {
	if !d.settled.CompareAndSwap(false, true) {
		return ErrAlreadySettled
	}
	return d.Delivery.Reject(requeue)
}

// Generation is the connection generation the delivery came on.
func (d *Delivery) Generation() uint64 { return d.ch.Generation() }

// Gone is closed when the channel the delivery came on is gone: its tag can
// no longer be settled, and the broker redelivers the message (PITFALLS 4).
func (d *Delivery) Gone() <-chan struct{} { return d.ch.Done() }

// Settleable reports whether the delivery's channel is still open.
func (d *Delivery) Settleable() bool { return d.ch.IsOpen() }
