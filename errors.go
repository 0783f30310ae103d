package warren

import (
	"context"
	"fmt"

	"github.com/ThreeDotsLabs/watermill/message"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren/ack"
)

// errDeliveryGone ends the process span of a message whose channel died
// before it was settled: the broker redelivers it.
var errDeliveryGone = ack.NamedError("warren: the delivery's channel closed before it was settled", "channel_closed")

// Sentinels, for errors.Is.
var (
	// ErrPublishTimeout: PublishTimeout passed before every message was
	// confirmed.
	ErrPublishTimeout = ack.NamedError("warren: publish not confirmed in time", "publish_timeout")
	// ErrPoison: a delivery could not be decoded into a message.
	ErrPoison = ack.NamedError("warren: poison message", "poison")
	// ErrInvalidTopic: a topic is empty, or its mapping makes no valid
	// names of it. Nothing was declared or published.
	ErrInvalidTopic = ack.NamedError("warren: invalid topic", "invalid_topic")
	// ErrInvalidMessage: Publish was given a nil message, or metadata the
	// marshaler cannot put into AMQP properties (an expiration that is not
	// milliseconds, say). Nothing of that call was published.
	ErrInvalidMessage = ack.NamedError("warren: invalid message", "invalid_message")
	// ErrNotSubscribed: Pause or Resume named a topic the Subscriber has no
	// subscription to.
	ErrNotSubscribed = ack.NamedError("warren: no subscription to that topic", "not_subscribed")
)

// TopicError is a topic that cannot be published or subscribed to; it
// matches ErrInvalidTopic and keeps the mapping's reason in the chain.
type TopicError struct {
	Topic  string
	Reason string
	Err    error
}

func (e *TopicError) Error() string {
	return fmt.Sprintf("warren: topic %q: %s", e.Topic, e.Reason)
}

// Unwrap gives ErrInvalidTopic and the mapping's error.
func (e *TopicError) Unwrap() []error {
	if e.Err == nil {
		return []error{ErrInvalidTopic}
	}
	return []error{ErrInvalidTopic, e.Err}
}

// PublishError is the failure of some messages of one Publish call; the
// others were published and confirmed.
type PublishError struct {
	Topic string
	// Failed maps the UUIDs of the messages that failed to why each failed.
	Failed map[string]error
	// Errs has an entry per message of the call, in order: nil for one the
	// broker confirmed, its error otherwise (it tells apart two messages of
	// one UUID, which share their Failed entry).
	Errs []error
}

func (e *PublishError) Error() string {
	for id, err := range e.Failed {
		if len(e.Failed) == 1 {
			return fmt.Sprintf("warren: publish to %q: message %s: %v", e.Topic, id, err)
		}
		return fmt.Sprintf("warren: publish to %q: %d messages failed, e.g. %s: %v", e.Topic, len(e.Failed), id, err)
	}
	return fmt.Sprintf("warren: publish to %q failed", e.Topic)
}

// Unwrap lets errors.Is and errors.As find each message's error
// (broker.ErrUnroutable, conn.ErrNotFound, *conn.RefusedError, ...).
func (e *PublishError) Unwrap() []error {
	out := make([]error, 0, len(e.Failed))
	for _, err := range e.Failed {
		out = append(out, err)
	}
	return out
}

// PoisonError describes a delivery that could not be decoded.
type PoisonError struct {
	Queue       string
	DeliveryTag uint64
	MessageID   string
	// Delivery is the raw delivery, whole, for dead-lettering it.
	Delivery amqp.Delivery
	Err      error
}

// Message is the delivery as DefaultMarshaler shows it (which decodes
// anything), with its delivery info (ack.InfoOf): what a dead-letter copy
// (ack.Copy) of a message that the configured marshaler refused is made of.
func (e *PoisonError) Message() *message.Message {
	d := e.Delivery
	msg, _ := DefaultMarshaler{}.Unmarshal(&d)
	exchange, key := deliveredVia(&d)
	msg.SetContext(ack.NewContext(context.Background(), ack.Info{
		DeliveryTag: d.DeliveryTag, Redelivered: d.Redelivered, Exchange: exchange, RoutingKey: key,
		Queue: e.Queue, ConsumerTag: d.ConsumerTag, Headers: d.Headers,
	}))
	return msg
}

func (e *PoisonError) Error() string {
	return fmt.Sprintf("warren: poison message %q (tag %d) on queue %q: %v", e.MessageID, e.DeliveryTag, e.Queue, e.Err)
}

func (e *PoisonError) Unwrap() []error { return []error{ErrPoison, e.Err} }

// ErrorType is "poison" (ack.ErrorType).
func (e *PoisonError) ErrorType() string { return "poison" }

// ErrorType is "invalid_topic" (ack.ErrorType).
func (e *TopicError) ErrorType() string { return "invalid_topic" }
