package topology

import (
	"context"
	"errors"
	"fmt"

	amqp "github.com/rabbitmq/amqp091-go"
)

// ExchangeType is an exchange's routing type.
type ExchangeType string

const (
	Direct  ExchangeType = "direct"
	Fanout  ExchangeType = "fanout"
	Topic   ExchangeType = "topic"
	Headers ExchangeType = "headers"
	// Delayed is the rabbitmq_delayed_message_exchange plugin's type; build
	// it with DelayedExchangeSpec.
	Delayed ExchangeType = "x-delayed-message"
)

// ExchangeSpec declares an exchange.
type ExchangeSpec struct {
	Name string
	// Type is direct, fanout, topic or headers.
	Type       ExchangeType
	Durable    bool
	AutoDelete bool
	// Internal exchanges take no publishes, only exchange-to-exchange
	// bindings (sent as the real flag; rmqaio never sent it).
	Internal bool
	// ReadOnly entities are never declared or deleted, only checked to exist.
	// The default exchange and amq.* names are read-only by themselves.
	ReadOnly bool
	Args     ExchangeArgs
}

func (s ExchangeSpec) label() string { return fmt.Sprintf("exchange %q", display(s.Name)) }

// IsReadOnly reports whether s is only checked, never declared or deleted.
func (s ExchangeSpec) IsReadOnly() bool { return s.ReadOnly || builtIn(s.Name) }

// Validate checks s without any network call; errors are *SpecError.
func (s ExchangeSpec) Validate() error {
	spec := s.label()
	var errs []error
	if err := checkName(spec, "Name", s.Name, true); err != nil {
		errs = append(errs, err)
	}
	switch s.Type {
	case Direct, Fanout, Topic, Headers:
	case Delayed:
		dt, _ := s.Args.Extra["x-delayed-type"].(string)
		switch ExchangeType(dt) {
		case Direct, Fanout, Topic:
		default:
			errs = append(errs, &SpecError{spec, "Args.Extra", fmt.Sprintf("x-delayed-type %q: want direct, fanout or topic", dt)})
		}
	case "":
		if !builtIn(s.Name) {
			errs = append(errs, &SpecError{spec, "Type", "must be set (direct, fanout, topic or headers)"})
		}
	default:
		errs = append(errs, &SpecError{spec, "Type", fmt.Sprintf("unknown exchange type %q", s.Type)})
	}
	if err := checkName(spec, "Args.AlternateExchange", s.Args.AlternateExchange, true); err != nil {
		errs = append(errs, err)
	}
	typed := map[string]string{"alternate-exchange": "Args.AlternateExchange"}
	errs = append(errs, validateExtra(spec, "Args.Extra", s.Args.Extra, typed)...)
	return errors.Join(errs...)
}

// DefaultExchange is the "" exchange: read-only, direct, routing by queue
// name.
func DefaultExchange() ExchangeSpec {
	return ExchangeSpec{Name: "", Type: Direct, Durable: true, ReadOnly: true}
}

// DelayedExchangeSpec declares an x-delayed-message exchange (the
// rabbitmq_delayed_message_exchange plugin): messages with an x-delay header
// (ms) are routed by DelayedType once the delay has passed. Declaring it on a
// broker without the plugin fails with ErrPluginMissing.
type DelayedExchangeSpec struct {
	Name string
	// DelayedType is how messages are routed after the delay: direct,
	// fanout or topic.
	DelayedType ExchangeType
	Durable     bool
	AutoDelete  bool
	Internal    bool
	Args        ExchangeArgs
}

// Exchange is the ExchangeSpec that declares s.
func (s DelayedExchangeSpec) Exchange() ExchangeSpec {
	extra := amqp.Table{}
	for k, v := range s.Args.Extra {
		extra[k] = v
	}
	extra["x-delayed-type"] = string(s.DelayedType)
	return ExchangeSpec{
		Name: s.Name, Type: Delayed, Durable: s.Durable, AutoDelete: s.AutoDelete, Internal: s.Internal,
		Args: ExchangeArgs{AlternateExchange: s.Args.AlternateExchange, Extra: extra},
	}
}

// Validate checks s; errors are *SpecError.
func (s DelayedExchangeSpec) Validate() error {
	if s.Name == "" {
		return &SpecError{fmt.Sprintf("delayed exchange %q", s.Name), "Name", "must not be empty"}
	}
	if _, ok := s.Args.Extra["x-delayed-type"]; ok {
		return &SpecError{fmt.Sprintf("delayed exchange %q", s.Name), "Args.Extra", `"x-delayed-type" has a typed field (DelayedType)`}
	}
	return s.Exchange().Validate()
}

// QueueSpec declares a queue.
type QueueSpec struct {
	// Name of the queue. Empty asks for a generated name: warren makes it on
	// the client side (not the broker's amq.gen-*), so it stays the same
	// across reconnects; the declared name is returned.
	Name       string
	Durable    bool
	Exclusive  bool
	AutoDelete bool
	// ReadOnly queues are never declared or deleted, only checked to exist.
	ReadOnly bool
	Args     QueueArgs
}

// HasDeadLetter reports whether the queue's arguments name a dead-letter
// target (x-dead-letter-exchange or x-dead-letter-routing-key): a message
// rejected without requeue goes there instead of being dropped. A policy
// can add one on the broker that no spec shows.
func (s QueueSpec) HasDeadLetter() bool {
	_, extra := s.Args.Extra["x-dead-letter-exchange"]
	return s.Args.DeadLetterExchange != "" || s.Args.DeadLetterRoutingKey != "" || extra
}

func (s QueueSpec) label() string {
	if s.Name == "" {
		return "queue (generated name)"
	}
	return fmt.Sprintf("queue %q", s.Name)
}

// Validate checks s without any network call; errors are *SpecError.
func (s QueueSpec) Validate() error {
	spec := s.label()
	var errs []error
	if err := checkName(spec, "Name", s.Name, true); err != nil {
		errs = append(errs, err)
	}
	if !s.ReadOnly && len(s.Name) >= 4 && s.Name[:4] == "amq." {
		errs = append(errs, &SpecError{spec, "Name", `names starting with "amq." are reserved by the broker`})
	}
	errs = append(errs, s.Args.validate(spec, s)...)
	return errors.Join(errs...)
}

// BindKind is what a binding's destination is.
type BindKind int

const (
	// BindQueue binds a queue to an exchange (the zero value).
	BindQueue BindKind = iota
	// BindExchange binds an exchange to an exchange (exchange.bind).
	BindExchange
)

func (k BindKind) String() string {
	if k == BindExchange {
		return "exchange"
	}
	return "queue"
}

// BindSpec binds a queue or an exchange to a source exchange.
type BindSpec struct {
	// Source is the exchange messages come from (not the default exchange).
	Source string
	// Destination is the queue or exchange they go to.
	Destination string
	Kind        BindKind
	RoutingKey  string
	// Args are the binding arguments; headers exchanges match on them
	// (x-match: all, any, all-with-x, any-with-x).
	Args amqp.Table
}

func (s BindSpec) label() string {
	return fmt.Sprintf("binding %s -> %s %q (key %q)", display(s.Source), s.Kind, s.Destination, s.RoutingKey)
}

// key identifies a binding: the broker treats two bindings with the same
// source, destination, key and arguments as one.
func (s BindSpec) key() string {
	return fmt.Sprintf("%d\x00%s\x00%s\x00%s\x00%s", s.Kind, s.Source, s.Destination, s.RoutingKey, tableKey(s.Args))
}

// Validate checks s without any network call; errors are *SpecError.
func (s BindSpec) Validate() error {
	spec := s.label()
	var errs []error
	if s.Source == "" {
		errs = append(errs, &SpecError{spec, "Source", "the default exchange cannot be bound"})
	} else if err := checkName(spec, "Source", s.Source, false); err != nil {
		errs = append(errs, err)
	}
	if err := checkName(spec, "Destination", s.Destination, false); err != nil {
		errs = append(errs, err)
	}
	if s.Kind != BindQueue && s.Kind != BindExchange {
		errs = append(errs, &SpecError{spec, "Kind", fmt.Sprintf("unknown kind %d", s.Kind)})
	}
	if err := checkName(spec, "RoutingKey", s.RoutingKey, true); err != nil {
		errs = append(errs, err)
	}
	if m, ok := s.Args["x-match"]; ok {
		switch m {
		case "all", "any", "all-with-x", "any-with-x":
		default:
			errs = append(errs, &SpecError{spec, "Args", fmt.Sprintf("x-match %v: want all, any, all-with-x or any-with-x", m)})
		}
	}
	if err := s.Args.Validate(); err != nil {
		errs = append(errs, &SpecError{spec, "Args", "value of a type AMQP cannot carry: " + err.Error()})
	}
	return errors.Join(errs...)
}

// Handler receives a consumer's deliveries, one at a time, on the consumer's
// goroutine. ctx ends when the consumer is stopped. Unless the consumer is
// AutoAck, the handler settles each delivery (d.Ack, d.Nack, d.Reject; a
// second settlement is refused): the acknowledger is the channel the
// delivery came on, so a delivery of a channel that has since died can
// never be settled on another one (it fails, and the broker redelivers it).
type Handler func(ctx context.Context, d *Delivery)

// ConsumerSpec consumes a queue.
type ConsumerSpec struct {
	Queue   string
	Handler Handler
	// PrefetchCount is basic.qos prefetch-count for this consumer.
	// Default: 0 (no limit).
	PrefetchCount int
	PrefetchSize  int
	AutoAck       bool
	// Exclusive asks to be the queue's only consumer; such a consumer gets
	// a channel of its own.
	Exclusive bool
	// OrderedHandOver is for a single-active-consumer queue whose order
	// must hold from one consumer to the next (PITFALLS 33). The broker
	// activates the next consumer at basic.cancel, while this one's
	// message is still in hand and what it prefetched is still checked out
	// to it: the next one would pass those by. So such a consumer gets a
	// channel of its own and Stop sends no basic.cancel: it finishes the
	// delivery in hand, hands out nothing more, and closes the channel,
	// which returns every message it held to the head of the queue before
	// the broker activates the next consumer.
	OrderedHandOver bool
	// Tag is the consumer tag. Empty generates one, kept across reconnects.
	Tag string
	// Priority is x-priority (consumer priority); 0 is not sent.
	Priority int
	Args     amqp.Table
	// StreamOffset, for a consumer of a stream, gives x-stream-offset at
	// each consume: the first, and every one after a reconnect or a
	// cancel, so that the consumer resumes after what it settled instead
	// of where it first started.
	StreamOffset func() any
	// OnEvent is told when the consumer is interrupted (the broker
	// cancelled it, its channel or connection closed), while it waits for
	// its queue, and when it consumes again. It runs on the consumer's
	// goroutine: it must not block. Every event is also logged at Warn
	// (resumptions at Info).
	OnEvent func(ConsumerEvent)
}

// ownChannel reports a consumer that gets a channel of its own.
func (s ConsumerSpec) ownChannel() bool { return s.Exclusive || s.OrderedHandOver }

func (s ConsumerSpec) label() string { return fmt.Sprintf("consumer %q on queue %q", s.Tag, s.Queue) }

// Validate checks s without any network call; errors are *SpecError.
func (s ConsumerSpec) Validate() error {
	spec := s.label()
	var errs []error
	if err := checkName(spec, "Queue", s.Queue, false); err != nil {
		errs = append(errs, err)
	}
	if s.Handler == nil {
		errs = append(errs, &SpecError{spec, "Handler", "must not be nil"})
	}
	if s.PrefetchCount < 0 || s.PrefetchCount > 65535 {
		errs = append(errs, &SpecError{spec, "PrefetchCount", fmt.Sprintf("%d outside 0-65535", s.PrefetchCount)})
	}
	if s.PrefetchSize != 0 {
		// RabbitMQ has never implemented basic.qos prefetch-size: it
		// refuses it (540 NOT_IMPLEMENTED), on every version.
		errs = append(errs, &SpecError{spec, "PrefetchSize", "RabbitMQ does not implement prefetch-size: leave it 0 and bound by PrefetchCount"})
	}
	if err := checkName(spec, "Tag", s.Tag, true); err != nil {
		errs = append(errs, err)
	}
	if _, ok := s.Args["x-priority"]; ok {
		errs = append(errs, &SpecError{spec, "Args", `"x-priority" has a typed field (Priority)`})
	}
	if err := s.Args.Validate(); err != nil {
		errs = append(errs, &SpecError{spec, "Args", "value of a type AMQP cannot carry: " + err.Error()})
	}
	return errors.Join(errs...)
}

func (s ConsumerSpec) args() amqp.Table {
	t := amqp.Table{}
	for k, v := range s.Args {
		t[k] = v
	}
	if s.Priority != 0 {
		t["x-priority"] = int64(s.Priority)
	}
	if s.StreamOffset != nil {
		t["x-stream-offset"] = s.StreamOffset()
	}
	if len(t) == 0 {
		return nil
	}
	return t
}

// Topology is a set of specs applied together (Ops.Apply) in the order
// exchanges, queues, queue bindings, exchange bindings, consumers.
type Topology struct {
	Exchanges []ExchangeSpec
	Queues    []QueueSpec
	Bindings  []BindSpec
	Consumers []ConsumerSpec
}

// Validate checks every spec and joins every problem.
func (t Topology) Validate() error {
	var errs []error
	for _, s := range t.Exchanges {
		errs = append(errs, s.Validate())
	}
	for _, s := range t.Queues {
		errs = append(errs, s.Validate())
	}
	for _, s := range t.Bindings {
		errs = append(errs, s.Validate())
	}
	for _, s := range t.Consumers {
		errs = append(errs, s.Validate())
	}
	return errors.Join(errs...)
}
