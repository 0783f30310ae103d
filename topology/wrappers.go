package topology

import (
	"context"
	"sync"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Exchange is an exchange spec bound to Ops, for code that works on one
// exchange at a time (rmqaio's Exchange).
type Exchange struct {
	ops  *Ops
	Spec ExchangeSpec
}

// Exchange returns a wrapper of s on o. Nothing is declared yet.
func (o *Ops) Exchange(s ExchangeSpec) *Exchange { return &Exchange{ops: o, Spec: s} }

// Declare declares the exchange (see Ops.DeclareExchange).
func (e *Exchange) Declare(ctx context.Context, opts ...Option) error {
	return e.ops.DeclareExchange(ctx, e.Spec, opts...)
}

// Delete deletes the exchange (see Ops.DeleteExchange). A read-only spec
// is refused with ErrReadOnly, whatever the registry holds.
func (e *Exchange) Delete(ctx context.Context, d DeleteOptions) error {
	if e.Spec.IsReadOnly() {
		return readOnlyError("delete", e.Spec.label(), "the spec is ReadOnly")
	}
	return e.ops.DeleteExchange(ctx, e.Spec.Name, d)
}

// Exists reports whether the exchange exists.
func (e *Exchange) Exists(ctx context.Context) (bool, error) {
	return e.ops.ExchangeExists(ctx, e.Spec.Name)
}

// BindTo makes this exchange receive what source routes with routingKey: a
// real exchange-to-exchange binding (rmqaio's Exchange.bind bound a queue).
func (e *Exchange) BindTo(ctx context.Context, source, routingKey string, args amqp.Table, opts ...Option) error {
	return e.ops.Bind(ctx, e.bindSpec(source, routingKey, args), opts...)
}

// UnbindFrom removes a binding made by BindTo.
func (e *Exchange) UnbindFrom(ctx context.Context, source, routingKey string, args amqp.Table) error {
	return e.ops.Unbind(ctx, e.bindSpec(source, routingKey, args))
}

func (e *Exchange) bindSpec(source, routingKey string, args amqp.Table) BindSpec {
	return BindSpec{Source: source, Destination: e.Spec.Name, Kind: BindExchange, RoutingKey: routingKey, Args: args}
}

// Publish publishes one confirmed message to the exchange.
func (e *Exchange) Publish(ctx context.Context, routingKey string, msg amqp.Publishing, p PublishOptions) error {
	return e.ops.Publish(ctx, e.Spec.Name, routingKey, msg, p)
}

// Queue is a queue spec bound to Ops (rmqaio's Queue). After Declare, Name
// is the declared name (generated when the spec had none).
type Queue struct {
	ops  *Ops
	Spec QueueSpec

	mu        sync.Mutex
	consumers []*Consumer
}

// Queue returns a wrapper of s on o. Nothing is declared yet.
func (o *Ops) Queue(s QueueSpec) *Queue { return &Queue{ops: o, Spec: s} }

// Name is the queue's name ("" for a generated name not declared yet).
func (q *Queue) Name() string {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.Spec.Name
}

// Declare declares the queue and keeps its (generated) name.
func (q *Queue) Declare(ctx context.Context, opts ...Option) (QueueInfo, error) {
	q.mu.Lock()
	s := q.Spec
	q.mu.Unlock()
	if s.Name == "" && !s.ReadOnly {
		s.Name = GeneratedQueueName()
	}
	info, err := q.ops.DeclareQueue(ctx, s, opts...)
	if err == nil {
		q.mu.Lock()
		q.Spec.Name = info.Name
		q.mu.Unlock()
	}
	return info, err
}

// Delete deletes the queue (see Ops.DeleteQueue). A read-only spec is
// refused with ErrReadOnly, whatever the registry holds.
func (q *Queue) Delete(ctx context.Context, d DeleteOptions) (int, error) {
	q.mu.Lock()
	s := q.Spec
	q.mu.Unlock()
	if s.ReadOnly {
		return 0, readOnlyError("delete", s.label(), "the spec is ReadOnly")
	}
	return q.ops.DeleteQueue(ctx, s.Name, d)
}

// Exists reports whether the queue exists.
func (q *Queue) Exists(ctx context.Context) (bool, error) { return q.ops.QueueExists(ctx, q.Name()) }

// Inspect returns the queue's counts.
func (q *Queue) Inspect(ctx context.Context) (QueueInfo, error) { return q.ops.Inspect(ctx, q.Name()) }

// Bind binds the queue to exchange with routingKey (and args for headers
// exchanges).
func (q *Queue) Bind(ctx context.Context, exchange, routingKey string, args amqp.Table, opts ...Option) error {
	return q.ops.Bind(ctx, BindSpec{Source: exchange, Destination: q.Name(), RoutingKey: routingKey, Args: args}, opts...)
}

// Unbind removes a binding made by Bind.
func (q *Queue) Unbind(ctx context.Context, exchange, routingKey string, args amqp.Table) error {
	return q.ops.Unbind(ctx, BindSpec{Source: exchange, Destination: q.Name(), RoutingKey: routingKey, Args: args})
}

// Consume starts a consumer on the queue; s.Queue is filled in.
func (q *Queue) Consume(ctx context.Context, s ConsumerSpec, opts ...Option) (*Consumer, error) {
	s.Queue = q.Name()
	c, err := q.ops.Consume(ctx, s, opts...)
	if err == nil {
		q.mu.Lock()
		q.consumers = append(q.consumers, c)
		q.mu.Unlock()
	}
	return c, err
}

// StopConsume stops every consumer started through this wrapper.
func (q *Queue) StopConsume(ctx context.Context) error {
	q.mu.Lock()
	cs := q.consumers
	q.consumers = nil
	q.mu.Unlock()
	var first error
	for _, c := range cs {
		if err := c.Stop(ctx); err != nil && first == nil {
			first = err
		}
	}
	return first
}
