package warren_test

import (
	"fmt"

	"github.com/ThreeDotsLabs/watermill/message"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren"
)

// Mappings turn topics into exchanges, queues and bindings, deterministic
// per topic and consumer group.
func ExampleFanoutPerTopic() {
	m := warren.FanoutPerTopic{ConsumerGroup: "billing"}
	route, _ := m.Route("orders")
	sub, _ := m.Subscription("orders")
	fmt.Println("publish to exchange", route.Exchange)
	fmt.Println("consume queue", sub.Queue, "bound to", sub.Topology.Bindings[0].Source)
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
