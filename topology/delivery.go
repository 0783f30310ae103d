package topology

import (
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren/conn"
)

// Delivery is one message a Consumer received, with what settling it needs
// to know about the channel it came on. Settle it with the embedded
// amqp091 Delivery's Ack, Nack or Reject, exactly once: consumers share
// channels, and settling a delivery twice closes the channel of every
// consumer on it (406 unknown delivery tag).
type Delivery struct {
	amqp.Delivery
	ch *conn.Channel
}

// Generation is the connection generation the delivery came on.
func (d *Delivery) Generation() uint64 { return d.ch.Generation() }

// Gone is closed when the channel the delivery came on is gone: its tag can
// no longer be settled, and the broker redelivers the message (PITFALLS 4).
func (d *Delivery) Gone() <-chan struct{} { return d.ch.Done() }

// Settleable reports whether the delivery's channel is still open.
func (d *Delivery) Settleable() bool { return d.ch.IsOpen() }
