package broker_test

import (
	"context"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren/internal/rabbittest"
)

// TestPitfallAnUnreadConfirmIsDropped (PITFALLS 63): amqp091-go v1.17
// hands a listener each notification (here a publish's confirmation) from
// the connection's one reader goroutine, waits at most 5 s for the listener
// to take it, and then drops it, telling nobody. Until then the reader
// reads nothing else of the connection: the next confirm is settled only
// after the wait. A listener that falls behind does not deadlock the
// client (PITFALLS 1 as first written), it loses notifications, and a
// listener that matches confirms to publishes by their order is then
// wrong for good. The deferred confirmation of each publish is settled
// before any listener is told, and is never dropped: warren's confirm
// channels wait on those and register no listener of confirms.
func TestPitfallAnUnreadConfirmIsDropped(t *testing.T) {
	b := rabbittest.Shared(t)
	q := b.Name("unread-confirm")
	ch := rabbittest.RawChannel(t, b.URL)
	if _, err := ch.QueueDeclare(q, false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	// Unbuffered and not read until the end: a listener that fell behind.
	listener := ch.NotifyPublish(make(chan amqp.Confirmation))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	publishConfirmed := func(body string) time.Duration {
		t.Helper()
		start := time.Now()
		dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, "", q, false, false, amqp.Publishing{Body: []byte(body)})
		if err != nil {
			t.Fatal(err)
		}
		select {
		case <-dc.Done():
		case <-ctx.Done():
			t.Fatalf("no confirm for %q", body)
		}
		if !dc.Acked() {
			t.Fatalf("%q nacked", body)
		}
		return time.Since(start)
	}
	// The first confirm is settled, then the reader waits on the listener
	// with it. The second is sent only now, so the broker acks it alone
	// (not with the first in one multiple ack).
	publishConfirmed("first")
	waited := publishConfirmed("second")
	t.Logf("the second publish was confirmed %v after it was sent: the reader held the first confirm for the listener meanwhile", waited)
	select {
	case c := <-listener:
		if c.DeliveryTag != 2 {
			t.Fatalf("the listener's first confirmation is of publish %d, want 2: amqp091-go no longer drops an unread confirm, and PITFALLS 63 is out of date", c.DeliveryTag)
		}
	case <-ctx.Done():
		t.Fatal("the listener was told of no confirm")
	}
}
