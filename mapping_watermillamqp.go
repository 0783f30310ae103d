package warren

import (
	"github.com/warrenmq/warren/topology"
)

// WatermillAMQP maps topics the way watermill-amqp's Config does, field for
// field, so that a service moving from watermill-amqp to warren (and back,
// in a rollback) declares and uses exactly the queues, exchanges and
// bindings that are already there: the same names, the same durability, no
// arguments. The presets (WatermillAMQPDurablePubSub and the others) are
// watermill-amqp's constructors of the same names. Pair it with
// DefaultMarshaler{WatermillAMQP: true} while both libraries share the
// queues (docs/MIGRATING.md).
type WatermillAMQP struct {
	// ExchangeName is the exchange of a topic; "" for the default exchange
	// (watermill-amqp's Exchange.GenerateName). Nil: "" for every topic.
	ExchangeName func(topic string) string
	// ExchangeType is "fanout", "topic", "direct" or "headers".
	ExchangeType topology.ExchangeType
	// ExchangeDurable declares the exchange durable.
	ExchangeDurable bool
	// QueueName is the queue a subscriber to a topic consumes (Queue.
	// GenerateName). Required to subscribe.
	QueueName func(topic string) string
	// QueueDurable declares the queue durable.
	QueueDurable bool
	// BindingKey is the key the queue is bound to the exchange with
	// (QueueBind.GenerateRoutingKey). Nil: "".
	BindingKey func(topic string) string
	// RoutingKey is the key a topic's messages are published with
	// (Publish.GenerateRoutingKey). Nil: "".
	RoutingKey func(topic string) string
}

func call(f func(string) string, topic string) string {
	if f == nil {
		return ""
	}
	return f(topic)
}

func (m WatermillAMQP) exchange(topic string) (topology.ExchangeSpec, bool) {
	name := call(m.ExchangeName, topic)
	if name == "" {
		return topology.ExchangeSpec{}, false
	}
	return topology.ExchangeSpec{Name: name, Type: m.ExchangeType, Durable: m.ExchangeDurable}, true
}

// Destination publishes to the topic's exchange with its routing key, declaring
// the exchange when it is missing (watermill-amqp's publisher declares it
// too); with the default exchange, to the queue the routing key names,
// declaring the queue when it is missing.
func (m WatermillAMQP) Destination(topic string) (Destination, error) {
	key := call(m.RoutingKey, topic)
	x, ok := m.exchange(topic)
	if !ok {
		q := topology.QueueSpec{Name: key, Durable: m.QueueDurable}
		return Destination{RoutingKey: key, Topology: topology.Topology{Queues: []topology.QueueSpec{q}}}, q.Validate()
	}
	return Destination{Exchange: x.Name, RoutingKey: key, Topology: topology.Topology{Exchanges: []topology.ExchangeSpec{x}}}, x.Validate()
}

// Subscription consumes the topic's queue, bound to its exchange (when it
// has one) with the binding key: what watermill-amqp's DefaultTopologyBuilder
// declares.
func (m WatermillAMQP) Subscription(topic string) (Subscription, error) {
	q := topology.QueueSpec{Name: call(m.QueueName, topic), Durable: m.QueueDurable}
	t := topology.Topology{Queues: []topology.QueueSpec{q}}
	if x, ok := m.exchange(topic); ok {
		t.Exchanges = []topology.ExchangeSpec{x}
		t.Bindings = []topology.BindSpec{{Source: x.Name, Destination: q.Name, RoutingKey: call(m.BindingKey, topic)}}
	}
	return QueueSubscription{Queue: q.Name, Topology: t}, t.Validate()
}

func sameAsTopic(topic string) string { return topic }

// WatermillAMQPDurablePubSub is watermill-amqp's NewDurablePubSubConfig: a
// durable fanout exchange named by the topic, a durable queue per
// subscriber named by queueName (watermill-amqp's
// GenerateQueueNameTopicNameWithSuffix("billing") is
// WatermillAMQPQueueSuffix("billing"), the queue "orders_billing"), bound
// and published with the key "".
func WatermillAMQPDurablePubSub(queueName func(topic string) string) WatermillAMQP {
	return WatermillAMQP{ExchangeName: sameAsTopic, ExchangeType: topology.Fanout, ExchangeDurable: true, QueueName: queueName, QueueDurable: true}
}

// WatermillAMQPNonDurablePubSub is watermill-amqp's
// NewNonDurablePubSubConfig (non-durable exchange and queues: RabbitMQ 4.3
// refuses non-durable queues by default).
func WatermillAMQPNonDurablePubSub(queueName func(topic string) string) WatermillAMQP {
	return WatermillAMQP{ExchangeName: sameAsTopic, ExchangeType: topology.Fanout, QueueName: queueName}
}

// WatermillAMQPDurableQueue is watermill-amqp's NewDurableQueueConfig: a
// durable queue named by the topic, published to through the default
// exchange (QueuePerTopic{} declares the same).
func WatermillAMQPDurableQueue() WatermillAMQP {
	return WatermillAMQP{QueueName: sameAsTopic, QueueDurable: true, RoutingKey: sameAsTopic}
}

// WatermillAMQPNonDurableQueue is watermill-amqp's NewNonDurableQueueConfig.
func WatermillAMQPNonDurableQueue() WatermillAMQP {
	return WatermillAMQP{QueueName: sameAsTopic, RoutingKey: sameAsTopic}
}

// WatermillAMQPDurableTopic is watermill-amqp's NewDurableTopicConfig: the
// topic exchange exchange (not durable: watermill-amqp leaves it so), the
// durable queue queue, bound and published with the topic as key.
func WatermillAMQPDurableTopic(exchange, queue string) WatermillAMQP {
	return WatermillAMQP{ExchangeName: func(string) string { return exchange }, ExchangeType: topology.Topic,
		QueueName: func(string) string { return queue }, QueueDurable: true, BindingKey: sameAsTopic, RoutingKey: sameAsTopic}
}

// WatermillAMQPNonDurableTopic is watermill-amqp's NewNonDurableTopicConfig.
func WatermillAMQPNonDurableTopic(exchange, queue string) WatermillAMQP {
	m := WatermillAMQPDurableTopic(exchange, queue)
	m.QueueDurable = false
	return m
}

// WatermillAMQPQueueSuffix is watermill-amqp's
// GenerateQueueNameTopicNameWithSuffix: topic + "_" + suffix.
func WatermillAMQPQueueSuffix(suffix string) func(topic string) string {
	return func(topic string) string { return topic + "_" + suffix }
}
