package main

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/components/cqrs"
	"github.com/ThreeDotsLabs/watermill/components/requestreply"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/warrenmq/warren"
	"github.com/warrenmq/warren/conn"
	"github.com/warrenmq/warren/warrentest"
)

type double struct{ N int }

type doubled struct{ N int }

// TestWatermillRequestReplyLeavesNothingBehind: Watermill's
// components/requestreply with its Pub/Sub backend on warren. Direct
// reply-to cannot back it (its command bus publishes the request on a
// publisher's channel, not on the channel that would consume the reply),
// so each request's reply topic is a queue with Lifetime UntilUnused: the
// broker deletes it when the requester stops listening, and the replies are
// published without declaring anything (ExistingQueues), so a late reply
// creates no queue either.
func TestWatermillRequestReplyLeavesNothingBehind(t *testing.T) {
	b := warrentest.New(t)
	c := b.Conn(conn.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	logger := watermill.NopLogger{}
	commands := warren.QueuePerTopic{Prefix: "rr.commands."}
	replies := warren.QueuePerTopic{Prefix: "rr.replies.", Transient: true, Lifetime: warren.UntilUnused}

	commandPub, err := warren.NewPublisher(c, warren.PublisherConfig{Mapping: commands})
	if err != nil {
		t.Fatal(err)
	}
	defer commandPub.Close()
	replyPub, err := warren.NewPublisher(c, warren.PublisherConfig{Mapping: warren.ExistingQueues{}})
	if err != nil {
		t.Fatal(err)
	}
	defer replyPub.Close()
	var subs []*warren.Subscriber
	defer func() {
		for _, s := range subs {
			_ = s.Close()
		}
	}()
	subscriber := func(m warren.Mapping) (message.Subscriber, error) {
		s, err := warren.NewSubscriber(c, warren.SubscriberConfig{Mapping: m})
		if err == nil {
			subs = append(subs, s)
		}
		return s, err
	}
	backend, err := requestreply.NewPubSubBackend[doubled](requestreply.PubSubBackendConfig{
		Publisher: replyPub,
		SubscriberConstructor: func(requestreply.PubSubBackendSubscribeParams) (message.Subscriber, error) {
			return subscriber(replies)
		},
		GenerateSubscribeTopic: func(p requestreply.PubSubBackendSubscribeParams) (string, error) { return string(p.OperationID), nil },
		GeneratePublishTopic: func(p requestreply.PubSubBackendPublishParams) (string, error) {
			return replies.Prefix + string(p.OperationID), nil
		},
		Logger: logger,
	}, requestreply.BackendPubsubJSONMarshaler[doubled]{})
	if err != nil {
		t.Fatal(err)
	}
	router, err := message.NewRouter(message.RouterConfig{}, logger)
	if err != nil {
		t.Fatal(err)
	}
	marshaler := cqrs.JSONMarshaler{}
	bus, err := cqrs.NewCommandBusWithConfig(commandPub, cqrs.CommandBusConfig{
		GeneratePublishTopic: func(p cqrs.CommandBusGeneratePublishTopicParams) (string, error) { return p.CommandName, nil },
		Marshaler:            marshaler, Logger: logger,
	})
	if err != nil {
		t.Fatal(err)
	}
	processor, err := cqrs.NewCommandProcessorWithConfig(router, cqrs.CommandProcessorConfig{
		GenerateSubscribeTopic: func(p cqrs.CommandProcessorGenerateSubscribeTopicParams) (string, error) { return p.CommandName, nil },
		SubscriberConstructor: func(cqrs.CommandProcessorSubscriberConstructorParams) (message.Subscriber, error) {
			return subscriber(commands)
		},
		Marshaler: marshaler, Logger: logger,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := processor.AddHandlers(requestreply.NewCommandHandlerWithResult[double, doubled]("double", backend,
		func(ctx context.Context, cmd *double) (doubled, error) { return doubled{N: 2 * cmd.N}, nil })); err != nil {
		t.Fatal(err)
	}
	runErr := make(chan error, 1)
	go func() { runErr <- router.Run(ctx) }()
	<-router.Running()
	defer func() { _ = router.Close(); <-runErr }()

	for n := 1; n <= 5; n++ {
		reply, err := requestreply.SendWithReply[doubled](ctx, bus, backend, &double{N: n})
		if err != nil {
			t.Fatal(err)
		}
		if reply.Error != nil || reply.HandlerResult.N != 2*n {
			t.Fatalf("request %d: reply %+v", n, reply)
		}
	}
	// Every reply queue goes with its listener.
	deadline := time.Now().Add(20 * time.Second)
	for {
		out, err := b.Ctl(ctx, "list_queues", "-p", b.Vhost, "name", "--no-table-headers")
		if err != nil {
			t.Fatal(err)
		}
		left := slices.DeleteFunc(strings.Fields(out), func(q string) bool { return !strings.HasPrefix(q, replies.Prefix) })
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("reply queues left behind: %v", left)
		}
		time.Sleep(100 * time.Millisecond) // polling the broker, with a deadline
	}
}
