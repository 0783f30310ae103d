package warrentest

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Tap sees, from outside the service, what is published to an exchange:
// a queue of its own (exclusive, gone with the tap) bound to it, read on a
// plain amqp091-go connection.
type Tap struct {
	mu      sync.Mutex
	got     []amqp.Delivery
	changed chan struct{}
	what    string
}

// Tap binds a tap to exchange with routing key pattern key ("#" for
// everything on a topic exchange); it reads until the test ends.
func (b *Broker) Tap(exchange, key string) *Tap {
	b.t.Helper()
	c, err := amqp.Dial(b.URL)
	if err != nil {
		b.t.Fatal(err)
	}
	b.t.Cleanup(func() { _ = c.Close() })
	ch, err := c.Channel()
	if err != nil {
		b.t.Fatal(err)
	}
	q, err := ch.QueueDeclare("", false, true, true, false, nil)
	if err == nil {
		err = ch.QueueBind(q.Name, key, exchange, false, nil)
	}
	var d <-chan amqp.Delivery
	if err == nil {
		d, err = ch.Consume(q.Name, "", true, true, false, false, nil)
	}
	if err != nil {
		b.t.Fatalf("warrentest: tap %s %q: %v", exchange, key, err)
	}
	tp := &Tap{changed: make(chan struct{}), what: fmt.Sprintf("exchange %q, key %q", exchange, key)}
	go func() {
		for m := range d { // ends when the connection closes
			tp.mu.Lock()
			tp.got = append(tp.got, m)
			close(tp.changed)
			tp.changed = make(chan struct{})
			tp.mu.Unlock()
		}
	}()
	return tp
}

// Messages returns what the tap saw so far.
func (tp *Tap) Messages() []amqp.Delivery {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	return append([]amqp.Delivery(nil), tp.got...)
}

// Wait waits until the tap saw n messages and returns them; on the
// deadline it fails t with what it did see.
func (tp *Tap) Wait(t testing.TB, n int, within time.Duration) []amqp.Delivery {
	t.Helper()
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	for {
		tp.mu.Lock()
		got, changed := append([]amqp.Delivery(nil), tp.got...), tp.changed
		tp.mu.Unlock()
		if len(got) >= n {
			return got
		}
		select {
		case <-changed:
		case <-deadline.C:
			ids := make([]string, len(got))
			for i, m := range got {
				ids[i] = fmt.Sprintf("%s (key %q)", m.MessageId, m.RoutingKey)
			}
			t.Fatalf("warrentest: %s saw %d of %d messages within %v: %s", tp.what, len(got), n, within, strings.Join(ids, ", "))
		}
	}
}
