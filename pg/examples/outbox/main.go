// Outbox: an order service that commits each order and its "order placed"
// event in one PostgreSQL transaction, a relay that publishes the events
// through warren, and a billing consumer whose inbox applies each event's
// effect exactly once. One order's transaction rolls back: its event is
// never published.
//
//	WARREN_URL (default amqp://guest:guest@127.0.0.1:5672/)
//	WARREN_PG_URL (default postgres://postgres@127.0.0.1:5432/postgres)
package main

import (
	"context"
	"fmt"
	"io"
	"log"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/warrenmq/warren"
	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/conn"
	"github.com/warrenmq/warren/pg/inbox"
	"github.com/warrenmq/warren/pg/outbox"
	"github.com/warrenmq/warren/router"
	"github.com/warrenmq/warren/topology"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := run(ctx, env("WARREN_URL", "amqp://guest:guest@127.0.0.1:5672/"), env("WARREN_PG_URL", "postgres://postgres@127.0.0.1:5432/postgres"), os.Stdout); err != nil {
		log.Fatal(err)
	}
}

func env(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

const queue = "example.outbox.orders"

func run(ctx context.Context, amqpURL, dsn string, out io.Writer) error {
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		return err
	}
	defer pool.Close()
	if _, err := pool.Exec(ctx, `CREATE TABLE IF NOT EXISTS example_orders (id text PRIMARY KEY, total_cents int NOT NULL);
CREATE TABLE IF NOT EXISTS example_invoices (order_id text PRIMARY KEY, times int NOT NULL)`); err != nil {
		return err
	}
	defer func() {
		_, _ = pool.Exec(context.WithoutCancel(ctx), "DROP TABLE IF EXISTS example_orders, example_invoices, example_outbox, example_inbox")
	}()
	ob, err := outbox.New(outbox.Config{Table: "example_outbox"})
	if err != nil {
		return err
	}
	if err := ob.Migrate(ctx, outbox.Pgx(pool)); err != nil {
		return err
	}
	ib, err := inbox.New(inbox.Config{Pool: pool, Consumer: "billing", Table: "example_inbox"})
	if err != nil {
		return err
	}
	if err := ib.Migrate(ctx); err != nil {
		return err
	}

	c, err := conn.New(amqpURL, conn.Config{})
	if err != nil {
		return err
	}
	if err := c.Open(ctx); err != nil {
		return err
	}
	defer c.Close(context.WithoutCancel(ctx))

	// Billing: the inbox innermost; the invoice is written in the inbox's
	// transaction, so it commits with the record that the event was seen.
	r, err := router.New(c, router.Config{})
	if err != nil {
		return err
	}
	invoiced := make(chan string, 10)
	if err := r.AddRoute(router.Route{
		Name:       "billing",
		Queue:      topology.QueueSpec{Name: queue, Durable: true},
		Middleware: []message.HandlerMiddleware{ib.Middleware},
		Handler: func(m *message.Message) error {
			_, err := inbox.Tx(m.Context()).Exec(m.Context(),
				"INSERT INTO example_invoices (order_id, times) VALUES ($1, 1) ON CONFLICT (order_id) DO UPDATE SET times = example_invoices.times + 1", m.UUID)
			if err == nil {
				invoiced <- m.UUID
			}
			return err
		},
	}); err != nil {
		return err
	}
	runErr := make(chan error, 1)
	go func() { runErr <- r.Run(ctx) }()
	if err := r.WaitRunning(ctx); err != nil {
		return err
	}
	defer func() {
		ops := r.Ops()
		for _, q := range []string{queue, queue + ".dlq"} {
			_, _ = ops.DeleteQueue(context.WithoutCancel(ctx), q, broker.DeleteOptions{})
		}
		_ = r.Close(context.WithoutCancel(ctx))
		<-runErr
	}()

	// The relay publishes what the order service commits.
	pub, err := warren.NewPublisher(c, warren.PublisherConfig{Mapping: warren.ExistingQueues{}, Mandatory: true})
	if err != nil {
		return err
	}
	defer pub.Close()
	relay, err := outbox.NewRelay(outbox.RelayConfig{Pool: pool, Publisher: pub, Table: "example_outbox"})
	if err != nil {
		return err
	}
	relayCtx, stopRelay := context.WithCancel(ctx)
	relayDone := make(chan error, 1)
	go func() { relayDone <- relay.Run(relayCtx) }()
	defer func() { stopRelay(); <-relayDone }()

	// The order service.
	orders := []struct {
		id       string
		cents    int
		rollback bool
	}{{"order-1", 1200, false}, {"order-2", 450, false}, {"order-3", 990, true}, {"order-4", 3000, false}}
	for _, o := range orders {
		if err := placeOrder(ctx, pool, ob, o.id, o.cents, o.rollback); err != nil {
			return err
		}
		if o.rollback {
			fmt.Fprintf(out, "%s rolled back: no order, no event\n", o.id)
		} else {
			fmt.Fprintf(out, "%s committed with its event\n", o.id)
		}
	}
	for range 3 {
		select {
		case id := <-invoiced:
			fmt.Fprintf(out, "billing invoiced %s\n", id)
		case <-ctx.Done():
			return fmt.Errorf("waiting for invoices: %w", ctx.Err())
		}
	}
	// A redelivered event (say, its ack was lost in a connection drop):
	// the inbox acks it without invoicing twice.
	if err := pub.Publish(queue, message.NewMessage("order-1", []byte(`{"total_cents":1200}`))); err != nil {
		return err
	}
	for ib.Duplicates() == 0 {
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for the duplicate: %w", ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
	var invoices, times int
	if err := pool.QueryRow(ctx, "SELECT count(*), coalesce(sum(times), 0) FROM example_invoices").Scan(&invoices, &times); err != nil {
		return err
	}
	fmt.Fprintf(out, "a duplicate of order-1 was absorbed by the inbox (%d)\n", ib.Duplicates())
	fmt.Fprintf(out, "%d invoices, applied %d times in all\n", invoices, times)
	return nil
}

// placeOrder writes the order and its event in one transaction.
func placeOrder(ctx context.Context, pool *pgxpool.Pool, ob *outbox.Outbox, id string, cents int, rollback bool) error {
	tx, err := pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if _, err := tx.Exec(ctx, "INSERT INTO example_orders (id, total_cents) VALUES ($1, $2)", id, cents); err != nil {
		return err
	}
	event := message.NewMessage(id, []byte(fmt.Sprintf(`{"total_cents":%d}`, cents)))
	if err := ob.Write(ctx, outbox.Pgx(tx), queue, event); err != nil {
		return err
	}
	if rollback {
		return tx.Rollback(ctx)
	}
	return tx.Commit(ctx)
}
