package interop

import (
	"context"
	"fmt"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wamqp "github.com/ThreeDotsLabs/watermill-amqp/v3/pkg/amqp"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/warrenmq/warren"
	"github.com/warrenmq/warren/conn"
	"github.com/warrenmq/warren/internal/rabbittest"
)

var vhostSeq atomic.Int64

// vhost is a vhost of the test's own, removed when it ends.
func vhost(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("needs the broker; -short runs unit tests only")
	}
	url, remove, err := rabbittest.NewVhost(fmt.Sprintf("warren-interop-%d-%d", os.Getpid(), vhostSeq.Add(1)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(remove)
	return url
}

func openConn(t *testing.T, url string) *conn.Conn {
	t.Helper()
	return rabbittest.OpenConn(t, url, conn.Config{})
}

// TestPresetsMatchWatermillAMQP: each of watermill-amqp's config presets
// and warren's mapping of the same name declare the same queues, exchanges
// and bindings: whichever side declares first, the other finds them
// equivalent (no 406) and uses the same queue (no second queue on the same
// exchange, no message handled twice), and messages cross both ways with
// their UUIDs.
func TestPresetsMatchWatermillAMQP(t *testing.T) {
	presets := []struct {
		name    string
		wamqp   func(url string) wamqp.Config
		warren  warren.Mapping
		queueOf string // the queue a subscriber of topic "orders" consumes
	}{
		{"DurablePubSub", func(url string) wamqp.Config {
			return wamqp.NewDurablePubSubConfig(url, wamqp.GenerateQueueNameTopicNameWithSuffix("billing"))
		}, warren.WatermillAMQPDurablePubSub(warren.WatermillAMQPQueueSuffix("billing")), "orders_billing"},
		{"NonDurablePubSub", func(url string) wamqp.Config {
			return wamqp.NewNonDurablePubSubConfig(url, wamqp.GenerateQueueNameTopicNameWithSuffix("billing"))
		}, warren.WatermillAMQPNonDurablePubSub(warren.WatermillAMQPQueueSuffix("billing")), "orders_billing"},
		{"DurableQueue", wamqp.NewDurableQueueConfig, warren.WatermillAMQPDurableQueue(), "orders"},
		{"DurableQueue as QueuePerTopic", wamqp.NewDurableQueueConfig, warren.QueuePerTopic{}, "orders"},
		{"NonDurableQueue", wamqp.NewNonDurableQueueConfig, warren.WatermillAMQPNonDurableQueue(), "orders"},
		{"DurableTopic", func(url string) wamqp.Config { return wamqp.NewDurableTopicConfig(url, "shop", "shop_orders") },
			warren.WatermillAMQPDurableTopic("shop", "shop_orders"), "shop_orders"},
		{"NonDurableTopic", func(url string) wamqp.Config { return wamqp.NewNonDurableTopicConfig(url, "shop", "shop_orders") },
			warren.WatermillAMQPNonDurableTopic("shop", "shop_orders"), "shop_orders"},
	}
	for _, p := range presets {
		for _, warrenFirst := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/warren first %v", p.name, warrenFirst), func(t *testing.T) {
				url := vhost(t)
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				wcfg := p.wamqp(url)
				wcfg.Marshaler = wamqp.DefaultMarshaler{NotPersistentDeliveryMode: wcfg.Marshaler.(wamqp.DefaultMarshaler).NotPersistentDeliveryMode}
				wsub, err := wamqp.NewSubscriber(wcfg, watermill.NopLogger{})
				if err != nil {
					t.Fatal(err)
				}
				defer wsub.Close()
				wpub, err := wamqp.NewPublisher(wcfg, watermill.NopLogger{})
				if err != nil {
					t.Fatal(err)
				}
				defer wpub.Close()
				c := openConn(t, url)
				marshaler := warren.DefaultMarshaler{WatermillAMQP: true}
				sub, err := warren.NewSubscriber(c, warren.SubscriberConfig{Mapping: p.warren, Marshaler: marshaler})
				if err != nil {
					t.Fatal(err)
				}
				defer sub.Close()
				pub, err := warren.NewPublisher(c, warren.PublisherConfig{Mapping: p.warren, Marshaler: marshaler})
				if err != nil {
					t.Fatal(err)
				}
				defer pub.Close()
				initWamqp := func() {
					if err := wsub.SubscribeInitialize("orders"); err != nil {
						t.Fatalf("watermill-amqp declares: %v", err)
					}
				}
				initWarren := func() {
					if err := sub.SubscribeInitialize("orders"); err != nil {
						t.Fatalf("warren declares: %v", err)
					}
				}
				if warrenFirst {
					initWarren()
					initWamqp()
				} else {
					initWamqp()
					initWarren()
				}
				// Both consume the one queue: the two messages arrive once
				// each, whichever consumer takes them.
				wout, err := wsub.Subscribe(ctx, "orders")
				if err != nil {
					t.Fatal(err)
				}
				out, err := sub.Subscribe(ctx, "orders")
				if err != nil {
					t.Fatal(err)
				}
				if err := pub.Publish("orders", message.NewMessage("from-warren", []byte("1"))); err != nil {
					t.Fatal(err)
				}
				if err := wpub.Publish("orders", message.NewMessage("from-watermill-amqp", []byte("2"))); err != nil {
					t.Fatal(err)
				}
				got := map[string]int{}
				for len(got) < 2 {
					select {
					case m := <-wout:
						got[m.UUID]++
						m.Ack()
					case m := <-out:
						got[m.UUID]++
						m.Ack()
					case <-ctx.Done():
						t.Fatalf("received %v, want both messages", got)
					}
				}
				if got["from-warren"] != 1 || got["from-watermill-amqp"] != 1 {
					t.Fatalf("received %v, want each message once with its UUID", got)
				}
				// One queue, not two: nothing waits in a queue of its own.
				ch := rabbittest.RawChannel(t, url)
				q, err := ch.QueueDeclarePassive(p.queueOf, false, false, false, false, nil)
				if err != nil {
					t.Fatalf("queue %s: %v", p.queueOf, err)
				}
				if q.Consumers != 2 {
					t.Fatalf("queue %s has %d consumers, want both services' on the one queue", p.queueOf, q.Consumers)
				}
			})
		}
	}
}
