package conn

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"syscall"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Channel is an AMQP channel bound to the connection generation it was
// opened on. The embedded *amqp091.Channel gives every AMQP method; Channel
// adds what amqp091 leaves to its users: a Done channel that fires whether the
// channel or its connection dies (PITFALLS 7), the generation (delivery tags
// of another generation must never be acked on it, PITFALLS 4) and a bounded
// Close.
type Channel struct {
	*amqp.Channel

	gen     *generation
	timeout time.Duration
	done    chan struct{}
	mu      sync.Mutex
	err     *amqp.Error
}

// Generation identifies the underlying connection: it grows by one with
// every new connection of a Conn.
func (ch *Channel) Generation() uint64 { return ch.gen.id }

// Done is closed when the channel is closed: by Close, by the server (a 404
// or 406 closes only the channel) or with its connection.
func (ch *Channel) Done() <-chan struct{} { return ch.done }

// Err is the server's reason when it closed the channel (or the connection),
// nil otherwise or while the channel is open.
func (ch *Channel) Err() error {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if ch.err == nil {
		return nil
	}
	return ch.err
}

// IsOpen reports whether the channel is usable.
func (ch *Channel) IsOpen() bool {
	select {
	case <-ch.done:
		return false
	case <-ch.gen.lost:
		return false
	default:
		return !ch.Channel.IsClosed()
	}
}

// ConnectionLost reports whether the connection under the channel is gone
// (as opposed to the channel alone being closed).
func (ch *Channel) ConnectionLost() bool { return ch.gen.isLost() || ch.gen.amqp.IsClosed() }

// LostWith reports whether err, returned by a call on ch, means ch's
// connection is gone. When a socket write fails, amqp091 returns the
// socket's own error (not an *amqp091.Error) and shuts the connection down
// on a goroutine of its own, so for a moment ConnectionLost still says it is
// alive: such an error marks the connection lost at once, and callers
// waiting for a connection move on to the next one.
func (ch *Channel) LostWith(err error) bool {
	if transportFailed(err) {
		ch.gen.markLost(err)
	}
	return ch.ConnectionLost()
}

// transportFailed reports an error of the socket under an AMQP call (after
// which amqp091 always shuts the connection down), as opposed to an AMQP
// error or the caller's own context.
func transportFailed(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
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
	res := make(chan error, 1)
	go func() { res <- ch.Channel.Close() }()
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

func (c *Conn) watchChannel(ach *amqp.Channel, g *generation) *Channel {
	ch := &Channel{Channel: ach, gen: g, timeout: c.cfg.OperationTimeout, done: make(chan struct{})}
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
// shared: do not use it for consuming, QoS or confirm mode; use NewChannel.
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

// NewChannel opens a channel of the caller's own (for consuming, QoS,
// confirms, transactions), waiting for Connected, bounded by ctx. The caller
// closes it. Errors: as Channel.
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

// NewConfirmChannel is NewChannel in publisher-confirm mode. confirm.select
// is bounded like channel.open (ctx and OperationTimeout), and when the
// connection dies between the two calls it starts over on the next
// connection: a caller never gets an error only because a drop fell between
// opening a channel and switching it to confirms. Errors: as Channel.
func (c *Conn) NewConfirmChannel(ctx context.Context) (*Channel, error) {
	for {
		ch, err := c.NewChannel(ctx)
		if err != nil {
			return nil, err
		}
		err = ch.confirmMode(ctx)
		if err == nil {
			return ch, nil
		}
		_ = ch.Close()
		if ctx.Err() != nil || !ch.LostWith(err) {
			return nil, err
		}
	}
}

// confirmMode runs confirm.select, bounded: amqp091 waits for the reply
// with no timeout (PITFALLS 2), so a call that outlives OperationTimeout
// marks the connection broken.
func (ch *Channel) confirmMode(ctx context.Context) error {
	res := make(chan error, 1)
	go func() { res <- ch.Channel.Confirm(false) }()
	t := time.NewTimer(ch.timeout)
	defer t.Stop()
	select {
	case err := <-res:
		return err
	case <-t.C:
		ch.gen.broken(ch.timeout)
		return ErrTimeout
	case <-ctx.Done():
		// The reply may still come; the channel is closed by the caller.
		return ctx.Err()
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
