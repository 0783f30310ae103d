package broker_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren/internal/rabbittest"
)

// TestPitfallMultipleAckCrossesConsumers (PITFALLS 60), seen with the raw
// client, what broker's ackBatch guards against:
//   - a basic.ack with multiple settles every unacknowledged delivery of
//     the channel up to its tag, another consumer's too: consumer A's
//     message is gone though A never settled it;
//   - a multiple ack whose own tag is no longer outstanding closes the
//     channel (406), even with an unacknowledged delivery below it.
func TestPitfallMultipleAckCrossesConsumers(t *testing.T) {
	b := rabbittest.Shared(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	qa, qb := b.Name("multiple-a"), b.Name("multiple-b")
	ch := rabbittest.RawChannel(t, b.URL)
	for _, q := range []string{qa, qb} {
		if _, err := ch.QueueDeclare(q, true, false, false, false, nil); err != nil {
			t.Fatal(err)
		}
		if err := ch.PublishWithContext(ctx, "", q, true, false, amqp.Publishing{Body: []byte(q)}); err != nil {
			t.Fatal(err)
		}
	}
	// Published on this channel, the messages are in their queues before
	// the consumes below (the broker handles a channel's methods in order).
	next := func(msgs <-chan amqp.Delivery) amqp.Delivery {
		t.Helper()
		select {
		case d := <-msgs:
			return d
		case <-ctx.Done():
			t.Fatal("no delivery")
			return amqp.Delivery{}
		}
	}
	consume := func(q, tag string) <-chan amqp.Delivery {
		t.Helper()
		msgs, err := ch.Consume(q, tag, false, false, false, false, nil)
		if err != nil {
			t.Fatal(err)
		}
		return msgs
	}
	a := next(consume(qa, "a"))
	bd := next(consume(qb, "b"))
	if a.DeliveryTag != 1 || bd.DeliveryTag != 2 {
		t.Fatalf("tags %d and %d, want 1 and 2", a.DeliveryTag, bd.DeliveryTag)
	}
	if err := bd.Ack(true); err != nil { // B acks its own, with multiple
		t.Fatal(err)
	}
	if err := ch.Close(); err != nil { // A's delivery, were it unacked, goes back
		t.Fatal(err)
	}
	check := rabbittest.RawChannel(t, b.URL)
	st, err := check.QueueDeclarePassive(qa, true, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st.Messages != 0 {
		t.Fatalf("A's queue holds %d: B's multiple ack did not settle A's delivery", st.Messages)
	}

	// Two deliveries; the second acked alone, then named by a multiple ack.
	ch = rabbittest.RawChannel(t, b.URL)
	closed := ch.NotifyClose(make(chan *amqp.Error, 1))
	for range 2 {
		if err := ch.PublishWithContext(ctx, "", qa, true, false, amqp.Publishing{Body: []byte("again")}); err != nil {
			t.Fatal(err)
		}
	}
	msgs := consume(qa, "a2")
	next(msgs) // the first, left unacknowledged
	second := next(msgs)
	if err := second.Ack(false); err != nil {
		t.Fatal(err)
	}
	if err := ch.Ack(second.DeliveryTag, true); err != nil {
		t.Fatal(err)
	}
	select {
	case e := <-closed:
		var ae *amqp.Error
		if !errors.As(e, &ae) || ae.Code != amqp.PreconditionFailed || !strings.Contains(ae.Reason, "unknown delivery tag") {
			t.Fatalf("channel closed with %v, want 406 unknown delivery tag", e)
		}
	case <-ctx.Done():
		t.Fatal("a multiple ack of a tag already acked left the channel open")
	}
	// The channel's close gave back what it still held: the first, which
	// the refused multiple ack did not settle.
	rabbittest.Eventually(t, 10*time.Second, "the first delivery back in its queue", func() bool {
		st, err := check.QueueDeclarePassive(qa, true, false, false, false, nil)
		return err == nil && st.Messages == 1
	})
}
