package tests

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/warrenmq/warren"
	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/internal/rabbittest"
	"github.com/warrenmq/warren/topology"
)

// TestFailingMessageNeverSpins: a message that always fails, on a plain
// Watermill router with warren's default Subscriber settings. Before, it
// was requeued at once: 2,877 handler calls in 2 s. Now it comes back after
// a growing backoff; on a queue without a dead-letter exchange it stays
// queued, and with one it is dead-lettered after Redelivery.MaxAttempts.
func TestFailingMessageNeverSpins(t *testing.T) {
	for _, tc := range []struct {
		name       string
		deadLetter bool
		cfg        warren.SubscriberConfig
	}{
		{name: "no dead-letter exchange, defaults"},
		{name: "dead-letter exchange, 3 attempts", deadLetter: true, cfg: warren.SubscriberConfig{Redelivery: warren.RedeliveryConfig{MaxAttempts: 3}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := rabbittest.Shared(t)
			c := openConn(t, b.URL)
			mapping := warren.QueuePerTopic{Prefix: b.Prefix}
			dlq := b.Prefix + "spin.dlq"
			if tc.deadLetter {
				mapping.QueueArgs = topology.QueueArgs{DeadLetterRoutingKey: dlq}
				ops, err := broker.NewOps(c, broker.OpsConfig{})
				if err != nil {
					t.Fatal(err)
				}
				defer ops.Close(context.Background())
				if _, err := ops.DeclareQueue(ctxT(t, 10*time.Second), topology.QueueSpec{Name: dlq, Durable: true}); err != nil {
					t.Fatal(err)
				}
			}
			cfg := tc.cfg
			cfg.Mapping = mapping
			pub, err := warren.NewPublisher(c, warren.PublisherConfig{Mapping: mapping})
			if err != nil {
				t.Fatal(err)
			}
			defer pub.Close()
			sub, err := warren.NewSubscriber(c, cfg)
			if err != nil {
				t.Fatal(err)
			}
			wr, err := message.NewRouter(message.RouterConfig{}, watermill.NopLogger{})
			if err != nil {
				t.Fatal(err)
			}
			var calls atomic.Int32
			wr.AddConsumerHandler("spin", "spin", sub, func(*message.Message) error {
				calls.Add(1)
				return errors.New("always fails")
			})
			runErr := make(chan error, 1)
			go func() { runErr <- wr.Run(context.Background()) }()
			select {
			case <-wr.Running():
			case err := <-runErr:
				t.Fatal(err)
			}
			defer func() {
				_ = wr.Close()
				<-runErr
			}()
			if err := pub.Publish("spin", message.NewMessage("fails", []byte("x"))); err != nil {
				t.Fatal(err)
			}
			const window = 3 * time.Second
			start := time.Now()
			deadline := start.Add(window)
			place := "still queued"
			for time.Now().Before(deadline) {
				if tc.deadLetter {
					if ready, _, _ := b.Messages(dlq); ready == 1 {
						place = "dead-letter queue"
						break
					}
				}
				time.Sleep(20 * time.Millisecond)
			}
			elapsed := time.Since(start)
			n := calls.Load()
			t.Logf("%s: %d handler calls in %v (%.0f per minute); final place: %s", tc.name, n, elapsed.Round(time.Millisecond), float64(n)/elapsed.Minutes(), place)
			// Backoff 100ms, 200ms, 400ms, 800ms... (±20%): at most 6 calls
			// fit in 3s; a spin makes thousands.
			if n > 8 {
				t.Fatalf("%d handler calls in %v: the message spins", n, elapsed)
			}
			if tc.deadLetter {
				if place != "dead-letter queue" || n != 3 {
					t.Fatalf("%d calls, final place %s; want 3 calls, then the dead-letter queue", n, place)
				}
				return
			}
			if n < 2 {
				t.Fatalf("%d handler calls: the failed message never came back", n)
			}
			ready, unacked, err := b.Messages(b.Prefix + "spin")
			if err != nil || ready+unacked != 1 {
				t.Fatalf("the failed message left its queue: %d ready, %d unacked (err %v)", ready, unacked, err)
			}
		})
	}
}
