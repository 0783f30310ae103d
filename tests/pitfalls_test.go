package tests

import (
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren/internal/rabbittest"
)

// The broker behaviours behind PITFALLS 32 and 33, shown on raw amqp091
// channels: warren's partitioned topics are built on them, and these tests
// say so the day a RabbitMQ release changes them.

// sacQueue declares a single-active-consumer quorum queue holding 1..n.
func sacQueue(t *testing.T, b *rabbittest.Broker, base string, n int) string {
	t.Helper()
	return filledQueue(t, b, base, amqp.Table{"x-queue-type": "quorum", "x-single-active-consumer": true}, n)
}

// filledQueue declares a durable queue with args and publishes 1..n to it,
// each confirmed.
func filledQueue(t *testing.T, b *rabbittest.Broker, base string, args amqp.Table, n int) string {
	t.Helper()
	ch := rabbittest.RawChannel(t, b.URL)
	q := b.Name(base)
	if _, err := ch.QueueDeclare(q, true, false, false, false, args); err != nil {
		t.Fatal(err)
	}
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= n; i++ {
		c, err := ch.PublishWithDeferredConfirm("", q, false, false, amqp.Publishing{Body: []byte(strconv.Itoa(i))})
		if err != nil || !c.Wait() {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	return q
}

// consumeRaw starts a consumer with prefetch 1 on its own connection.
func consumeRaw(t *testing.T, b *rabbittest.Broker, q, tag string) (*amqp.Channel, <-chan amqp.Delivery) {
	t.Helper()
	ch := rabbittest.RawChannel(t, b.URL)
	if err := ch.Qos(1, 0, false); err != nil {
		t.Fatal(err)
	}
	d, err := ch.Consume(q, tag, false, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	return ch, d
}

func next(t *testing.T, d <-chan amqp.Delivery, who string) int {
	t.Helper()
	select {
	case m := <-d:
		n, _ := strconv.Atoi(string(m.Body))
		_ = m.Ack(false)
		return n
	case <-time.After(10 * time.Second):
		t.Fatalf("%s got nothing", who)
		return 0
	}
}

// PITFALLS 33: a single-active-consumer queue activates the next consumer
// at basic.cancel, while the cancelled one still holds a message: the next
// consumer gets message 2 with message 1 unsettled. Closing the channel
// instead returns what it held first: the next consumer starts at 1.
func TestPitfallSingleActiveConsumerSwitchesAtCancel(t *testing.T) {
	b := rabbittest.Shared(t)

	q := sacQueue(t, b, "sac-cancel", 3)
	chA, dA := consumeRaw(t, b, q, "A")
	_, dB := consumeRaw(t, b, q, "B")
	held := <-dA // 1, in the first consumer's hand
	if err := chA.Cancel("A", false); err != nil {
		t.Fatal(err)
	}
	if n := next(t, dB, "the next consumer"); n != 2 {
		t.Fatalf("after the cancel the next consumer got %d first, want 2 (the broker no longer switches at basic.cancel?)", n)
	}
	_ = held.Nack(false, true) // 1 comes back now, behind 2 (and maybe 3)
	if n, m := next(t, dB, "the next consumer"), next(t, dB, "the next consumer"); n != 1 && m != 1 {
		t.Fatalf("then %d and %d, want the requeued 1 among them", n, m)
	}

	q = sacQueue(t, b, "sac-close", 3)
	chA, dA = consumeRaw(t, b, q, "A")
	_, dB = consumeRaw(t, b, q, "B")
	<-dA // 1, held
	if err := chA.Close(); err != nil {
		t.Fatal(err)
	}
	if n := next(t, dB, "the next consumer"); n != 1 {
		t.Fatalf("after the channel closed the next consumer got %d first, want the returned 1", n)
	}
}

// PITFALLS 48: on RabbitMQ 3.10 a quorum queue with no delivery limit puts
// a nacked message behind the backlog; with a delivery limit, or on a
// classic queue, it comes back first; a closed channel returns what it held
// first on a quorum queue too.
func TestPitfallQuorumRequeueGoesToTheBack(t *testing.T) {
	t.Parallel()
	b := rabbittest.Shared(t)
	for _, tc := range []struct {
		name  string
		args  amqp.Table
		close bool // give back by closing the channel instead of nacking
		first int  // the first message the next consume gets
	}{
		{"quorum", amqp.Table{"x-queue-type": "quorum"}, false, 4},
		{"quorum-limit", amqp.Table{"x-queue-type": "quorum", "x-delivery-limit": int64(100)}, false, 1},
		{"classic", amqp.Table{"x-queue-type": "classic"}, false, 1},
		{"quorum-close", amqp.Table{"x-queue-type": "quorum"}, true, 1},
	} {
		q := filledQueue(t, b, "requeue-"+tc.name, tc.args, 6)
		held := rabbittest.RawChannel(t, b.URL)
		if err := held.Qos(3, 0, false); err != nil {
			t.Fatal(err)
		}
		d, err := held.Consume(q, "held", false, false, false, false, nil)
		if err != nil {
			t.Fatal(err)
		}
		var got []amqp.Delivery
		for range 3 {
			select {
			case m := <-d:
				got = append(got, m)
			case <-time.After(10 * time.Second):
				t.Fatalf("%s: the consumer got %d of its 3", tc.name, len(got))
			}
		}
		var again <-chan amqp.Delivery
		if tc.close {
			if err := held.Close(); err != nil {
				t.Fatal(err)
			}
			// The queue takes the close's return in a moment: all six ready.
			rabbittest.Eventually(t, 20*time.Second, tc.name+": 1-3 back", func() bool {
				ready, unacked, err := b.Messages(q)
				return err == nil && ready == 6 && unacked == 0
			})
			_, again = consumeRaw(t, b, q, "again")
		} else {
			if err := held.Cancel("held", false); err != nil {
				t.Fatal(err)
			}
			for _, m := range got {
				if err := m.Nack(false, true); err != nil {
					t.Fatal(err)
				}
			}
			// Consumed again on the same channel: the broker takes the
			// nacks before this consume.
			if again, err = held.Consume(q, "again", false, false, false, false, nil); err != nil {
				t.Fatal(err)
			}
		}
		if n := next(t, again, tc.name); n != tc.first {
			t.Fatalf("%s: after 1-3 went back the next consume got %d first, want %d", tc.name, n, tc.first)
		}
	}
}

// PITFALLS 32: a quorum queue takes a second "exclusive" consumer where a
// classic queue refuses it (403 ACCESS_REFUSED): exclusive consume cannot
// keep one reader per partition; single active consumer does.
func TestPitfallQuorumQueuesIgnoreExclusiveConsume(t *testing.T) {
	b := rabbittest.Shared(t)
	for _, tc := range []struct {
		kind    string
		refused bool
	}{{"classic", true}, {"quorum", false}} {
		ch := rabbittest.RawChannel(t, b.URL)
		q := b.Name("exclusive-" + tc.kind)
		if _, err := ch.QueueDeclare(q, true, false, false, false, amqp.Table{"x-queue-type": tc.kind}); err != nil {
			t.Fatal(err)
		}
		if _, err := ch.Consume(q, "first", false, true, false, false, nil); err != nil {
			t.Fatal(err)
		}
		second := rabbittest.RawChannel(t, b.URL)
		_, err := second.Consume(q, "second", false, true, false, false, nil)
		var amqpErr *amqp.Error
		refused := errors.As(err, &amqpErr) && amqpErr.Code == amqp.AccessRefused
		if refused != tc.refused {
			t.Fatalf("%s queue: a second exclusive consume gave %v; want refused %v", tc.kind, err, tc.refused)
		}
	}
}

// PITFALLS 35 and 36: on a stream an ack only gives credit, and RabbitMQ
// 3.10 answers a nack or a reject with 540, closing the connection; a
// consume at offset N begins at N for an AMQP 0-9-1 consumer on RabbitMQ
// 3.10, though the stream protocol begins at N's chunk.
func TestPitfallStreamSettlementsAndChunks(t *testing.T) {
	b := rabbittest.Shared(t)
	ch := rabbittest.RawChannel(t, b.URL)
	q := b.Name("stream-pitfall")
	if _, err := ch.QueueDeclare(q, true, false, false, false, amqp.Table{"x-queue-type": "stream"}); err != nil {
		t.Fatal(err)
	}
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	// Confirmed before anyone reads.
	var confirms []*amqp.DeferredConfirmation
	for i := 0; i < 10; i++ {
		c, err := ch.PublishWithDeferredConfirm("", q, false, false, amqp.Publishing{Body: []byte(strconv.Itoa(i))})
		if err != nil {
			t.Fatal(err)
		}
		confirms = append(confirms, c)
	}
	for _, c := range confirms {
		if !c.Wait() {
			t.Fatal("a publish was nacked")
		}
	}
	read := func(offset any) (<-chan amqp.Delivery, *amqp.Channel) {
		c := rabbittest.RawChannel(t, b.URL)
		if err := c.Qos(10, 0, false); err != nil {
			t.Fatal(err)
		}
		d, err := c.Consume(q, "", false, false, false, false, amqp.Table{"x-stream-offset": offset})
		if err != nil {
			t.Fatal(err)
		}
		return d, c
	}
	offsetOf := func(m amqp.Delivery) int64 {
		off, _ := m.Headers["x-stream-offset"].(int64)
		return off
	}

	// 35: an ack only gives credit (the stream keeps the message: a new
	// reader at "first" gets 0 again); a nack, even without requeue, is
	// answered with 540 NOT_IMPLEMENTED, which closes the whole connection.
	d, _ := read("first")
	if err := (<-d).Ack(false); err != nil {
		t.Fatal(err)
	}
	d, rc := read("first")
	closed := rc.NotifyClose(make(chan *amqp.Error, 1))
	first := <-d
	if string(first.Body) != "0" {
		t.Fatalf("a new reader at first got %q after an ack by another, want %q: an ack takes nothing out of a stream", first.Body, "0")
	}
	if err := first.Nack(false, false); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-closed:
		if err == nil || err.Code != amqp.NotImplemented || !strings.Contains(err.Reason, "not supported by stream queues") {
			t.Fatalf("after a nack of a stream delivery the channel closed with %v, want 540 NOT_IMPLEMENTED", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the broker took a nack of a stream delivery: warren acks stream deliveries whatever the disposition because 3.10 refuses it; this says when a broker stops refusing")
	}

	// 36: the stream protocol starts a consume at offset 5 at 5's chunk;
	// RabbitMQ 3.10 passes over what comes before 5 for an AMQP 0-9-1
	// consumer. warren does not count on it (it passes over what it
	// acked), and this says when a broker stops doing it.
	d, _ = read(int64(5))
	if m := <-d; offsetOf(m) != 5 {
		t.Fatalf("a consume at offset 5 began at offset %d", offsetOf(m))
	}
}

// PITFALLS 38: on a single-active-consumer quorum queue the consumer count
// of queue.declare-ok counts the active consumer only: a second consumer,
// waiting, is invisible to it (rabbitmqctl list_consumers shows both). A
// claim that checks "no consumer" cannot see two claimants.
func TestPitfallSingleActiveConsumerCountsOne(t *testing.T) {
	b := rabbittest.Shared(t)
	q := sacQueue(t, b, "sac-count", 0)
	consumeRaw(t, b, q, "A")
	consumeRaw(t, b, q, "B") // consume-ok: registered, waiting
	ch := rabbittest.RawChannel(t, b.URL)
	info, err := ch.QueueDeclarePassive(q, true, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if info.Consumers != 1 {
		t.Fatalf("declare-ok counts %d consumers, want 1 (the active one) of the 2", info.Consumers)
	}
}
