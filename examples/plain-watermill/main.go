// Plain Watermill: warren's Publisher and Subscriber on an unmodified
// Watermill router with Watermill's own middleware, and warren's defaults
// at work: a message whose handler fails is never requeued at once (it
// comes back after a growing backoff, counted by ack.Attempt), so a
// failing message never spins.
package main

import (
	"fmt"
	"log"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	wmw "github.com/ThreeDotsLabs/watermill/message/router/middleware"

	"github.com/warrenmq/warren"
	"github.com/warrenmq/warren/ack"
	"github.com/warrenmq/warren/conn"
	"github.com/warrenmq/warren/examples"
)

func main() {
	ctx, cancel := examples.Context(time.Minute) // SIGINT/SIGTERM end it cleanly
	defer cancel()
	c, err := conn.New(examples.URL(), conn.Config{})
	if err != nil {
		log.Fatal(err)
	}
	if err := c.Open(ctx); err != nil {
		log.Fatal(err)
	}
	defer c.Close(ctx)
	mapping := warren.FanoutPerTopic{ConsumerGroup: "plain"}
	pub, err := warren.NewPublisher(c, warren.PublisherConfig{Mapping: mapping})
	if err != nil {
		log.Fatal(err)
	}
	defer pub.Close()
	sub, err := warren.NewSubscriber(c, warren.SubscriberConfig{Mapping: mapping}) // default settings
	if err != nil {
		log.Fatal(err)
	}
	router, err := message.NewRouter(message.RouterConfig{}, watermill.NopLogger{})
	if err != nil {
		log.Fatal(err)
	}
	router.AddMiddleware(wmw.Recoverer)
	done := make(chan struct{})
	var greeted, handled atomic.Int32 // done once 3 greetings and the flaky message are handled
	start := time.Now()
	router.AddConsumerHandler("greetings", "example.greetings", sub, func(m *message.Message) error {
		if m.UUID == "flaky" {
			n := ack.Attempt(m)
			fmt.Printf("flaky: attempt %d at %s\n", n, time.Since(start).Round(50*time.Millisecond))
			if n < 4 {
				return fmt.Errorf("not yet") // Nack: redelivered after a backoff, not at once
			}
			fmt.Println("flaky: handled on attempt 4; it never spun")
		} else {
			fmt.Printf("received %s: %s\n", m.UUID, m.Payload)
			greeted.Add(1)
		}
		if handled.Add(1) == 4 {
			close(done)
		}
		return nil
	})
	runErr := make(chan error, 1)
	go func() { runErr <- router.Run(ctx) }()
	select {
	case <-router.Running():
	case err := <-runErr: // Run failed before it was running
		log.Fatal(err)
	}
	if err := pub.Publish("example.greetings", message.NewMessage("flaky", []byte("fails three times"))); err != nil {
		log.Fatal(err)
	}
	for i := 1; i <= 3; i++ {
		if err := pub.Publish("example.greetings", message.NewMessage(fmt.Sprint("greeting-", i), []byte("hello"))); err != nil {
			log.Fatal(err)
		}
	}
	select {
	case <-done:
	case <-ctx.Done():
		log.Fatal("messages did not arrive")
	}
	// The router closes the subscriber; Close of both is idempotent.
	if err := router.Close(); err != nil {
		log.Fatal(err)
	}
	fmt.Println("plain Watermill router: 3 messages through warren")
}
