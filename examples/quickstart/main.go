// Quickstart: rmqaio's quick start done in Go with warren, then the same
// service on package router with retry and dead-letter, narrated.
//
//	make demo
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren"
	"github.com/warrenmq/warren/ack"
	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/conn"
	"github.com/warrenmq/warren/examples"
	"github.com/warrenmq/warren/middleware"
	"github.com/warrenmq/warren/retry"
	"github.com/warrenmq/warren/router"
	"github.com/warrenmq/warren/topology"
)

func say(format string, args ...any) { fmt.Printf("==> "+format+"\n", args...) }

func main() {
	ctx, cancel := examples.Context(2 * time.Minute) // SIGINT/SIGTERM end it cleanly
	defer cancel()
	if err := specs(ctx); err != nil {
		log.Fatal(err)
	}
	if err := service(ctx); err != nil {
		log.Fatal(err)
	}
	say("done")
}

// specs is rmqaio's quick start: declare an exchange and a queue with
// restore, bind, consume with manual ack, publish, close.
func specs(ctx context.Context) error {
	say("part 1: specs, restore and manual ack (rmqaio's quick start)")
	c, err := conn.New(examples.URL(), conn.Config{})
	if err != nil {
		return err
	}
	if err := c.Open(ctx); err != nil {
		return fmt.Errorf("is RabbitMQ running? (make broker): %w", err)
	}
	defer c.Close(ctx)
	ops, err := broker.NewOps(c, broker.OpsConfig{})
	if err != nil {
		return err
	}
	defer ops.Close(ctx)

	// Declared with restore (the default): put back after every reconnect.
	t := topology.Topology{
		Exchanges: []topology.ExchangeSpec{{Name: "quickstart.x", Type: topology.Direct, AutoDelete: true}},
		Queues:    []topology.QueueSpec{{Name: "quickstart.greetings", Exclusive: true}},
		Bindings:  []topology.BindSpec{{Source: "quickstart.x", Destination: "quickstart.greetings", RoutingKey: "greeting"}},
	}
	if err := ops.Apply(ctx, t); err != nil {
		return err
	}
	got := make(chan string, 1)
	consumer, err := ops.Consume(ctx, broker.ConsumerSpec{Queue: "quickstart.greetings", Handler: func(_ context.Context, d *broker.Delivery) {
		got <- string(d.Body)
		_ = d.Ack() // manual ack
	}})
	if err != nil {
		return err
	}
	if err := ops.Publish(ctx, "quickstart.x", "greeting", amqp.Publishing{Body: []byte("hello, warren")}, broker.PublishOptions{Mandatory: true}); err != nil {
		return err
	}
	select {
	case body := <-got:
		snap := ops.Registry().Snapshot()
		say("consumed %q; the registry would restore %d exchange(s), %d queue(s), %d binding(s) and the consumer",
			body, len(snap.Exchanges), len(snap.Queues), len(snap.Bindings))
	case <-ctx.Done():
		return ctx.Err()
	}
	return consumer.Stop(ctx)
}

type order struct {
	ID     string `json:"id"`
	Amount int    `json:"amount"`
}

// jsonOnly refuses deliveries that are not JSON: they are poison.
type jsonOnly struct{ warren.DefaultMarshaler }

func (j jsonOnly) Unmarshal(d *amqp.Delivery) (*message.Message, error) {
	if !json.Valid(d.Body) {
		return nil, errors.New("body is not JSON")
	}
	return j.DefaultMarshaler.Unmarshal(d)
}

// service is the same idea on package router: retry, dead-letter, and a
// connection cut it recovers from on its own.
func service(ctx context.Context) error {
	say("part 2: a service on router, with retry and dead-letter")
	// A relay in front of the broker, so the demo can cut the connection
	// the way a network would.
	u, err := conn.ParseURL(examples.URL())
	if err != nil {
		return err
	}
	network, err := examples.NewNetwork(u.Hosts[0])
	if err != nil {
		return err
	}
	defer network.Close()
	vhost := ""
	if u.Vhost != "/" {
		vhost = u.Vhost
	}
	c, err := conn.New("amqp://guest:guest@"+network.Addr()+"/"+vhost, conn.Config{})
	if err != nil {
		return err
	}
	c.OnStateChange(func(ch conn.StateChange) {
		if ch.From != ch.To {
			say("connection: %s", ch)
		}
	})
	if err := c.Open(ctx); err != nil {
		return err
	}
	r, err := router.New(c, router.Config{Output: warren.PublisherConfig{Mapping: warren.ExistingQueues{}}, CloseTimeout: 5 * time.Second})
	if err != nil {
		return err
	}
	const q = "quickstart.orders"
	var attempts atomic.Int32
	// The orders handled, by ID. Delivery is at least once: a message whose
	// ack the cut below caught in flight comes back, so the demo waits for
	// an order by its ID, never for a count of successes.
	var mu sync.Mutex
	succeeded := map[string]int{}
	handled := func(id string) bool {
		mu.Lock()
		defer mu.Unlock()
		return succeeded[id] > 0
	}
	deadLettered := make(chan string, 1)
	err = r.AddRoute(router.Route{
		Name:         "orders",
		Queue:        topology.QueueSpec{Name: q, Durable: true},
		Marshaler:    jsonOnly{},
		Retry:        router.RetrySettings{RetryConfig: middleware.RetryConfig{MaxAttempts: 2, Backoff: retry.Backoff{InitialInterval: 50 * time.Millisecond}}},
		DelayedRetry: router.DelayedRetrySettings{Levels: []time.Duration{time.Second}},
		DeadLetter: router.DeadLetterSettings{Mode: middleware.PublishToDLQ, OnDeadLetter: func(e middleware.DeadLetterEvent) {
			select { // a poison message redelivered after the cut comes again
			case deadLettered <- fmt.Sprintf("%s (%v)", e.Msg.UUID, e.Err):
			default:
			}
		}},
		Handler: func(m *message.Message) error {
			var o order
			if err := json.Unmarshal(m.Payload, &o); err != nil {
				return ack.Permanent(err)
			}
			n := attempts.Add(1)
			if n <= 2 {
				say("handler: order %s fails (attempt %d)", o.ID, ack.Attempt(m))
				return errors.New("payment service busy")
			}
			mu.Lock()
			succeeded[o.ID]++
			again := succeeded[o.ID] > 1
			mu.Unlock()
			if again {
				say("handler: order %s again on call %d (attempt %d): its ack was in flight when the connection went; handlers must be idempotent", o.ID, n, ack.Attempt(m))
				return nil
			}
			how := ""
			if ack.Attempt(m) > 2 { // the in-process retries (MaxAttempts 2) are spent
				how = ": back after a 1s delayed retry"
			}
			say("handler: order %s succeeds on call %d (attempt %d%s)", o.ID, n, ack.Attempt(m), how)
			return nil
		},
	})
	if err != nil {
		return err
	}
	runErr := make(chan error, 1)
	go func() { runErr <- r.Run(ctx) }()
	if err := r.WaitRunning(ctx); err != nil { // a start-up failure arrives here, never a hang
		return err
	}

	body, _ := json.Marshal(order{ID: "A-1", Amount: 42})
	if err := r.Publisher().Publish(q, message.NewMessage("A-1", body)); err != nil {
		return err
	}
	if err := waitFor(ctx, func() bool { return handled("A-1") }); err != nil {
		return err
	}

	say("publishing a poison message (not JSON)")
	if err := r.Publisher().Publish(q, message.NewMessage("poison-1", []byte("<xml/>"))); err != nil {
		return err
	}
	select {
	case what := <-deadLettered:
		say("dead-lettered to %s.dlq: %s", q, what)
	case <-ctx.Done():
		return ctx.Err()
	}

	say("cutting the connection")
	reconnected := make(chan struct{}, 1)
	c.OnStateChange(func(ch conn.StateChange) {
		if ch.From == conn.StateReconnecting && ch.To == conn.StateConnected {
			reconnected <- struct{}{}
		}
	})
	network.Drop()
	select {
	case <-reconnected:
	case <-ctx.Done():
		return ctx.Err()
	}
	body, _ = json.Marshal(order{ID: "B-2", Amount: 7})
	if err := r.Publisher().Publish(q, message.NewMessage("B-2", body)); err != nil {
		return err
	}
	if err := waitFor(ctx, func() bool { return handled("B-2") }); err != nil {
		return err
	}
	say("health after the cut: %+v", r.Health())

	if err := r.Close(ctx); err != nil {
		return err
	}
	if err := <-runErr; err != nil {
		return err
	}
	_ = c.Close(ctx)
	// Leave the broker as we found it.
	cleanup, err := conn.New(examples.URL(), conn.Config{})
	if err == nil && cleanup.Open(ctx) == nil {
		if ops, err := broker.NewOps(cleanup, broker.OpsConfig{}); err == nil {
			// (The delay levels, warren.delay.*, are the vhost's, shared by
			// every service: they stay.)
			for _, name := range []string{q, q + ".dlq"} {
				_, _ = ops.DeleteQueue(ctx, name, broker.DeleteOptions{})
			}
			_ = ops.Close(ctx)
		}
		_ = cleanup.Close(ctx)
	}
	return nil
}

func waitFor(ctx context.Context, ok func() bool) error {
	for !ok() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	return nil
}

func init() { log.SetOutput(os.Stderr) }
