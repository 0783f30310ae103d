package broker

import (
	"context"
	"errors"
	"fmt"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren/internal/amqpname"
	"github.com/warrenmq/warren/topology"
)

// Handler receives a consumer's deliveries: one at a time, on the
// consumer's goroutine, or, with ConsumerSpec.Handlers above 1, up to that
// many at once, each on a goroutine that takes deliveries itself. ctx ends
// when the consumer is stopped. Unless the consumer is AutoAck, the
// handler settles each delivery (d.Ack, d.Nack, d.Reject; a second
// settlement is refused): the acknowledger is the channel the delivery came
// on, so a delivery of a channel that has since died can never be settled
// on another one (it fails, and the broker redelivers it).
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
	// Handlers is how many deliveries the Handler may hold at once.
	// Default (0 or 1): one at a time, in the order the broker sent them,
	// on the consumer's goroutine. Above 1, the consumer's goroutine and
	// up to Handlers-1 more, started when every one of them is busy and a
	// delivery waits, each take deliveries from the subscription
	// themselves (no hand-off between goroutines: it cost a consumed
	// message a twentieth of its instructions) and run the Handler on them,
	// in no particular order. Stop, Pause and an interruption wait for every
	// one of them to finish its delivery in hand.
	Handlers int
}

// ownChannel reports a consumer that gets a channel of its own.
func (s ConsumerSpec) ownChannel() bool { return s.Exclusive || s.OrderedHandOver }

// String names the consumer as errors and logs do.
func (s ConsumerSpec) String() string { return fmt.Sprintf("consumer %q on queue %q", s.Tag, s.Queue) }

// Validate checks s without any network call; errors are *SpecError.
func (s ConsumerSpec) Validate() error {
	spec := s.String()
	var errs []error
	if err := checkName(spec, "Queue", s.Queue, false); err != nil {
		errs = append(errs, err)
	}
	if s.Handler == nil {
		errs = append(errs, &topology.SpecError{Spec: spec, Field: "Handler", Reason: "must not be nil"})
	}
	if s.PrefetchCount < 0 || s.PrefetchCount > 65535 {
		errs = append(errs, &topology.SpecError{Spec: spec, Field: "PrefetchCount", Reason: fmt.Sprintf("%d outside 0-65535", s.PrefetchCount)})
	}
	if s.Handlers < 0 || s.Handlers > 65535 {
		errs = append(errs, &topology.SpecError{Spec: spec, Field: "Handlers", Reason: fmt.Sprintf("%d outside 0-65535", s.Handlers)})
	}
	if s.PrefetchSize != 0 {
		// RabbitMQ has never implemented basic.qos prefetch-size: it
		// refuses it (540 NOT_IMPLEMENTED), on every version.
		errs = append(errs, &topology.SpecError{Spec: spec, Field: "PrefetchSize", Reason: "RabbitMQ does not implement prefetch-size: leave it 0 and bound by PrefetchCount"})
	}
	if err := checkName(spec, "Tag", s.Tag, true); err != nil {
		errs = append(errs, err)
	}
	if _, ok := s.Args["x-priority"]; ok {
		errs = append(errs, &topology.SpecError{Spec: spec, Field: "Args", Reason: `"x-priority" has a typed field (Priority)`})
	}
	if err := s.Args.Validate(); err != nil {
		errs = append(errs, &topology.SpecError{Spec: spec, Field: "Args", Reason: "value of a type AMQP cannot carry: " + err.Error()})
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

// checkName checks a name of a ConsumerSpec as every spec's Validate does;
// the error is a *topology.SpecError of spec's field.
func checkName(spec, field, name string, allowEmpty bool) error {
	if reason := amqpname.Problem(name, allowEmpty); reason != "" {
		return &topology.SpecError{Spec: spec, Field: field, Reason: reason}
	}
	return nil
}
