package interop

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wamqp "github.com/ThreeDotsLabs/watermill-amqp/v3/pkg/amqp"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/warrenmq/warren"
	"github.com/warrenmq/warren/conn"
	"github.com/warrenmq/warren/internal/rabbittest"
)

// TestInteropWithWatermillAMQP: services on watermill-amqp and on warren
// share a queue during a migration, both ways, and each reads the other's
// message UUID (warren writing watermill-amqp's header when told to).
func TestInteropWithWatermillAMQP(t *testing.T) {
	if testing.Short() {
		t.Skip("needs the broker; -short runs unit tests only")
	}
	url, remove, err := rabbittest.NewVhost(fmt.Sprintf("warren-interop-%d", os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(remove)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	logger := watermill.NopLogger{}
	wcfg := wamqp.NewDurableQueueConfig(url)
	wpub, err := wamqp.NewPublisher(wcfg, logger)
	if err != nil {
		t.Fatal(err)
	}
	defer wpub.Close()
	wsub, err := wamqp.NewSubscriber(wcfg, logger)
	if err != nil {
		t.Fatal(err)
	}
	defer wsub.Close()

	c, err := conn.New(url, conn.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Open(ctx); err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	// The durable-queue preset of both libraries: a durable queue named by
	// the topic, published to through the default exchange.
	mapping := warren.QueuePerTopic{}
	pub, err := warren.NewPublisher(c, warren.PublisherConfig{Mapping: mapping, Marshaler: warren.DefaultMarshaler{WatermillAMQP: true}})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	sub, err := warren.NewSubscriber(c, warren.SubscriberConfig{Mapping: mapping})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()

	t.Run("watermill-amqp to warren", func(t *testing.T) {
		got, err := sub.Subscribe(ctx, "interop.a")
		if err != nil {
			t.Fatal(err)
		}
		if err := wpub.Publish("interop.a", message.NewMessage("from-watermill-amqp", []byte("x"))); err != nil {
			t.Fatal(err)
		}
		m := receive(t, got)
		if m.UUID != "from-watermill-amqp" {
			t.Fatalf("warren read UUID %q", m.UUID)
		}
	})
	t.Run("warren to watermill-amqp", func(t *testing.T) {
		got, err := wsub.Subscribe(ctx, "interop.b")
		if err != nil {
			t.Fatal(err)
		}
		if err := pub.Publish("interop.b", message.NewMessage("from-warren", []byte("x"))); err != nil {
			t.Fatal(err)
		}
		m := receive(t, got)
		if m.UUID != "from-warren" {
			t.Fatalf("watermill-amqp read UUID %q", m.UUID)
		}
	})
}

func receive(t *testing.T, got <-chan *message.Message) *message.Message {
	t.Helper()
	select {
	case m := <-got:
		m.Ack()
		return m
	case <-time.After(20 * time.Second):
		t.Fatal("nothing arrived")
		return nil
	}
}
