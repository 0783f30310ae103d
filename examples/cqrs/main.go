// CQRS: Watermill's components/cqrs on warren (a module of its own:
// components/cqrs brings protobuf marshalers the core must not depend on). Commands go to one queue per
// command (competing handlers); events go to one fanout exchange, and each
// event group ("billing", "shipping") has a queue of its own bound to it,
// so every group sees every event once.
package main

import (
	"context"
	"fmt"
	"log"
	"sort"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/components/cqrs"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/warrenmq/warren"
	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/conn"
	"github.com/warrenmq/warren/examples"
)

// PlaceOrder is a command.
type PlaceOrder struct{ OrderID string }

// OrderPlaced is an event.
type OrderPlaced struct{ OrderID string }

const prefix = "example.cqrs."

func main() {
	ctx, cancel := examples.Context(time.Minute)
	defer cancel()
	c, err := conn.New(examples.URL(), conn.Config{})
	if err != nil {
		log.Fatal(err)
	}
	if err := c.Open(ctx); err != nil {
		log.Fatal(err)
	}
	defer c.Close(context.WithoutCancel(ctx))
	if err := run(ctx, c); err != nil {
		log.Fatal(err)
	}
}

func run(ctx context.Context, c *conn.Conn) error {
	logger := watermill.NopLogger{}
	commands := warren.QueuePerTopic{Prefix: prefix}
	events := func(group string) warren.FanoutPerTopic {
		return warren.FanoutPerTopic{Prefix: prefix, ConsumerGroup: group}
	}
	commandPub, err := warren.NewPublisher(c, warren.PublisherConfig{Mapping: commands})
	if err != nil {
		return err
	}
	defer commandPub.Close()
	eventPub, err := warren.NewPublisher(c, warren.PublisherConfig{Mapping: events("")})
	if err != nil {
		return err
	}
	defer eventPub.Close()

	router, err := message.NewRouter(message.RouterConfig{}, logger)
	if err != nil {
		return err
	}
	marshaler := cqrs.JSONMarshaler{}
	commandBus, err := cqrs.NewCommandBusWithConfig(commandPub, cqrs.CommandBusConfig{
		GeneratePublishTopic: func(p cqrs.CommandBusGeneratePublishTopicParams) (string, error) { return p.CommandName, nil },
		Marshaler:            marshaler, Logger: logger,
	})
	if err != nil {
		return err
	}
	eventBus, err := cqrs.NewEventBusWithConfig(eventPub, cqrs.EventBusConfig{
		GeneratePublishTopic: func(cqrs.GenerateEventPublishTopicParams) (string, error) { return "events", nil },
		Marshaler:            marshaler, Logger: logger,
	})
	if err != nil {
		return err
	}
	var subscribers []*warren.Subscriber
	defer func() {
		for _, s := range subscribers {
			_ = s.Close()
		}
	}()
	newSubscriber := func(m warren.Mapping) (message.Subscriber, error) {
		s, err := warren.NewSubscriber(c, warren.SubscriberConfig{Mapping: m})
		if err == nil {
			subscribers = append(subscribers, s)
		}
		return s, err
	}
	commandProcessor, err := cqrs.NewCommandProcessorWithConfig(router, cqrs.CommandProcessorConfig{
		GenerateSubscribeTopic: func(p cqrs.CommandProcessorGenerateSubscribeTopicParams) (string, error) { return p.CommandName, nil },
		SubscriberConstructor: func(cqrs.CommandProcessorSubscriberConstructorParams) (message.Subscriber, error) {
			return newSubscriber(commands)
		},
		Marshaler: marshaler, Logger: logger,
	})
	if err != nil {
		return err
	}
	eventProcessor, err := cqrs.NewEventGroupProcessorWithConfig(router, cqrs.EventGroupProcessorConfig{
		GenerateSubscribeTopic: func(cqrs.EventGroupProcessorGenerateSubscribeTopicParams) (string, error) { return "events", nil },
		SubscriberConstructor: func(p cqrs.EventGroupProcessorSubscriberConstructorParams) (message.Subscriber, error) {
			return newSubscriber(events(p.EventGroupName))
		},
		Marshaler: marshaler, Logger: logger,
	})
	if err != nil {
		return err
	}

	var mu sync.Mutex
	var seen []string
	allSeen := make(chan struct{})
	orders := []string{"order-1", "order-2"}
	record := func(line string) {
		mu.Lock()
		defer mu.Unlock()
		seen = append(seen, line)
		if len(seen) == 2*len(orders) {
			close(allSeen)
		}
	}
	if err := commandProcessor.AddHandlers(cqrs.NewCommandHandler("PlaceOrder", func(ctx context.Context, cmd *PlaceOrder) error {
		return eventBus.Publish(ctx, &OrderPlaced{OrderID: cmd.OrderID})
	})); err != nil {
		return err
	}
	for _, group := range []string{"billing", "shipping"} {
		if err := eventProcessor.AddHandlersGroup(group, cqrs.NewGroupEventHandler(func(ctx context.Context, e *OrderPlaced) error {
			record(fmt.Sprintf("%s handled OrderPlaced %s", group, e.OrderID))
			return nil
		})); err != nil {
			return err
		}
	}
	runErr := make(chan error, 1)
	go func() { runErr <- router.Run(ctx) }()
	select {
	case <-router.Running():
	case err := <-runErr:
		return err
	}
	for _, id := range orders {
		if err := commandBus.Send(ctx, &PlaceOrder{OrderID: id}); err != nil {
			return err
		}
		fmt.Printf("sent PlaceOrder %s\n", id)
	}
	select {
	case <-allSeen:
	case <-ctx.Done():
		return fmt.Errorf("events not handled: %w", ctx.Err())
	}
	var want []string
	for _, g := range []string{"billing", "shipping"} {
		for _, id := range orders {
			want = append(want, fmt.Sprintf("%s handled OrderPlaced %s", g, id))
		}
	}
	mu.Lock()
	sort.Strings(seen)
	got := fmt.Sprint(seen)
	for _, l := range seen {
		fmt.Println(l)
	}
	mu.Unlock()
	if got != fmt.Sprint(want) {
		return fmt.Errorf("handled %s, want %s", got, fmt.Sprint(want))
	}
	if err := router.Close(); err != nil {
		return err
	}
	<-runErr
	// Leave nothing behind.
	ops, err := broker.NewOps(c, broker.OpsConfig{})
	if err != nil {
		return err
	}
	for _, q := range []string{prefix + "PlaceOrder", prefix + "events.billing", prefix + "events.shipping"} {
		_, _ = ops.DeleteQueue(ctx, q, broker.DeleteOptions{})
	}
	_ = ops.DeleteExchange(ctx, prefix+"events", broker.DeleteOptions{})
	fmt.Println("every group saw every event once")
	return nil
}
