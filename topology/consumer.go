package topology

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren/conn"
)

// Consumer is a running consumer started by Ops.Consume. Its handler keeps
// receiving across reconnects (restored with the registry, after the
// topology) and across server-side cancels (queue failover, a quorum leader
// moving), which are noticed and resubscribed instead of silently ending
// the consumer (PITFALLS 12). It ends on StopConsume, when its queue is
// deleted, or, for a consumer declared with NoRestore, when the connection is
// lost.
type Consumer struct {
	ops     *Ops
	spec    ConsumerSpec
	restore bool

	handlerCtx context.Context
	cancel     context.CancelFunc
	subs       chan subscription // new subscriptions from restore
	stopCh     chan struct{}
	done       chan struct{}

	// subMu serialises subscribing, so the restore hook and the consumer's
	// own recovery never both subscribe on one connection; lastGen is the
	// connection generation of the latest subscription.
	subMu   sync.Mutex
	lastGen uint64

	mu        sync.Mutex
	cur       subscription
	stopped   bool
	queueGone bool
	drain     func(context.Context)
	err       error
}

type subscription struct {
	ch      *conn.Channel
	msgs    <-chan amqp.Delivery
	cancels <-chan string
}

// Tag is the consumer tag (generated when the spec had none).
func (c *Consumer) Tag() string { return c.spec.Tag }

// Done is closed when the consumer has ended.
func (c *Consumer) Done() <-chan struct{} { return c.done }

// Err is why the consumer ended (wrapping ErrConsumerStopped), nil while it
// runs.
func (c *Consumer) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Consume starts a consumer. Its Tag stays the same across reconnects. With
// restore (the default) it is recorded and resubscribed after every
// reconnect; with NoRestore it ends when the connection is lost.
func (o *Ops) Consume(ctx context.Context, s ConsumerSpec, opts ...Option) (*Consumer, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	if s.Tag == "" {
		s.Tag = "warren-" + GeneratedQueueName()[len("warren.gen-"):]
	}
	op := collect(opts)
	hctx, cancel := context.WithCancel(context.Background())
	c := &Consumer{
		ops: o, spec: s, restore: !op.noRestore,
		handlerCtx: hctx, cancel: cancel,
		subs: make(chan subscription, 1), stopCh: make(chan struct{}), done: make(chan struct{}),
	}
	sub, err := c.subscribe(ctx)
	if err != nil {
		cancel()
		return nil, err
	}
	c.lastGen = sub.ch.Generation()
	if c.restore {
		o.reg.putConsumer(c)
	}
	o.activeMu.Lock()
	o.active[c] = struct{}{}
	o.activeMu.Unlock()
	// Set before the goroutine starts: a Stop right after Consume must find
	// the channel to close (or it leaks with its prefetched deliveries).
	c.cur = sub
	go c.run(sub)
	return c, nil
}

// StopConsume stops the consumer with this tag (see Consumer.Stop).
func (o *Ops) StopConsume(ctx context.Context, c *Consumer) error {
	if c == nil {
		return &OperationError{Op: "stop", Entity: "consumer", Reason: "nil consumer", Err: ErrInvalidSpec}
	}
	return c.stop(ctx)
}

// Stop cancels the subscription, lets the handler finish the delivery in
// hand (until ctx ends; then its ctx is cancelled), closes the consumer's
// channel (rmqaio's stop_consume leaked it) and forgets the consumer.
// Idempotent.
func (c *Consumer) Stop(ctx context.Context) error { return c.stop(ctx) }

// StopWith is Stop with drain called after the consumer stopped taking
// deliveries and before its channel closes: a caller that hands deliveries
// to workers waits for them there, so their settlements still reach the
// channel the deliveries came on.
func (c *Consumer) StopWith(ctx context.Context, drain func(context.Context)) error {
	c.mu.Lock()
	c.drain = drain
	c.mu.Unlock()
	return c.stop(ctx)
}

func (c *Consumer) subscribe(ctx context.Context) (subscription, error) {
	s := c.spec
	var sub subscription
	err := c.ops.doOwn(ctx, "consume", s.label(), func(ch *conn.Channel) error {
		if s.PrefetchCount > 0 || s.PrefetchSize > 0 {
			if err := ch.Qos(s.PrefetchCount, s.PrefetchSize, false); err != nil {
				return err
			}
		}
		cancels := ch.NotifyCancel(make(chan string, 1))
		msgs, err := ch.Consume(s.Queue, s.Tag, s.AutoAck, s.Exclusive, false, false, s.args())
		if err != nil {
			return err
		}
		sub = subscription{ch: ch, msgs: msgs, cancels: cancels}
		return nil
	})
	return sub, err
}

// resubscribe is the consumer's part of a restore: subscribe on the new
// connection (ctx is bound to it) and hand the subscription over.
func (c *Consumer) resubscribe(ctx context.Context) error {
	c.mu.Lock()
	stopped := c.stopped
	c.mu.Unlock()
	if stopped {
		return nil
	}
	c.subMu.Lock()
	defer c.subMu.Unlock()
	sub, err := c.subscribe(ctx)
	if err != nil {
		return err
	}
	c.lastGen = sub.ch.Generation()
	select {
	case old := <-c.subs: // an unclaimed older one: replace it
		_ = old.ch.Close()
	default:
	}
	c.subs <- sub
	return nil
}

// restoreGrace is how long a consumer whose connection was lost waits, once
// connected again, for the registry's restore to hand it a subscription
// before it subscribes by itself (its restore failed: a queue not yet
// recovered after a broker restart, say).
const restoreGrace = time.Second

// awaitRestore waits for a new subscription after the connection was lost:
// from the restore hook, or, when that failed, by subscribing itself, with
// backoff, for as long as the connection is up. ok is false when the
// consumer should end (stopped, or the connection closed for good).
func (c *Consumer) awaitRestore() (sub subscription, ok bool, err error) {
	t := time.NewTimer(restoreGrace)
	defer t.Stop()
	wait := restoreGrace
	for {
		select {
		case sub = <-c.subs:
			return sub, true, nil
		case <-c.stopCh:
			return subscription{}, false, nil
		case <-c.ops.conn.Done():
			return subscription{}, false, conn.ErrClosed
		case <-t.C:
		}
		if s, done := c.selfSubscribe(); done {
			return s, true, nil
		}
		wait = min(wait*2, 30*time.Second)
		t.Reset(wait)
	}
}

// selfSubscribe subscribes on the current connection unless the restore
// hook already did (then its subscription is waiting in c.subs).
func (c *Consumer) selfSubscribe() (subscription, bool) {
	gen := c.ops.conn.Generation()
	if gen == 0 {
		return subscription{}, false
	}
	c.subMu.Lock()
	defer c.subMu.Unlock()
	if c.lastGen == gen {
		return subscription{}, false // restored: it is in c.subs
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.ops.cfg.Timeout)
	defer cancel()
	sub, err := c.subscribe(ctx)
	if err != nil {
		c.ops.cfg.Logger.Warn("topology: consumer not restored yet; retrying", "consumer", c.spec.Tag, "queue", c.spec.Queue, "err", err)
		return subscription{}, false
	}
	c.lastGen = sub.ch.Generation()
	c.ops.cfg.Logger.Info("topology: consumer resubscribed by itself after its restore failed", "consumer", c.spec.Tag, "queue", c.spec.Queue)
	return sub, true
}

func (c *Consumer) run(sub subscription) {
	defer close(c.done)
	defer c.cancel()
	defer func() {
		c.ops.activeMu.Lock()
		delete(c.ops.active, c)
		c.ops.activeMu.Unlock()
	}()
	for {
		c.mu.Lock()
		c.cur = sub
		c.mu.Unlock()
		c.dispatch(sub)
		if c.isStopped() {
			c.end(nil)
			return
		}
		// Wait for the channel to be fully closed, then tell a lost
		// connection from a server-side cancel or channel error.
		_ = sub.ch.Close()
		if sub.ch.ConnectionLost() {
			if !c.restore {
				c.end(errors.New("connection lost and the consumer is not restored"))
				return
			}
			next, ok, err := c.awaitRestore()
			if !ok {
				c.end(err)
				return
			}
			sub = next
			continue
		}
		next, err := c.resubscribeAfterCancel()
		if err != nil {
			c.end(err)
			return
		}
		sub = next
	}
}

type channelKey struct{}

// DeliveryChannel returns the channel the delivery being handled came on,
// from a Handler's ctx: settle only while it is open, since a delivery tag
// means nothing on any other channel (PITFALLS 4).
func DeliveryChannel(ctx context.Context) *conn.Channel {
	ch, _ := ctx.Value(channelKey{}).(*conn.Channel)
	return ch
}

func (c *Consumer) dispatch(sub subscription) {
	ctx := context.WithValue(c.handlerCtx, channelKey{}, sub.ch)
	for {
		select {
		case d, ok := <-sub.msgs:
			if !ok {
				return
			}
			c.spec.Handler(ctx, d)
		case <-c.stopCh:
			return
		}
	}
}

// resubscribeAfterCancel subscribes again after the broker cancelled the
// consumer or closed its channel while the connection stayed up. A restore
// may hand over a subscription first. A queue that is gone (404) ends the
// consumer with that error.
func (c *Consumer) resubscribeAfterCancel() (subscription, error) {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = 50 * time.Millisecond
	b.MaxInterval = 5 * time.Second
	b.MaxElapsedTime = 0
	b.Reset()
	notFound := 0
	for {
		c.mu.Lock()
		gone := c.queueGone
		c.mu.Unlock()
		if gone {
			return subscription{}, fmt.Errorf("queue %q deleted", c.spec.Queue)
		}
		ctx, cancel := context.WithCancel(context.Background())
		go func() {
			select {
			case <-c.stopCh:
				cancel()
			case <-ctx.Done():
			}
		}()
		c.subMu.Lock()
		sub, err := c.subscribe(ctx)
		if err == nil {
			c.lastGen = sub.ch.Generation()
		}
		c.subMu.Unlock()
		cancel()
		if err == nil {
			return sub, nil
		}
		if c.isStopped() {
			return subscription{}, nil
		}
		// A queue being replaced (deleted and declared again, a failover)
		// is missing for a moment; one missing for several tries is gone.
		if errors.Is(err, ErrNotFound) {
			if notFound++; notFound >= 5 {
				return subscription{}, err
			}
		}
		c.ops.cfg.Logger.Warn("topology: resubscribing consumer", "consumer", c.spec.Tag, "queue", c.spec.Queue, "err", err)
		t := time.NewTimer(b.NextBackOff())
		select {
		case <-t.C:
		case sub := <-c.subs:
			t.Stop()
			return sub, nil
		case <-c.stopCh:
			t.Stop()
			return subscription{}, nil
		case <-c.ops.conn.Done():
			t.Stop()
			return subscription{}, conn.ErrClosed
		}
	}
}

func (c *Consumer) isStopped() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stopped
}

func (c *Consumer) markQueueGone() {
	c.mu.Lock()
	c.queueGone = true
	c.mu.Unlock()
}

func (c *Consumer) end(err error) {
	c.mu.Lock()
	if err == nil {
		c.err = ErrConsumerStopped
	} else {
		c.err = fmt.Errorf("%w: %w", ErrConsumerStopped, err)
	}
	c.mu.Unlock()
	c.ops.reg.forgetConsumer(c)
	for {
		select {
		case s := <-c.subs:
			_ = s.ch.Close()
		default:
			return
		}
	}
}

func (c *Consumer) stop(ctx context.Context) error {
	c.mu.Lock()
	if c.stopped {
		c.mu.Unlock()
		select {
		case <-c.done:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	c.stopped = true
	sub := c.cur
	drain := c.drain
	c.mu.Unlock()
	// Stop new deliveries first; the delivery in hand is finished and
	// settled on its channel before that channel closes.
	if sub.ch != nil && sub.ch.IsOpen() {
		cancelDone := make(chan struct{})
		go func() {
			_ = sub.ch.Cancel(c.spec.Tag, false)
			close(cancelDone)
		}()
		select {
		case <-cancelDone:
		case <-ctx.Done():
		}
	}
	close(c.stopCh)
	var err error
	select {
	case <-c.done:
	case <-ctx.Done():
		c.cancel()
		err = ctx.Err()
		<-c.done
	}
	if drain != nil {
		drain(ctx)
	}
	if sub.ch != nil {
		_ = sub.ch.Close()
	}
	c.ops.reg.forgetConsumer(c)
	return err
}
