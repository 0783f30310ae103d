package conn

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Channel is an AMQP channel bound to the connection generation it was
// opened on. It offers the AMQP methods warren needs, each bounded by its
// ctx and the connection's OperationTimeout (amqp091-go has no RPC timeout:
// PITFALLS 2; a call that outlives its bound closes the channel, since the
// broker may still apply it later). It adds what amqp091 leaves to its users:
// a Done channel that fires whether the channel or its connection dies
// (PITFALLS 7), the generation (delivery tags of another generation must
// never be acked on it, PITFALLS 4) and a bounded Close.
//
// Confirm mode and the Notify* registrations are not offered: an unread
// notification channel deadlocks amqp091 (PITFALLS 1). Use
// Conn.NewConfirmChannel for confirmed publishing; Done and Err tell why a
// channel closed.
type Channel struct {
	ch *amqp.Channel

	c       *Conn
	gen     *generation
	timeout time.Duration
	done    chan struct{}
	mu      sync.Mutex
	err     *amqp.Error
	// abandoned: a call outlived its bound and the channel is being
	// closed. Its close waits for the broker (for the call's reply first),
	// and until then amqp091 still calls the channel open: IsOpen must not,
	// or a pool hands it to the next caller, whose call then waits behind
	// the close and fails with it (PITFALLS 67).
	abandoned atomic.Bool
}

// generation identifies the underlying connection: it grows by one with
// every new connection of a Conn.
func (ch *Channel) generation() uint64 { return ch.gen.id }

// Done is closed when the channel is closed: by Close, by the server (a 404
// or 406 closes only the channel) or with its connection.
func (ch *Channel) Done() <-chan struct{} { return ch.done }

// Err is the server's reason when it closed the channel (or the connection),
// a *RefusedError, nil otherwise or while the channel is open. Once Done is closed, Err is
// final.
func (ch *Channel) Err() error {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if ch.err == nil {
		return nil
	}
	return refusal(ch.err)
}

// IsOpen reports whether the channel is usable. A check a settled message
// makes: one select per channel, each a lock-free look when nothing is
// closed, where one select over both would lock both.
func (ch *Channel) IsOpen() bool {
	select {
	case <-ch.done:
		return false
	default:
	}
	select {
	case <-ch.gen.lost:
		return false
	default:
	}
	return !ch.abandoned.Load() && !ch.ch.IsClosed()
}

// connectionLost reports whether the connection under the channel is gone
// (as opposed to the channel alone being closed).
func (ch *Channel) connectionLost() bool { return ch.gen.isLost() || ch.gen.amqp.IsClosed() }

// lostWith reports whether err, returned by a call on ch, means ch's
// connection is gone. When a socket write fails, amqp091 returns the
// socket's own error (not an *amqp091.Error) and shuts the connection down
// on a goroutine of its own, so for a moment ConnectionLost still says it is
// alive: such an error marks the connection lost at once, and callers
// waiting for a connection move on to the next one.
func (ch *Channel) lostWith(err error) bool {
	if transportFailed(err) {
		ch.gen.markLost(err)
	}
	return ch.connectionLost()
}

// transportFailed reports an error of the socket under an AMQP call (after
// which amqp091 always shuts the connection down), as opposed to an AMQP
// error or the caller's own context.
func transportFailed(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrTimeout) {
		return false // context.DeadlineExceeded is a net.Error too
	}
	var ne net.Error
	return errors.As(err, &ne) || errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET)
}

// WaitUnblocked is Conn.WaitUnblocked for this channel's connection.
func (ch *Channel) WaitUnblocked(ctx context.Context) error { return ch.gen.waitUnblocked(ctx) }

// Close closes the channel, bounded by the connection's OperationTimeout:
// amqp091's Close waits for the broker's reply with no timeout (PITFALLS 2).
// On a timeout the whole connection is treated as broken.
func (ch *Channel) Close() error {
	if !ch.IsOpen() {
		return nil
	}
	return ch.close()
}

// close is Close once the channel is known to need closing (an abandoned
// channel is no longer open to IsOpen, but its amqp091 channel is).
func (ch *Channel) close() error {
	if ch.ch.IsClosed() {
		return nil
	}
	res := make(chan error, 1)
	if !ch.c.spawn(func() { res <- ch.ch.Close() }) {
		return nil // the connection is finished, and the channel with it
	}
	t := time.NewTimer(ch.timeout)
	defer t.Stop()
	select {
	case err := <-res:
		if errors.Is(err, amqp.ErrClosed) {
			return nil
		}
		return err
	case <-ch.gen.lost:
		return nil
	case <-t.C:
		ch.gen.broken(ch.timeout)
		return ErrTimeout
	}
}

// abandon closes a channel whose call outlived its bound, without waiting:
// the reply may still come, and nothing else may be sent on the channel.
func (ch *Channel) abandon() {
	if ch.abandoned.CompareAndSwap(false, true) {
		ch.c.spawn(func() { _ = ch.close() })
	}
}

// call runs an RPC bounded by ctx and OperationTimeout. When the bound
// passes first the channel is abandoned: ErrTimeout for the
// OperationTimeout, ctx.Err() for the caller's ctx. The RPC's result comes
// back through the channel only: an abandoned RPC that completes later
// writes nothing the caller reads.
func (ch *Channel) call(ctx context.Context, rpc func(*amqp.Channel) error) error {
	_, err := callValue(ctx, ch, func(c *amqp.Channel) (struct{}, error) { return struct{}{}, rpc(c) })
	return err
}

func callValue[T any](ctx context.Context, ch *Channel, rpc func(*amqp.Channel) (T, error)) (T, error) {
	type result struct {
		v   T
		err error
	}
	var zero T
	res := make(chan result, 1)
	if !ch.c.spawn(func() {
		v, err := rpc(ch.ch)
		res <- result{v, err}
	}) {
		return zero, closedError(ch.c.Err())
	}
	t := time.NewTimer(ch.timeout)
	defer t.Stop()
	select {
	case r := <-res:
		if r.err != nil {
			ch.lostWith(r.err)
		}
		return r.v, refusal(r.err)
	case <-t.C:
		ch.abandon()
		return zero, ErrTimeout
	case <-ctx.Done():
		ch.abandon()
		return zero, ctx.Err()
	}
}

// ExchangeDeclare is exchange.declare, bounded (see Channel).
func (ch *Channel) ExchangeDeclare(ctx context.Context, name, kind string, durable, autoDelete, internal, noWait bool, args amqp.Table) error {
	return ch.call(ctx, func(c *amqp.Channel) error {
		return c.ExchangeDeclare(name, kind, durable, autoDelete, internal, noWait, args)
	})
}

// ExchangeDeclarePassive checks that an exchange exists; a 404 closes the
// channel.
func (ch *Channel) ExchangeDeclarePassive(ctx context.Context, name, kind string) error {
	return ch.call(ctx, func(c *amqp.Channel) error {
		return c.ExchangeDeclarePassive(name, kind, false, false, false, false, nil)
	})
}

// ExchangeDelete is exchange.delete, bounded.
func (ch *Channel) ExchangeDelete(ctx context.Context, name string, ifUnused, noWait bool) error {
	return ch.call(ctx, func(c *amqp.Channel) error { return c.ExchangeDelete(name, ifUnused, noWait) })
}

// ExchangeBind is exchange.bind (destination receives what source routes),
// bounded.
func (ch *Channel) ExchangeBind(ctx context.Context, destination, key, source string, noWait bool, args amqp.Table) error {
	return ch.call(ctx, func(c *amqp.Channel) error { return c.ExchangeBind(destination, key, source, noWait, args) })
}

// ExchangeUnbind is exchange.unbind, bounded.
func (ch *Channel) ExchangeUnbind(ctx context.Context, destination, key, source string, noWait bool, args amqp.Table) error {
	return ch.call(ctx, func(c *amqp.Channel) error { return c.ExchangeUnbind(destination, key, source, noWait, args) })
}

// QueueDeclare is queue.declare, bounded.
func (ch *Channel) QueueDeclare(ctx context.Context, name string, durable, autoDelete, exclusive, noWait bool, args amqp.Table) (amqp.Queue, error) {
	return callValue(ctx, ch, func(c *amqp.Channel) (amqp.Queue, error) {
		return c.QueueDeclare(name, durable, autoDelete, exclusive, noWait, args)
	})
}

// QueueDeclarePassive returns a queue's counts; a 404 closes the channel.
func (ch *Channel) QueueDeclarePassive(ctx context.Context, name string) (amqp.Queue, error) {
	return callValue(ctx, ch, func(c *amqp.Channel) (amqp.Queue, error) {
		return c.QueueDeclarePassive(name, false, false, false, false, nil)
	})
}

// QueueDelete is queue.delete, bounded; it returns how many messages went
// with the queue.
func (ch *Channel) QueueDelete(ctx context.Context, name string, ifUnused, ifEmpty, noWait bool) (int, error) {
	return callValue(ctx, ch, func(c *amqp.Channel) (int, error) {
		return c.QueueDelete(name, ifUnused, ifEmpty, noWait)
	})
}

// QueuePurge is queue.purge, bounded.
func (ch *Channel) QueuePurge(ctx context.Context, name string) (int, error) {
	return callValue(ctx, ch, func(c *amqp.Channel) (int, error) { return c.QueuePurge(name, false) })
}

// QueueBind is queue.bind, bounded.
func (ch *Channel) QueueBind(ctx context.Context, name, key, exchange string, noWait bool, args amqp.Table) error {
	return ch.call(ctx, func(c *amqp.Channel) error { return c.QueueBind(name, key, exchange, noWait, args) })
}

// QueueUnbind is queue.unbind, bounded.
func (ch *Channel) QueueUnbind(ctx context.Context, name, key, exchange string, args amqp.Table) error {
	return ch.call(ctx, func(c *amqp.Channel) error { return c.QueueUnbind(name, key, exchange, args) })
}

// Qos is basic.qos, bounded. It applies to consumers started on the
// channel afterwards, each on its own. A prefetch size and a global limit
// are refused (ErrQosUnsupported) before anything is sent: RabbitMQ never
// implemented prefetch-size, and 4.3 refuses global QoS by default
// (release notes 4.3.0: deprecated feature global_qos denied by default);
// either would close the channel.
func (ch *Channel) Qos(ctx context.Context, prefetchCount, prefetchSize int, global bool) error {
	if prefetchSize != 0 || global {
		return fmt.Errorf("%w: prefetch size %d, global %v", ErrQosUnsupported, prefetchSize, global)
	}
	return ch.call(ctx, func(c *amqp.Channel) error { return c.Qos(prefetchCount, prefetchSize, global) })
}

// Consume is basic.consume, bounded. The deliveries channel closes when the
// consumer is cancelled (by Cancel or by the server) or the channel closes;
// the channel's Done and Err tell which.
func (ch *Channel) Consume(ctx context.Context, queue, consumer string, autoAck, exclusive, noWait bool, args amqp.Table) (<-chan amqp.Delivery, error) {
	return callValue(ctx, ch, func(c *amqp.Channel) (<-chan amqp.Delivery, error) {
		return c.Consume(queue, consumer, autoAck, exclusive, false, noWait, args)
	})
}

// Cancel is basic.cancel, bounded: the broker sends no more deliveries to
// consumer; those already sent still arrive and can be settled.
func (ch *Channel) Cancel(ctx context.Context, consumer string, noWait bool) error {
	return ch.call(ctx, func(c *amqp.Channel) error { return c.Cancel(consumer, noWait) })
}

// Get is basic.get, bounded.
func (ch *Channel) Get(ctx context.Context, queue string, autoAck bool) (amqp.Delivery, bool, error) {
	type got struct {
		d  amqp.Delivery
		ok bool
	}
	g, err := callValue(ctx, ch, func(c *amqp.Channel) (got, error) {
		d, ok, err := c.Get(queue, autoAck)
		return got{d, ok}, err
	})
	return g.d, g.ok, err
}

// Publish sends one message without a confirm (use a ConfirmChannel to
// know that the broker took it). It waits while the connection is blocked,
// bounded by ctx (ErrBlocked).
func (ch *Channel) Publish(ctx context.Context, exchange, key string, msg amqp.Publishing) error {
	if err := ch.WaitUnblocked(ctx); err != nil {
		return err
	}
	err := ch.ch.PublishWithContext(ctx, exchange, key, false, false, msg)
	if err != nil {
		ch.lostWith(err)
	}
	return err
}

func (c *Conn) watchChannel(ach *amqp.Channel, g *generation) *Channel {
	ch := &Channel{ch: ach, c: c, gen: g, timeout: c.cfg.OperationTimeout, done: make(chan struct{})}
	closed := ach.NotifyClose(make(chan *amqp.Error, 1))
	if !c.spawn(func() {
		defer close(ch.done)
		select {
		case e, ok := <-closed:
			if ok && e != nil {
				ch.mu.Lock()
				ch.err = e
				ch.mu.Unlock()
			}
		case <-g.lost:
			// The channel's own notification may not fire when the
			// connection dies (amqp091-go issue 241); the generation's does.
			if e, ok := g.err().(*amqp.Error); ok {
				ch.mu.Lock()
				ch.err = e
				ch.mu.Unlock()
			}
		}
	}) {
		close(ch.done)
	}
	return ch
}

// Channel returns the connection's cached channel, opening a new one when it
// is closed (a channel closed by a server error is replaced without
// reconnecting). It waits for Connected, bounded by ctx. The cached channel is
// shared: do not use it for consuming or QoS; use NewChannel.
// Errors: ErrNotOpen, ErrClosed, ErrTimeout, ctx.Err().
func (c *Conn) Channel(ctx context.Context) (*Channel, error) {
	for {
		g, err := c.waitGeneration(ctx)
		if err != nil {
			return nil, err
		}
		c.chanMu.Lock()
		if ch := c.cached; ch != nil && ch.gen == g && ch.IsOpen() {
			c.chanMu.Unlock()
			return ch, nil
		}
		ch, err := c.openChannel(ctx, g)
		if err == nil {
			c.cached = ch
		}
		c.chanMu.Unlock()
		if err == nil || !g.isLost() || ctx.Err() != nil {
			return ch, err
		}
		// Lost while opening: wait for the next connection.
	}
}

// NewChannel opens a channel of the caller's own (for consuming, QoS),
// waiting for Connected, bounded by ctx. The caller closes it. Errors: as
// Channel.
func (c *Conn) NewChannel(ctx context.Context) (*Channel, error) {
	for {
		g, err := c.waitGeneration(ctx)
		if err != nil {
			return nil, err
		}
		ch, err := c.openChannel(ctx, g)
		if err == nil || !g.isLost() || ctx.Err() != nil {
			return ch, err
		}
	}
}

func (c *Conn) openChannel(ctx context.Context, g *generation) (*Channel, error) {
	type result struct {
		ch  *amqp.Channel
		err error
	}
	// A blocked connection does not read from its socket, so channel.open
	// would hang until the alarm clears and then look like a dead
	// connection: wait for the unblock instead, bounded by the caller.
	if err := g.waitUnblocked(ctx); err != nil {
		return nil, err
	}
	res := make(chan result, 1)
	if !c.spawn(func() {
		ach, err := g.amqp.Channel()
		res <- result{ach, err}
	}) {
		return nil, closedError(c.Err())
	}
	abandon := func() {
		c.spawn(func() {
			if r := <-res; r.ch != nil {
				_ = r.ch.Close()
			}
		})
	}
	t := time.NewTimer(c.cfg.OperationTimeout)
	defer t.Stop()
	select {
	case r := <-res:
		if r.err != nil {
			if g.amqp.IsClosed() || transportFailed(r.err) {
				// The connection died under the call; its close notification
				// may still be on its way. Callers wait for the next one.
				g.markLost(r.err)
			}
			return nil, r.err
		}
		return c.watchChannel(r.ch, g), nil
	case <-t.C:
		abandon()
		g.broken(c.cfg.CloseTimeout)
		return nil, ErrTimeout
	case <-ctx.Done():
		abandon()
		return nil, ctx.Err()
	}
}
