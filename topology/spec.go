package topology

import (
	"errors"
	"fmt"
	"strconv"

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

// String names the exchange as errors and logs do: `exchange "shop"`.
func (s ExchangeSpec) String() string { return fmt.Sprintf("exchange %q", display(s.Name)) }

// IsReadOnly reports whether s is only checked, never declared or deleted.
func (s ExchangeSpec) IsReadOnly() bool { return s.ReadOnly || builtIn(s.Name) }

// Validate checks s without any network call; errors are *SpecError.
func (s ExchangeSpec) Validate() error {
	spec := s.String()
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

// String names the queue as errors and logs do: `queue "orders"`.
func (s QueueSpec) String() string {
	if s.Name == "" {
		return "queue (generated name)"
	}
	return fmt.Sprintf("queue %q", s.Name)
}

// Validate checks s without any network call; errors are *SpecError.
func (s QueueSpec) Validate() error {
	spec := s.String()
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

// String names the binding as errors and logs do.
func (s BindSpec) String() string {
	// Joined, not formatted: a restore report names every binding, and
	// 10,000 of them made with fmt (twice each, then) were 4% of the
	// client's CPU in a restore.
	return "binding " + display(s.Source) + " -> " + s.Kind.String() + " " + strconv.Quote(s.Destination) + " (key " + strconv.Quote(s.RoutingKey) + ")"
}

// Key identifies a binding: the broker treats two bindings with the same
// source, destination, routing key and arguments as one.
func (s BindSpec) Key() string {
	return fmt.Sprintf("%d\x00%s\x00%s\x00%s\x00%s", s.Kind, s.Source, s.Destination, s.RoutingKey, tableKey(s.Args))
}

// Validate checks s without any network call; errors are *SpecError.
func (s BindSpec) Validate() error {
	spec := s.String()
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

// Topology is a set of specs declared together (broker.Ops.Apply) in the
// order exchanges, queues, queue bindings, exchange bindings. It is plain
// data: it can be printed, compared (FirstDifference, reflect.DeepEqual),
// loaded and validated without a connection.
type Topology struct {
	Exchanges []ExchangeSpec
	Queues    []QueueSpec
	Bindings  []BindSpec
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
	return errors.Join(errs...)
}
