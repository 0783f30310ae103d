package router_test

import (
	"context"
	"log"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/warrenmq/warren/conn"
	"github.com/warrenmq/warren/middleware"
	"github.com/warrenmq/warren/router"
	"github.com/warrenmq/warren/topology"
)

// A service with one consuming route and one producing route. Every queue,
// binding, delay queue and dead-letter queue is declared by Run and restored
// after every reconnect.
func Example() {
	c, err := conn.New("amqp://guest:guest@127.0.0.1:5672/", conn.Config{})
	if err != nil {
		log.Fatal(err)
	}
	r, err := router.New(c, router.Config{CloseTimeout: 10 * time.Second})
	if err != nil {
		log.Fatal(err)
	}
	_ = r.AddRoute(router.Route{
		Name:         "payments",
		Queue:        topology.QueueSpec{Name: "payments", Durable: true, Args: topology.QueueArgs{Type: topology.Quorum}},
		Exchanges:    []topology.ExchangeSpec{{Name: "shop", Type: topology.Topic, Durable: true}},
		Bindings:     []topology.BindSpec{{Source: "shop", RoutingKey: "order.paid"}},
		Retry:        router.RetrySettings{RetryConfig: middleware.RetryConfig{MaxAttempts: 3}},
		DelayedRetry: router.DelayedRetrySettings{Levels: []time.Duration{5 * time.Second, time.Minute}},
		DeadLetter:   router.DeadLetterSettings{Mode: middleware.PublishToDLQ},
		MaxInFlight:  8,
		Handler:      func(m *message.Message) error { return nil },
	})
	_ = r.AddRoute(router.Route{
		Name:         "receipts",
		Queue:        topology.QueueSpec{Name: "receipts", Durable: true},
		PublishTopic: "emails",
		Produce: func(m *message.Message) ([]*message.Message, error) {
			return []*message.Message{message.NewMessage(m.UUID, m.Payload)}, nil
		},
	})
	ctx := context.Background()
	if err := c.Open(ctx); err != nil {
		log.Fatal(err)
	}
	go func() { _ = r.Run(ctx) }()
	// ... on shutdown: drain, then close everything.
	_ = r.Close(ctx)
}
