package outbox_test

import (
	"context"
	"database/sql"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

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

// TestBadRowAmongGoodOnesSetAsideAlone: rows that cannot be made into a
// message (an expiration that is not milliseconds, a delay that is not RFC
// 3339) are set aside one by one, each with its own reason, and the good
// rows of the same Publish go out and are consumed, in order per key, also
// when the bad row is in the middle of one order key.
func TestBadRowAmongGoodOnesSetAsideAlone(t *testing.T) {
	b := warrentest.New(t)
	pool, _, ob := setup(t)
	ctx := context.Background()
	sub := b.Subscriber(warren.SubscriberConfig{})
	got, err := sub.Subscribe(ctx, "orders")
	if err != nil {
		t.Fatal(err)
	}
	bad := func(id, key, value string) *message.Message {
		m := msg(id)
		m.Metadata.Set(key, value)
		return m
	}
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// One topic, 8 rows, 2 bad: the relay sends them in one Publish.
	rows := []*message.Message{msg("a1"), msg("a2"), bad("a3", warren.MetaExpiration, "soon"), msg("a4"),
		msg("a5"), bad("a6", "_watermill_delayed_until", "tomorrow"), msg("a7"), msg("a8")}
	if err := ob.Write(ctx, outbox.Pgx(tx), "orders", rows...); err != nil {
		t.Fatal(err)
	}
	// One order key, a bad row in its middle.
	if err := ob.WriteKeyed(ctx, outbox.Pgx(tx), "orders", "customer-7", msg("k1"), bad("k2", warren.MetaPriority, "high"), msg("k3")); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	pub := b.Publisher(warren.PublisherConfig{Mapping: warren.ExistingQueues{}, Mandatory: true})
	r := runRelay(t, outbox.RelayConfig{Pool: pool, Publisher: pub, PollInterval: 50 * time.Millisecond})
	want := []string{"a1", "a2", "a4", "a5", "a7", "a8", "k1", "k3"}
	var consumed []string
	for range want {
		select {
		case m := <-got:
			consumed = append(consumed, m.UUID)
			m.Ack()
		case <-time.After(20 * time.Second):
			t.Fatalf("consumed %v, want %v", consumed, want)
		}
	}
	if !slices.Equal(consumed, want) {
		t.Fatalf("consumed %v, want %v (in order)", consumed, want)
	}
	waitStats(t, r, func(s outbox.RelayStats) bool { return s.Published == 8 && s.SetAside == 3 })
	reasons := map[string]string{}
	rs, err := pool.Query(ctx, "SELECT uuid, error FROM warren_outbox WHERE failed_at IS NOT NULL")
	if err != nil {
		t.Fatal(err)
	}
	for rs.Next() {
		var id, why string
		if err := rs.Scan(&id, &why); err != nil {
			t.Fatal(err)
		}
		reasons[id] = why
	}
	if err := rs.Err(); err != nil {
		t.Fatal(err)
	}
	for id, says := range map[string]string{"a3": "soon", "a6": "tomorrow", "k2": "high"} {
		if !strings.Contains(reasons[id], says) || !strings.Contains(reasons[id], "invalid message") {
			t.Errorf("row %s set aside with %q, want its own reason (%q)", id, reasons[id], says)
		}
	}
	if len(reasons) != 3 {
		t.Fatalf("set aside %v, want a3, a6 and k2 only", reasons)
	}
}

// TestNilArguments: a nil transaction, Pgx(nil) and a nil *sql.Tx are
// ErrNilExecutor; nothing panics, nothing is written.
func TestNilArguments(t *testing.T) {
	pool, _, ob := setup(t)
	ctx := context.Background()
	var nilTx *sql.Tx
	for name, call := range map[string]func() error{
		"Write(nil)":             func() error { return ob.Write(ctx, nil, "t", msg("x")) },
		"WriteKeyed(nil)":        func() error { return ob.WriteKeyed(ctx, nil, "t", "k", msg("x")) },
		"Write(Pgx(nil))":        func() error { return ob.Write(ctx, outbox.Pgx(nil), "t", msg("x")) },
		"Write((*sql.Tx)(nil))":  func() error { return ob.Write(ctx, nilTx, "t", msg("x")) },
		"Migrate(nil)":           func() error { return ob.Migrate(ctx, nil) },
		"Migrate(Pgx(nil))":      func() error { return ob.Migrate(ctx, outbox.Pgx(nil)) },
		"Pgx(nil).ExecContext()": func() error { _, err := outbox.Pgx(nil).ExecContext(ctx, "SELECT 1"); return err },
	} {
		if err := call(); !errors.Is(err, outbox.ErrNilExecutor) {
			t.Errorf("%s: %v, want ErrNilExecutor", name, err)
		}
	}
	var n int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM warren_outbox").Scan(&n); err != nil || n != 0 {
		t.Fatalf("%d rows (%v) after nil calls", n, err)
	}
}
