package warren_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/warrenmq/warren"
	"github.com/warrenmq/warren/internal/rabbittest"
)

// PITFALLS 54: a Watermill message's Ack only closes a channel; the
// basic.ack is sent afterwards, by the subscriber's goroutine. A consumer
// that closes its AMQP connection as soon as the last Ack returns gets
// back what it acked but had not sent yet (the bench's raw Watermill
// loop left 1 message of 300 in its queue this way). warren's Subscriber
// sends every ack it was given before Close returns: the subscription's
// stop waits for the consumer's handler goroutines to settle, and
// the connection's coalescing writer sends what it accepted before it
// closes.
func TestPitfallAcksGivenBeforeCloseReachTheBroker(t *testing.T) {
	b := rabbittest.Shared(t)
	const n = 300
	for _, inFlight := range []int{1, 8} {
		t.Run(fmt.Sprintf("MaxInFlight %d", inFlight), func(t *testing.T) {
			c := openConn(t, b.URL)
			m := warren.QueuePerTopic{Prefix: b.Prefix}
			topic := fmt.Sprintf("ack-then-close-%d", inFlight)
			pub, err := warren.NewPublisher(c, warren.PublisherConfig{Mapping: m})
			if err != nil {
				t.Fatal(err)
			}
			defer pub.Close()
			sub, err := warren.NewSubscriber(c, warren.SubscriberConfig{Mapping: m, MaxInFlight: inFlight})
			if err != nil {
				t.Fatal(err)
			}
			out, err := sub.Subscribe(ctxT(t, 30*time.Second), topic)
			if err != nil {
				t.Fatal(err)
			}
			msgs := make([]*message.Message, n)
			for i := range msgs {
				msgs[i] = message.NewMessage(fmt.Sprint(i), []byte("x"))
			}
			if err := pub.Publish(topic, msgs...); err != nil {
				t.Fatal(err)
			}
			for range n {
				receive(t, out).Ack()
			}
			// At once: the last acks are still on their way.
			if err := sub.Close(); err != nil {
				t.Fatal(err)
			}
			// Whatever was not acked now goes back to the queue.
			if err := c.Close(ctxT(t, 10*time.Second)); err != nil {
				t.Fatal(err)
			}
			ch := rabbittest.RawChannel(t, b.URL)
			q, err := ch.QueueDeclarePassive(b.Prefix+topic, true, false, false, false, nil)
			if err != nil {
				t.Fatal(err)
			}
			if q.Messages != 0 || q.Consumers != 0 {
				t.Fatalf("after Close: %d messages back in the queue, %d consumers; want none", q.Messages, q.Consumers)
			}
		})
	}
}
