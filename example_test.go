package warren_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren"
	"github.com/warrenmq/warren/ack"
	"github.com/warrenmq/warren/conn"
	"github.com/warrenmq/warren/internal/rabbittest"
	"github.com/warrenmq/warren/router"
	"github.com/warrenmq/warren/topology"
)

// Mappings turn topics into exchanges, queues and bindings, deterministic
// per topic and consumer group.
func ExampleFanoutPerTopic() {
	m := warren.FanoutPerTopic{ConsumerGroup: "billing"}
	route, _ := m.Destination("orders")
	sub, _ := m.Subscription("orders")
	q := sub.(warren.QueueSubscription)
	fmt.Println("publish to exchange", route.Exchange)
	fmt.Println("consume queue", q.Queue, "bound to", q.Topology.Bindings[0].Source)
	// Output:
	// publish to exchange orders
	// consume queue orders.billing bound to orders
}

// Headers of any AMQP type decode into string metadata; nothing fails.
func ExampleDefaultMarshaler_Unmarshal() {
	d := amqp.Delivery{MessageId: "id-1", Body: []byte("{}"), Headers: amqp.Table{
		"x-delivery-count": int64(2),
		"x-death":          []any{amqp.Table{"queue": "work", "reason": "rejected", "count": int64(1)}},
	}}
	msg, err := warren.DefaultMarshaler{}.Unmarshal(&d)
	fmt.Println(err, msg.UUID, msg.Metadata.Get("x-delivery-count"), msg.Metadata.Get("x-death"))
	// Output: <nil> id-1 2 [{"count":1,"queue":"work","reason":"rejected"}]
}

// AMQP properties are set through metadata keys.
func ExampleDefaultMarshaler_Marshal() {
	msg := message.NewMessage("id-2", []byte(`{"id":7}`))
	msg.Metadata.Set(warren.MetaContentType, "application/json")
	msg.Metadata.Set(warren.MetaCorrelationID, "req-42")
	msg.Metadata.Set("tenant", "acme")
	p, _ := warren.DefaultMarshaler{}.Marshal("orders", msg)
	fmt.Println(p.MessageId, p.ContentType, p.CorrelationId, p.Headers["tenant"], p.DeliveryMode == amqp.Persistent)
	// Output: id-2 application/json req-42 acme true
}

// A partitioned topic: each partition key goes to one of N quorum queues,
// which the topic's subscribers share (each reads its partitions one
// message at a time, so a key's messages are handled in order, across
// instances and hand-overs).
func ExamplePartitionedTopic() {
	m := warren.PartitionedTopic{Partitions: 4}
	route, _ := m.Destination("orders")
	sub, _ := m.Subscription("orders")
	p := sub.(warren.PartitionedSubscription)
	msg := message.NewMessage("id-3", nil)
	msg.Metadata.Set(warren.PartitionKeyMetadata, "customer-42")
	fmt.Println("publish to exchange", route.Exchange, "with routing key", route.KeyOf(msg))
	fmt.Println("partitions", p.Partitions, "members counted on", p.Members)
	// Output:
	// publish to exchange orders with routing key 2
	// partitions [orders.p0 orders.p1 orders.p2 orders.p3] members counted on orders.members
}

// A stream per topic: every subscriber reads the whole stream from its
// start offset; a named reader resumes where it stopped.
func ExampleStreamPerTopic() {
	m := warren.StreamPerTopic{Consumer: "audit", Start: warren.StreamFirst(), MaxAge: 7 * 24 * time.Hour}
	route, _ := m.Destination("orders")
	sub, _ := m.Subscription("orders")
	st := sub.(warren.StreamSubscription)
	fmt.Println("publish to", route.RoutingKey, "through the default exchange")
	fmt.Println("read", st.Stream, st.Topology.Queues[0].Args.Type)
	// Output:
	// publish to orders through the default exchange
	// read orders stream
}

// brokerURL is the broker of the examples: in a service, your own
// ("amqp://guest:guest@127.0.0.1:5672/"); here, the test package's vhost.
var brokerURL = rabbittest.PackageURL

// A Publisher and a Subscriber on one connection: the mapping declares the
// topic's queue on either side, so nothing published before the first
// subscriber is lost.
func Example_publishAndSubscribe() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := conn.New(brokerURL(), conn.Config{})
	if err != nil {
		log.Fatal(err)
	}
	if err := c.Open(ctx); err != nil {
		log.Fatal(err)
	}
	defer c.Close(context.Background())

	m := warren.QueuePerTopic{Prefix: "example."}
	pub, err := warren.NewPublisher(c, warren.PublisherConfig{Mapping: m})
	if err != nil {
		log.Fatal(err)
	}
	defer pub.Close()
	sub, err := warren.NewSubscriber(c, warren.SubscriberConfig{Mapping: m})
	if err != nil {
		log.Fatal(err)
	}
	defer sub.Close()

	// Published before anyone subscribes: the queue is declared first.
	if err := pub.Publish("greetings", message.NewMessage("hello-1", []byte("hello, warren"))); err != nil {
		log.Fatal(err)
	}
	msgs, err := sub.Subscribe(ctx, "greetings")
	if err != nil {
		log.Fatal(err)
	}
	msg := <-msgs
	fmt.Printf("%s: %s (attempt %d)\n", msg.UUID, msg.Payload, ack.Attempt(msg))
	msg.Ack()
	// Output: hello-1: hello, warren (attempt 1)
}

// A Requester asks, a router route with Respond answers, over RabbitMQ's
// direct reply-to: no reply queue, nothing left behind.
func ExampleRequester() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := conn.New(brokerURL(), conn.Config{})
	if err != nil {
		log.Fatal(err)
	}
	if err := c.Open(ctx); err != nil {
		log.Fatal(err)
	}
	defer c.Close(context.Background())

	r, err := router.New(c, router.Config{})
	if err != nil {
		log.Fatal(err)
	}
	prices := map[string]int{"tea": 300}
	err = r.AddRoute(router.Route{
		Name:  "prices",
		Queue: topology.QueueSpec{Name: "example.prices", Durable: true},
		Respond: func(m *message.Message) (*message.Message, error) {
			p, ok := prices[string(m.Payload)]
			if !ok {
				return nil, ack.Permanent(fmt.Errorf("we do not sell %s", m.Payload))
			}
			return message.NewMessage(m.UUID+"-reply", []byte(fmt.Sprintf("%s costs %d", m.Payload, p))), nil
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	go func() { _ = r.Run(ctx) }()
	defer r.Close(context.Background())
	if err := r.WaitRunning(ctx); err != nil {
		log.Fatal(err)
	}

	rq, err := warren.NewRequester(c, warren.RequesterConfig{})
	if err != nil {
		log.Fatal(err)
	}
	defer rq.Close()
	reply, err := rq.Request(ctx, "example.prices", message.NewMessage("q-1", []byte("tea")))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(string(reply.Payload))
	_, err = rq.Request(ctx, "example.prices", message.NewMessage("q-2", []byte("unicorns")))
	fmt.Println(err)
	// Output:
	// tea costs 300
	// warren: the responder failed (_OTHER): we do not sell unicorns
}
