package tests

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/warrenmq/warren"
	"github.com/warrenmq/warren/ack"
	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/conn"
	"github.com/warrenmq/warren/middleware"
	"github.com/warrenmq/warren/retry"
	"github.com/warrenmq/warren/router"
	"github.com/warrenmq/warren/telemetry"
	"github.com/warrenmq/warren/topology"
)

// TestBadInputs: invalid input across the public API returns a typed,
// readable error and never panics. No broker is reached: every one of
// these fails before the network.
func TestBadInputs(t *testing.T) {
	ctx := context.Background()
	unopened := func() *conn.Conn {
		c, err := conn.New("amqp://guest:guest@127.0.0.1:1/", conn.Config{})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	closed := unopened()
	_ = closed.Close(ctx)
	ops, _ := broker.NewOps(unopened(), broker.OpsConfig{})
	closedPub, _ := warren.NewPublisher(unopened(), warren.PublisherConfig{})
	_ = closedPub.Close()
	closedSub, _ := warren.NewSubscriber(unopened(), warren.SubscriberConfig{})
	_ = closedSub.Close()
	closedRouter, _ := router.New(unopened(), router.Config{})
	_ = closedRouter.Close(ctx)
	h := func(*message.Message) error { return nil }
	// Open (never connected) ones: the call must fail before it waits for a
	// connection.
	openPub, _ := warren.NewPublisher(unopened(), warren.PublisherConfig{})
	defer openPub.Close()
	openSub, _ := warren.NewSubscriber(unopened(), warren.SubscriberConfig{})
	defer openSub.Close()
	long := strings.Repeat("q", 300)
	second := func(_ any, err error) error { return err }

	tests := []struct {
		name string
		call func() error
		is   error // a sentinel the error must match
	}{
		{"conn.New empty URL", func() error { return second(conn.New("", conn.Config{})) }, conn.ErrInvalidConfig},
		{"conn.New wrong scheme", func() error { return second(conn.New("http://h", conn.Config{})) }, conn.ErrInvalidConfig},
		{"conn.New port out of range", func() error { return second(conn.New("amqp://h:99999", conn.Config{})) }, conn.ErrInvalidConfig},
		{"conn.New bad heartbeat", func() error { return second(conn.New("amqp://h?heartbeat=x", conn.Config{})) }, conn.ErrInvalidConfig},
		{"conn.New unknown parameter", func() error { return second(conn.New("amqp://h?hartbeat=1", conn.Config{})) }, conn.ErrInvalidConfig},
		{"conn.New negative heartbeat field", func() error { return second(conn.New("amqp://h", conn.Config{Heartbeat: -1})) }, conn.ErrInvalidConfig},
		{"conn.New bad alternate URL", func() error { return second(conn.New("amqp://h", conn.Config{AlternateURLs: []string{"x"}})) }, conn.ErrInvalidConfig},
		{"conn.New missing CA file", func() error { return second(conn.New("amqps://h?cafile=/nope.pem", conn.Config{})) }, conn.ErrInvalidConfig},
		{"conn.Shared bad URL", func() error { return second(conn.Shared("amqp://[::1", conn.Config{})) }, conn.ErrInvalidConfig},
		{"Channel before Open", func() error { return second(unopened().Channel(ctx)) }, conn.ErrNotOpen},
		{"Refresh before Open", func() error { return unopened().Refresh(ctx) }, conn.ErrNotOpen},
		{"Open after Close", func() error { return closed.Open(ctx) }, conn.ErrClosed},
		{"NewChannel after Close", func() error { return second(closed.NewChannel(ctx)) }, conn.ErrClosed},
		{"broker.NewOps nil conn", func() error { return second(broker.NewOps(nil, broker.OpsConfig{})) }, conn.ErrInvalidConfig},
		{"broker.NewOps negative timeout", func() error { return second(broker.NewOps(unopened(), broker.OpsConfig{Timeout: -1})) }, conn.ErrInvalidConfig},
		{"declare exchange of unknown type", func() error { return ops.DeclareExchange(ctx, topology.ExchangeSpec{Name: "x", Type: "fancy"}) }, topology.ErrInvalidSpec},
		{"declare the default exchange", func() error { return ops.DeclareExchange(ctx, topology.DefaultExchange()) }, broker.ErrReadOnly},
		{"delete amq.direct", func() error { return ops.DeleteExchange(ctx, "amq.direct", broker.DeleteOptions{}) }, broker.ErrReadOnly},
		{"declare non-durable quorum queue", func() error {
			return second(ops.DeclareQueue(ctx, topology.QueueSpec{Name: "q", Args: topology.QueueArgs{Type: topology.Quorum}}))
		}, topology.ErrInvalidSpec},
		{"declare a 300-byte queue name", func() error { return second(ops.DeclareQueue(ctx, topology.QueueSpec{Name: long})) }, topology.ErrInvalidSpec},
		{"max priority 300", func() error {
			return second(ops.DeclareQueue(ctx, topology.QueueSpec{Name: "q", Args: topology.QueueArgs{MaxPriority: 300}}))
		}, topology.ErrInvalidSpec},
		{"bind the default exchange", func() error { return ops.Bind(ctx, topology.BindSpec{Destination: "q"}) }, topology.ErrInvalidSpec},
		{"consume with a nil handler", func() error { return second(ops.Consume(ctx, broker.ConsumerSpec{Queue: "q"})) }, topology.ErrInvalidSpec},
		{"stop a nil consumer", func() error { var none *broker.Consumer; return none.Stop(ctx) }, topology.ErrInvalidSpec},
		{"inspect an empty name", func() error { return second(ops.Inspect(ctx, "")) }, topology.ErrInvalidSpec},
		{"delayed exchange of headers type", func() error {
			return topology.DelayedExchangeSpec{Name: "d", DelayedType: topology.Headers}.Validate()
		}, topology.ErrInvalidSpec},
		{"NewPublisher nil conn", func() error { return second(warren.NewPublisher(nil, warren.PublisherConfig{})) }, conn.ErrInvalidConfig},
		{"NewPublisher 0 < confirm channels", func() error {
			return second(warren.NewPublisher(unopened(), warren.PublisherConfig{ConfirmChannels: -2}))
		}, conn.ErrInvalidConfig},
		{"NewSubscriber negative MaxInFlight", func() error {
			return second(warren.NewSubscriber(unopened(), warren.SubscriberConfig{MaxInFlight: -1}))
		}, conn.ErrInvalidConfig},
		{"Publish after Close", func() error { return closedPub.Publish("t", message.NewMessage("1", nil)) }, conn.ErrClosed},
		{"Subscribe after Close", func() error { return second(closedSub.Subscribe(ctx, "t")) }, conn.ErrClosed},
		{"priority metadata not a number", func() error {
			m := message.NewMessage("1", nil)
			m.Metadata.Set(warren.MetaPriority, "urgent")
			return second(warren.DefaultMarshaler{}.Marshal("t", m))
		}, warren.ErrInvalidMessage},
		{"Publish a nil message", func() error { return openPub.Publish("t", message.NewMessage("1", nil), nil) }, warren.ErrInvalidMessage},
		{"Publish to an empty topic", func() error { return openPub.Publish("", message.NewMessage("1", nil)) }, warren.ErrInvalidTopic},
		{"Publish to a 300-byte topic", func() error { return openPub.Publish(long, message.NewMessage("1", nil)) }, warren.ErrInvalidTopic},
		{"Subscribe to an empty topic", func() error { return second(openSub.Subscribe(ctx, "")) }, warren.ErrInvalidTopic},
		{"SubscribeInitialize an empty topic", func() error { return openSub.SubscribeInitialize("") }, warren.ErrInvalidTopic},
		{"Subscriber redelivery cap over 10m", func() error {
			return second(warren.NewSubscriber(unopened(), warren.SubscriberConfig{Redelivery: warren.RedeliveryConfig{Backoff: retry.Backoff{MaxInterval: time.Hour}}}))
		}, conn.ErrInvalidConfig},
		{"Retry with negative MaxAttempts", func() error { return second(middleware.Retry(middleware.RetryConfig{MaxAttempts: -1})) }, conn.ErrInvalidConfig},
		{"Retry past consumer_timeout", func() error {
			return second(middleware.Retry(middleware.RetryConfig{MaxElapsedTime: time.Hour}))
		}, conn.ErrInvalidConfig},
		{"Ack acking failures", func() error { return second(middleware.Ack(middleware.AckConfig{OnError: ack.Ack})) }, conn.ErrInvalidConfig},
		{"telemetry with an unknown process relation", func() error {
			return second(telemetry.New(telemetry.Config{Process: telemetry.Relation(7)}))
		}, conn.ErrInvalidConfig},
		{"router negative CloseTimeout", func() error { return second(router.New(unopened(), router.Config{CloseTimeout: -1})) }, conn.ErrInvalidConfig},
		{"router bad output publisher", func() error {
			return second(router.New(unopened(), router.Config{Output: warren.PublisherConfig{PublishTimeout: -1}}))
		}, conn.ErrInvalidConfig},
		{"DelayedRetry without publisher", func() error { return second(middleware.DelayedRetry(middleware.DelayedRetryConfig{})) }, conn.ErrInvalidConfig},
		{"DelayedRetry with a zero level", func() error {
			return second(middleware.DelayedRetry(middleware.DelayedRetryConfig{Publisher: closedPub, Levels: []time.Duration{0}}))
		}, conn.ErrInvalidConfig},
		{"DeadLetter publish mode without publisher", func() error {
			return second(middleware.DeadLetter(middleware.DeadLetterConfig{Mode: middleware.PublishToDLQ}))
		}, conn.ErrInvalidConfig},
		{"router.New nil conn", func() error { return second(router.New(nil, router.Config{})) }, conn.ErrInvalidConfig},
		{"route without a name", func() error {
			r, _ := router.New(unopened(), router.Config{})
			return r.AddRoute(router.Route{Queue: topology.QueueSpec{Name: "q"}, Handler: h})
		}, router.ErrInvalidRoute},
		{"AddRoute after Close", func() error {
			return closedRouter.AddRoute(router.Route{Name: "n", Queue: topology.QueueSpec{Name: "q"}, Handler: h})
		}, conn.ErrClosed},
		{"Run after Close", func() error { return closedRouter.Run(ctx) }, conn.ErrClosed},
	}
	if len(tests) < 30 {
		t.Fatalf("only %d bad inputs", len(tests))
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var err error
			func() {
				defer func() {
					if r := recover(); r != nil {
						err = fmt.Errorf("panicked: %v", r)
						t.Fatalf("%s panicked: %v", tt.name, r)
					}
				}()
				err = tt.call()
			}()
			if err == nil {
				t.Fatal("no error")
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Fatalf("%v does not match %v", err, tt.is)
			}
			if len(err.Error()) < 10 {
				t.Fatalf("unreadable error %q", err)
			}
			t.Logf("%s: %v", tt.name, err)
		})
	}
}
