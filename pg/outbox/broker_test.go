package outbox_test

import (
	"context"
	"testing"
	"time"

	"github.com/warrenmq/warren"
	"github.com/warrenmq/warren/pg/outbox"
	"github.com/warrenmq/warren/warrentest"
)

func TestMain(m *testing.M) { warrentest.Main(m) }

// TestBrokerRefusalSetAside: on a real broker, a row whose message no queue
// takes (mandatory, basic.return) is set aside with the broker's reason;
// the rows around it are published and consumed.
func TestBrokerRefusalSetAside(t *testing.T) {
	b := warrentest.New(t)
	pool, _, ob := setup(t)
	ctx := context.Background()
	sub := b.Subscriber(warren.SubscriberConfig{})
	got, err := sub.Subscribe(ctx, "orders") // declares the queue "orders"
	if err != nil {
		t.Fatal(err)
	}
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := ob.Write(ctx, outbox.Pgx(tx), "orders", msg("before")); err != nil {
		t.Fatal(err)
	}
	if err := ob.Write(ctx, outbox.Pgx(tx), "nowhere", msg("lost-if-not-mandatory")); err != nil {
		t.Fatal(err)
	}
	if err := ob.Write(ctx, outbox.Pgx(tx), "orders", msg("after")); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	pub := b.Publisher(warren.PublisherConfig{Mapping: warren.ExistingQueues{}, Mandatory: true})
	r := runRelay(t, outbox.RelayConfig{Pool: pool, Publisher: pub, PollInterval: 50 * time.Millisecond})
	for _, want := range []string{"before", "after"} {
		select {
		case m := <-got:
			if m.UUID != want {
				t.Fatalf("consumed %s, want %s", m.UUID, want)
			}
			m.Ack()
		case <-time.After(20 * time.Second):
			t.Fatalf("%s never arrived", want)
		}
	}
	waitStats(t, r, func(s outbox.RelayStats) bool { return s.SetAside == 1 && s.Published == 2 })
	var why string
	if err := pool.QueryRow(ctx, "SELECT error FROM warren_outbox WHERE uuid = 'lost-if-not-mandatory'").Scan(&why); err != nil || why == "" {
		t.Fatalf("the unroutable row's error: %q %v", why, err)
	}
	t.Logf("set aside: %s", why)
}
