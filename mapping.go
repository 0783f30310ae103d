package warren

import (
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/warrenmq/warren/topology"
)

// Mapping turns Watermill topics into RabbitMQ topology. Publish sends a
// topic's messages to the Destination's exchange and routing key, after
// declaring the Destination's topology once (so nothing published before the first
// subscriber is lost where the mapping can prevent it). Subscribe consumes
// the Subscription's queue after declaring its topology. Names must be
// deterministic per topic (and consumer group): Watermill publishes before
// it subscribes (PITFALLS 25).
type Mapping interface {
	Destination(topic string) (Destination, error)
	Subscription(topic string) (Subscription, error)
}

// Destination is where messages of a topic are published.
type Destination struct {
	Exchange   string
	RoutingKey string
	// KeyOf, when set, gives each message its own routing key (a
	// partition's, PartitionedTopic) in place of RoutingKey.
	KeyOf func(*message.Message) string
	// Topology is declared (and restored) before the first publish.
	Topology topology.Topology
}

// Subscription is what a subscriber to a topic consumes: a
// QueueSubscription, a StreamSubscription or a PartitionedSubscription. The
// Mapping chooses once per topic, and the Subscriber consumes each kind its
// own way (a queue's messages go once settled; a stream is read from a
// position; a partitioned topic's partitions are shared among its
// subscribers).
type Subscription interface {
	// declares is the topology SubscribeInitialize and Subscribe declare
	// (and restore).
	declares() topology.Topology
}

// QueueSubscription consumes one queue.
type QueueSubscription struct {
	Queue string
	// Topology is declared (and restored) by SubscribeInitialize and
	// Subscribe: the queue, its exchange and bindings.
	Topology topology.Topology
}

func (s QueueSubscription) declares() topology.Topology { return s.Topology }

func queueSpec(name string, transient bool, args topology.QueueArgs, life Lifetime) topology.QueueSpec {
	q := topology.QueueSpec{Name: name, Durable: true, Args: args}
	switch life {
	case UntilUnused:
		q.AutoDelete = true
	case ConnectionOnly:
		q.Exclusive, q.Durable = true, false
		return q
	}
	if transient && q.Args.Expires == 0 {
		// Not a non-durable queue: RabbitMQ 4.3 refuses non-durable
		// non-exclusive queues by default (release notes 4.3.0,
		// transient_nonexcl_queues); what it advises instead is a durable
		// queue that expires.
		q.Args.Expires = TransientQueueExpiry
	}
	return q
}

// TransientQueueExpiry is how long a Transient mapping's queue lives
// unused (x-expires) unless its QueueArgs say otherwise.
const TransientQueueExpiry = time.Hour

// Lifetime is how long a subscription's queue lives on the broker, so that
// reply-like and per-instance topics leave nothing behind. (A queue that
// should go after a while unused is QueueArgs.Expires, x-expires.)
type Lifetime int

const (
	// Lasting queues stay until deleted. The default.
	Lasting Lifetime = iota
	// UntilUnused queues are deleted by the broker when their last
	// consumer goes (auto-delete): messages published while nobody
	// consumes are lost with them.
	UntilUnused
	// ConnectionOnly queues belong to the subscriber's connection
	// (exclusive, non-durable) and are deleted when it closes; after a
	// reconnect the queue is declared again, empty. For replies and
	// per-instance topics.
	ConnectionOnly
)

// QueuePerTopic: one queue per topic, named Prefix+topic, published through
// the default exchange. Every subscriber of a topic competes for the same
// queue, so consumer groups do not exist here (the default exchange routes
// to exactly one queue); use FanoutPerTopic or TopicExchange for them.
type QueuePerTopic struct {
	Prefix string
	// Transient makes the exchanges non-durable and the queues go once
	// unused for TransientQueueExpiry (QueueArgs.Expires, x-expires): the
	// queues are durable, because RabbitMQ 4.3 refuses non-durable
	// non-exclusive queues (release notes 4.3.0). Default: lasting.
	Transient bool
	QueueArgs topology.QueueArgs
	// Lifetime of the queues. Default: Lasting.
	Lifetime Lifetime
}

func (m QueuePerTopic) spec(topic string) topology.QueueSpec {
	return queueSpec(m.Prefix+topic, m.Transient, m.QueueArgs, m.Lifetime)
}

// Destination publishes to the default exchange, declaring the queue first.
func (m QueuePerTopic) Destination(topic string) (Destination, error) {
	q := m.spec(topic)
	return Destination{RoutingKey: q.Name, Topology: topology.Topology{Queues: []topology.QueueSpec{q}}}, q.Validate()
}

// Subscription consumes the topic's queue.
func (m QueuePerTopic) Subscription(topic string) (Subscription, error) {
	q := m.spec(topic)
	return QueueSubscription{Queue: q.Name, Topology: topology.Topology{Queues: []topology.QueueSpec{q}}}, q.Validate()
}

// FanoutPerTopic: one fanout exchange per topic (Prefix+topic), one queue
// per consumer group bound to it (Prefix+topic+"."+ConsumerGroup, or
// Prefix+topic without a group). Each group gets every message; subscribers
// of one group compete. watermill-amqp's pub/sub presets name the queue
// topic+"_"+suffix instead: migrating from them, use
// WatermillAMQPDurablePubSub, or a second queue appears beside the first.
type FanoutPerTopic struct {
	Prefix        string
	ConsumerGroup string
	// Transient makes the exchanges non-durable and the queues go once
	// unused for TransientQueueExpiry (QueueArgs.Expires, x-expires): the
	// queues are durable, because RabbitMQ 4.3 refuses non-durable
	// non-exclusive queues (release notes 4.3.0). Default: lasting.
	Transient bool
	QueueArgs topology.QueueArgs
	// Lifetime of the queues. Default: Lasting.
	Lifetime Lifetime
}

func (m FanoutPerTopic) exchange(topic string) topology.ExchangeSpec {
	return topology.ExchangeSpec{Name: m.Prefix + topic, Type: topology.Fanout, Durable: !m.Transient}
}

// Destination publishes to the topic's exchange, declaring it first.
func (m FanoutPerTopic) Destination(topic string) (Destination, error) {
	x := m.exchange(topic)
	return Destination{Exchange: x.Name, Topology: topology.Topology{Exchanges: []topology.ExchangeSpec{x}}}, x.Validate()
}

// Subscription consumes the group's queue, bound to the topic's exchange.
func (m FanoutPerTopic) Subscription(topic string) (Subscription, error) {
	x := m.exchange(topic)
	name := m.Prefix + topic
	if m.ConsumerGroup != "" {
		name += "." + m.ConsumerGroup
	}
	q := queueSpec(name, m.Transient, m.QueueArgs, m.Lifetime)
	t := topology.Topology{
		Exchanges: []topology.ExchangeSpec{x},
		Queues:    []topology.QueueSpec{q},
		Bindings:  []topology.BindSpec{{Source: x.Name, Destination: q.Name}},
	}
	return QueueSubscription{Queue: q.Name, Topology: t}, t.Validate()
}

// TopicExchange: one topic exchange (Exchange, default "warren.topics") for
// every topic, the Watermill topic being the routing key. A subscriber's
// queue (Prefix+topic[+"."+ConsumerGroup]) binds the patterns given by
// Patterns (default: the topic itself), so a subscription can take
// "orders.*" or "orders.#".
type TopicExchange struct {
	Exchange      string
	Prefix        string
	ConsumerGroup string
	// Patterns returns the binding keys of a subscription to topic.
	// Default: []string{topic}.
	Patterns func(topic string) []string
	// Transient makes the exchanges non-durable and the queues go once
	// unused for TransientQueueExpiry (QueueArgs.Expires, x-expires): the
	// queues are durable, because RabbitMQ 4.3 refuses non-durable
	// non-exclusive queues (release notes 4.3.0). Default: lasting.
	Transient bool
	QueueArgs topology.QueueArgs
	// Lifetime of the queues. Default: Lasting.
	Lifetime Lifetime
}

func (m TopicExchange) exchange() topology.ExchangeSpec {
	name := m.Exchange
	if name == "" {
		name = "warren.topics"
	}
	return topology.ExchangeSpec{Name: name, Type: topology.Topic, Durable: !m.Transient}
}

// Destination publishes to the exchange with the topic as routing key.
func (m TopicExchange) Destination(topic string) (Destination, error) {
	x := m.exchange()
	return Destination{Exchange: x.Name, RoutingKey: topic, Topology: topology.Topology{Exchanges: []topology.ExchangeSpec{x}}}, x.Validate()
}

// Subscription consumes a queue bound with the subscription's patterns.
func (m TopicExchange) Subscription(topic string) (Subscription, error) {
	x := m.exchange()
	name := m.Prefix + topic
	if m.ConsumerGroup != "" {
		name += "." + m.ConsumerGroup
	}
	q := queueSpec(name, m.Transient, m.QueueArgs, m.Lifetime)
	patterns := []string{topic}
	if m.Patterns != nil {
		patterns = m.Patterns(topic)
	}
	t := topology.Topology{Exchanges: []topology.ExchangeSpec{x}, Queues: []topology.QueueSpec{q}}
	for _, p := range patterns {
		t.Bindings = append(t.Bindings, topology.BindSpec{Source: x.Name, Destination: q.Name, RoutingKey: p})
	}
	return QueueSubscription{Queue: q.Name, Topology: t}, t.Validate()
}

// ExistingQueues publishes to the queue named by the topic through the
// default exchange and consumes it, declaring nothing: for queues declared
// elsewhere with arguments of their own (delay queues, dead-letter queues),
// which a plain declare would conflict with (406).
type ExistingQueues struct{}

// Destination publishes to the default exchange with the topic as routing key.
func (ExistingQueues) Destination(topic string) (Destination, error) {
	return Destination{RoutingKey: topic}, nil
}

// Subscription consumes the queue named topic.
func (ExistingQueues) Subscription(topic string) (Subscription, error) {
	return QueueSubscription{Queue: topic}, nil
}
