// Plain Watermill: warren's Publisher and Subscriber on an unmodified
// Watermill router with Watermill's own middleware.
package main

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	wmw "github.com/ThreeDotsLabs/watermill/message/router/middleware"

	"github.com/warrenmq/warren"
	"github.com/warrenmq/warren/conn"
	"github.com/warrenmq/warren/examples"
)

func main() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := conn.New(examples.URL(), conn.Config{})
	if err != nil {
		log.Fatal(err)
	}
	if err := c.Open(ctx); err != nil {
		log.Fatal(err)
	}
	defer c.Close(context.Background())
	mapping := warren.FanoutPerTopic{ConsumerGroup: "plain"}
	pub, err := warren.NewPublisher(c, warren.PublisherConfig{Mapping: mapping})
	if err != nil {
		log.Fatal(err)
	}
	sub, err := warren.NewSubscriber(c, warren.SubscriberConfig{Mapping: mapping})
	if err != nil {
		log.Fatal(err)
	}
	router, err := message.NewRouter(message.RouterConfig{}, watermill.NopLogger{})
	if err != nil {
		log.Fatal(err)
	}
	router.AddMiddleware(wmw.Recoverer, wmw.Retry{MaxRetries: 2, InitialInterval: 10 * time.Millisecond}.Middleware)
	done := make(chan struct{})
	count := 0
	router.AddConsumerHandler("greetings", "example.greetings", sub, func(m *message.Message) error {
		count++
		fmt.Printf("received %s: %s\n", m.UUID, m.Payload)
		if count == 3 {
			close(done)
		}
		return nil
	})
	go func() { _ = router.Run(ctx) }()
	<-router.Running()
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
	_ = pub.Close()
	_ = sub.Close()
	fmt.Println("plain Watermill router: 3 messages through warren")
}
