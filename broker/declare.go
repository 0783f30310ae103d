package broker

import (
	"context"
	"errors"
	"fmt"
	"strings"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren/conn"
	"github.com/warrenmq/warren/internal/connx"
	"github.com/warrenmq/warren/topology"
)

// The AMQP calls behind declarations, shared by Ops and the restore run. No
// bookkeeping here: the callers record what succeeded.

// do runs fn on a pool channel of its own. When the connection drops under
// the call, it waits for the next connection and runs fn again (every
// operation here is idempotent), except inside a restore hook, where the
// connection runs the whole restore again instead.
func (r *Registry) do(ctx context.Context, op, entity string, fn func(context.Context, *conn.Channel) error) error {
	for {
		ch, err := r.pool.get(ctx)
		if err != nil {
			return fmt.Errorf("broker: %s %s: %w", op, entity, err)
		}
		err = fn(ctx, ch)
		r.pool.put(ch)
		if err != nil && connx.LostWith(ch, err) && lostInTransit(err) && ctx.Err() == nil && !connx.Restoring(ctx) {
			continue
		}
		return channelError(op, entity, err)
	}
}

// lostInTransit reports errors of a connection that went away under the call
// (network, broker restart, an operator closing it), as opposed to the
// broker closing the connection because of the call itself (503 for an
// unknown exchange type, say), which must not be repeated.
func lostInTransit(err error) bool {
	var ae *amqp.Error
	if !errors.As(err, &ae) {
		return true
	}
	return !ae.Server || ae.Code == amqp.ConnectionForced || errors.Is(err, amqp.ErrClosed)
}

func (r *Registry) declareExchange(ctx context.Context, s topology.ExchangeSpec) error {
	err := r.do(ctx, "declare", s.String(), func(ctx context.Context, ch *conn.Channel) error {
		return ch.ExchangeDeclare(ctx, s.Name, string(s.Type), s.Durable, s.AutoDelete, s.Internal, false, s.Args.Table())
	})
	if err != nil && s.Type == topology.Delayed && isUnknownExchangeType(err) {
		return fmt.Errorf("%w: %s needs the rabbitmq_delayed_message_exchange plugin: %w", ErrPluginMissing, s.String(), err)
	}
	return err
}

func isUnknownExchangeType(err error) bool {
	var ae *amqp.Error
	return errors.As(err, &ae) && (ae.Code == amqp.CommandInvalid || ae.Code == amqp.PreconditionFailed) &&
		strings.Contains(strings.ToLower(ae.Reason), "exchange type")
}

// checkExchange is a passive declare: nil when the exchange exists, a
// *conn.RefusedError matching conn.ErrNotFound when it does not.
func (r *Registry) checkExchange(ctx context.Context, name string) error {
	if name == "" {
		return nil
	}
	return r.do(ctx, "check", fmt.Sprintf("exchange %q", name), func(ctx context.Context, ch *conn.Channel) error {
		return ch.ExchangeDeclarePassive(ctx, name, "direct")
	})
}

func (r *Registry) deleteExchange(ctx context.Context, name string, ifUnused bool) error {
	return r.do(ctx, "delete", fmt.Sprintf("exchange %q", name), func(ctx context.Context, ch *conn.Channel) error {
		return ch.ExchangeDelete(ctx, name, ifUnused, false)
	})
}

func (r *Registry) declareQueue(ctx context.Context, s topology.QueueSpec) (QueueInfo, error) {
	var q amqp.Queue
	err := r.do(ctx, "declare", s.String(), func(ctx context.Context, ch *conn.Channel) error {
		var err error
		q, err = ch.QueueDeclare(ctx, s.Name, s.Durable, s.AutoDelete, s.Exclusive, false, s.Args.Table())
		return err
	})
	return QueueInfo{Name: q.Name, Messages: q.Messages, Consumers: q.Consumers}, err
}

func (r *Registry) inspect(ctx context.Context, name string) (QueueInfo, error) {
	var q amqp.Queue
	err := r.do(ctx, "inspect", fmt.Sprintf("queue %q", name), func(ctx context.Context, ch *conn.Channel) error {
		var err error
		q, err = ch.QueueDeclarePassive(ctx, name)
		return err
	})
	return QueueInfo{Name: q.Name, Messages: q.Messages, Consumers: q.Consumers}, err
}

func (r *Registry) deleteQueue(ctx context.Context, name string, d DeleteOptions) (int, error) {
	var n int
	err := r.do(ctx, "delete", fmt.Sprintf("queue %q", name), func(ctx context.Context, ch *conn.Channel) error {
		var err error
		n, err = ch.QueueDelete(ctx, name, d.IfUnused, d.IfEmpty, false)
		return err
	})
	return n, err
}

func (r *Registry) bind(ctx context.Context, s topology.BindSpec) error {
	return r.do(ctx, "bind", s.String(), func(ctx context.Context, ch *conn.Channel) error {
		if s.Kind == topology.BindExchange {
			return ch.ExchangeBind(ctx, s.Destination, s.RoutingKey, s.Source, false, s.Args)
		}
		return ch.QueueBind(ctx, s.Destination, s.RoutingKey, s.Source, false, s.Args)
	})
}

func (r *Registry) unbind(ctx context.Context, s topology.BindSpec) error {
	return r.do(ctx, "unbind", s.String(), func(ctx context.Context, ch *conn.Channel) error {
		if s.Kind == topology.BindExchange {
			return ch.ExchangeUnbind(ctx, s.Destination, s.RoutingKey, s.Source, false, s.Args)
		}
		return ch.QueueUnbind(ctx, s.Destination, s.RoutingKey, s.Source, s.Args)
	})
}

// redeclareQueue puts a registered queue and its registered bindings back
// (its queue was deleted behind the registry's back), marking them declared
// on the connection it used. ok is false when the queue is not registered.
func (r *Registry) redeclareQueue(ctx context.Context, name string) (ok bool, err error) {
	s, ok := r.queueSpec(name)
	if !ok || s.ReadOnly {
		return false, nil
	}
	gen := connx.GenerationFor(r.conn, ctx)
	if _, err := r.declareQueue(ctx, s); err != nil {
		return true, err
	}
	r.putQueueIfSame(s, gen)
	for _, b := range r.bindingsOf(name, false) {
		if x, ok := r.exchangeSpec(b.Source); ok && !x.IsReadOnly() {
			if err := r.declareExchange(ctx, x); err != nil {
				return true, err
			}
		}
		if err := r.bind(ctx, b); err != nil {
			return true, err
		}
		r.putBindingIfPresent(b, gen)
	}
	return true, nil
}

// putQueueIfSame marks a queue declared, unless its record changed or went
// meanwhile.
func (r *Registry) putQueueIfSame(s topology.QueueSpec, gen uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if rec, ok := r.queues.get(s.Name); ok {
		if f, _, _ := topology.FirstDifference(rec.spec, s); f == "" {
			rec.gen = gen
		}
	}
}

func (r *Registry) putBindingIfPresent(s topology.BindSpec, gen uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if rec, ok := r.bindings.get(s.Key()); ok {
		rec.gen = gen
	}
}

// The declarations as pipeline steps.

func exchangeStep(s topology.ExchangeSpec) step {
	return func(c *amqp.Channel) error {
		return c.ExchangeDeclare(s.Name, string(s.Type), s.Durable, s.AutoDelete, s.Internal, true, s.Args.Table())
	}
}

func queueStep(s topology.QueueSpec) step {
	return func(c *amqp.Channel) error {
		_, err := c.QueueDeclare(s.Name, s.Durable, s.AutoDelete, s.Exclusive, true, s.Args.Table())
		return err
	}
}

func bindStep(s topology.BindSpec) step {
	return func(c *amqp.Channel) error {
		if s.Kind == topology.BindExchange {
			return c.ExchangeBind(s.Destination, s.RoutingKey, s.Source, true, s.Args)
		}
		return c.QueueBind(s.Destination, s.RoutingKey, s.Source, true, s.Args)
	}
}
