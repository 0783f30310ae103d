package topology

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren/conn"
)

// OpsConfig shapes Ops. The zero value is usable.
type OpsConfig struct {
	// Timeout bounds each operation whose ctx has no deadline. Default: 10s.
	Timeout time.Duration
	// Logger receives restore reports. Default: silent.
	Logger *slog.Logger
	// OnRestoreError is called for every entity that could not be restored
	// after a reconnect (the others are restored regardless). It runs on the
	// connection's loop goroutine, before waiting callers are released: it
	// must not block. Default: none (the failure is still logged).
	OnRestoreError func(*RestoreError)
	// RestoreRetries is how often an entity is retried during restore on 405
	// RESOURCE_LOCKED (an exclusive queue the broker still holds for the dead
	// connection) and 404 NOT_FOUND (an auto-delete entity vanishing between
	// declare and bind). Default: 5, with a backoff from 50ms.
	RestoreRetries int
	// ChannelPool is how many idle channels Ops keeps. Default: 4.
	ChannelPool int
}

func (c *OpsConfig) setDefaults() {
	if c.Timeout == 0 {
		c.Timeout = 10 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.RestoreRetries == 0 {
		c.RestoreRetries = 5
	}
	if c.ChannelPool == 0 {
		c.ChannelPool = 4
	}
}

// Validate reports every problem of c, each naming its field.
func (c *OpsConfig) Validate() error {
	var errs []error
	if c.Timeout < 0 {
		errs = append(errs, &SpecError{"OpsConfig", "Timeout", "must not be negative"})
	}
	if c.RestoreRetries < 0 {
		errs = append(errs, &SpecError{"OpsConfig", "RestoreRetries", "must not be negative"})
	}
	if c.ChannelPool < 0 {
		errs = append(errs, &SpecError{"OpsConfig", "ChannelPool", "must not be negative"})
	}
	return errors.Join(errs...)
}

// Ops declares, binds, deletes, inspects, publishes and consumes on one
// connection, and keeps a Registry of what it declared with restore (the
// default) so that all of it comes back after every reconnect. Every method
// takes a ctx; the Timeout applies when ctx has no deadline. Safe for
// concurrent use.
type Ops struct {
	conn     *conn.Conn
	cfg      OpsConfig
	reg      *Registry
	pool     chanPool
	hookName string

	activeMu sync.Mutex
	active   map[*Consumer]struct{} // every running consumer, restored or not

	closeOnce sync.Once
}

// NewOps returns Ops on c and registers its restore hook with c.
func NewOps(c *conn.Conn, cfg OpsConfig) (*Ops, error) {
	if c == nil {
		return nil, &OperationError{Op: "new", Entity: "ops", Reason: "nil connection", Err: ErrInvalidSpec}
	}
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	o := &Ops{conn: c, cfg: cfg, reg: newRegistry(), active: map[*Consumer]struct{}{}}
	o.pool = chanPool{conn: c, max: cfg.ChannelPool}
	o.hookName = fmt.Sprintf("topology:%p", o)
	c.AddRestoreHook(o.hookName, o.restore)
	return o, nil
}

// Registry is what Ops restores after a reconnect.
func (o *Ops) Registry() *Registry { return o.reg }

// Conn is the connection Ops works on.
func (o *Ops) Conn() *conn.Conn { return o.conn }

// Close stops every consumer started through o, removes the restore hook
// and closes idle channels. The connection stays open.
func (o *Ops) Close(ctx context.Context) error {
	var err error
	o.closeOnce.Do(func() {
		o.conn.RemoveRestoreHook(o.hookName)
		o.activeMu.Lock()
		var all []*Consumer
		for c := range o.active {
			all = append(all, c)
		}
		o.activeMu.Unlock()
		for _, c := range all {
			err = errors.Join(err, c.stop(ctx))
		}
		o.pool.close()
	})
	return err
}

// Option changes how one call records and declares.
type Option func(*options)

type options struct {
	noRestore  bool
	force      bool
	acceptLoss bool
	consume    bool
}

// NoRestore declares without recording: the entity is not restored after a
// reconnect.
func NoRestore() Option { return func(o *options) { o.noRestore = true } }

// WithForce recreates an entity that exists with other properties (406
// PRECONDITION_FAILED): delete, declare again, and re-apply its recorded
// bindings. A queue holding messages is refused (ErrMessagesAtStake) unless
// AcceptMessageLoss is given too.
func WithForce() Option { return func(o *options) { o.force = true } }

// AcceptMessageLoss lets WithForce delete a queue that holds messages.
func AcceptMessageLoss() Option { return func(o *options) { o.acceptLoss = true } }

// WithConsume makes Apply start the topology's consumers.
func WithConsume() Option { return func(o *options) { o.consume = true } }

func collect(opts []Option) options {
	var o options
	for _, f := range opts {
		f(&o)
	}
	return o
}

// do runs fn on a channel of its own, bounded by ctx or the Ops timeout. A
// call that times out leaves its channel with an RPC in flight that the
// broker may still apply: the channel is closed, never reused (PITFALLS 2).
// When the connection drops under the call, it waits for the next
// connection and runs fn again (every operation here is idempotent, or
// at-least-once like Publish).
func (o *Ops) do(ctx context.Context, op, entity string, fn func(*pooledChannel) error) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.cfg.Timeout)
		defer cancel()
	}
	for {
		pc, err := o.pool.get(ctx)
		if err != nil {
			return fmt.Errorf("topology: %s %s: %w", op, entity, err)
		}
		res := make(chan error, 1)
		go func() { res <- fn(pc) }()
		select {
		case err := <-res:
			o.pool.put(pc)
			if err != nil && pc.LostWith(err) && lostInTransit(err) && ctx.Err() == nil && !conn.Restoring(ctx) {
				continue
			}
			return channelError(op, entity, err)
		case <-ctx.Done():
			go func() {
				<-res
				_ = pc.Close()
			}()
			return fmt.Errorf("topology: %s %s: %w", op, entity, ctx.Err())
		}
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

// doOwn runs fn on a new channel that the caller keeps (consumers): bounded
// like do; on failure the channel is closed. Like do, when the connection
// drops under the call it runs fn again on the next connection (a consumer
// on a dead connection is gone with it, so subscribing again is safe).
func (o *Ops) doOwn(ctx context.Context, op, entity string, fn func(*conn.Channel) error) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.cfg.Timeout)
		defer cancel()
	}
	for {
		ch, err := o.conn.NewChannel(ctx)
		if err != nil {
			return fmt.Errorf("topology: %s %s: %w", op, entity, err)
		}
		res := make(chan error, 1)
		go func() { res <- fn(ch) }()
		select {
		case err := <-res:
			if err == nil {
				return nil
			}
			_ = ch.Close()
			if ch.LostWith(err) && lostInTransit(err) && ctx.Err() == nil && !conn.Restoring(ctx) {
				continue
			}
			return channelError(op, entity, err)
		case <-ctx.Done():
			go func() {
				<-res
				_ = ch.Close()
			}()
			return fmt.Errorf("topology: %s %s: %w", op, entity, ctx.Err())
		}
	}
}

// DeclareExchange declares s (validated first). Read-only exchanges are
// refused with an *OperationError (ErrReadOnly). 406 with WithForce deletes
// and recreates it, re-applying its recorded bindings. A delayed exchange on
// a broker without the plugin returns ErrPluginMissing.
func (o *Ops) DeclareExchange(ctx context.Context, s ExchangeSpec, opts ...Option) error {
	if err := s.Validate(); err != nil {
		return err
	}
	if s.IsReadOnly() {
		return &OperationError{Op: "declare", Entity: s.label(), Reason: "read-only; use ExchangeExists", Err: ErrReadOnly}
	}
	op := collect(opts)
	err := o.declareExchange(ctx, s)
	if errors.Is(err, ErrPreconditionFailed) && op.force {
		err = o.recreateExchange(ctx, s, err)
	}
	if err != nil {
		return err
	}
	if !op.noRestore {
		o.reg.putExchange(s)
	}
	return nil
}

func (o *Ops) declareExchange(ctx context.Context, s ExchangeSpec) error {
	err := o.do(ctx, "declare", s.label(), func(ch *pooledChannel) error {
		return ch.ExchangeDeclare(s.Name, string(s.Type), s.Durable, s.AutoDelete, s.Internal, false, s.Args.Table())
	})
	if err != nil && s.Type == Delayed && isUnknownExchangeType(err) {
		return fmt.Errorf("%w: %s needs the rabbitmq_delayed_message_exchange plugin: %w", ErrPluginMissing, s.label(), err)
	}
	return err
}

func isUnknownExchangeType(err error) bool {
	var ae *amqp.Error
	return errors.As(err, &ae) && (ae.Code == amqp.CommandInvalid || ae.Code == amqp.PreconditionFailed) &&
		strings.Contains(strings.ToLower(ae.Reason), "exchange type")
}

func (o *Ops) recreateExchange(ctx context.Context, s ExchangeSpec, cause error) error {
	o.cfg.Logger.Warn("topology: recreating exchange with other properties", "exchange", s.Name, "cause", cause)
	if err := o.do(ctx, "delete", s.label(), func(ch *pooledChannel) error {
		return ch.ExchangeDelete(s.Name, false, false)
	}); err != nil {
		return err
	}
	if err := o.declareExchange(ctx, s); err != nil {
		return err
	}
	// Deleting an exchange deletes its bindings both ways; put back the
	// ones we know of.
	for _, b := range o.reg.bindingsOf(s.Name, true) {
		if err := o.bind(ctx, b); err != nil {
			return err
		}
	}
	return nil
}

// QueueInfo is what the broker says of a queue.
type QueueInfo struct {
	Name      string
	Messages  int
	Consumers int
}

// DeclareQueue declares s (validated first) and returns the declared name
// and counts. An empty name gets a client-generated one that the registry
// keeps across reconnects. Read-only queues are refused (ErrReadOnly). 406
// with WithForce deletes and recreates the queue, unless it holds messages
// and AcceptMessageLoss is not given (*ForceRefusedError, with the count).
func (o *Ops) DeclareQueue(ctx context.Context, s QueueSpec, opts ...Option) (QueueInfo, error) {
	if err := s.Validate(); err != nil {
		return QueueInfo{}, err
	}
	if s.ReadOnly {
		return QueueInfo{}, &OperationError{Op: "declare", Entity: s.label(), Reason: "read-only; use QueueExists", Err: ErrReadOnly}
	}
	if s.Name == "" {
		s.Name = GeneratedQueueName()
	}
	op := collect(opts)
	info, err := o.declareQueue(ctx, s)
	if errors.Is(err, ErrPreconditionFailed) && op.force {
		info, err = o.recreateQueue(ctx, s, op.acceptLoss, err)
	}
	if err != nil {
		return QueueInfo{}, err
	}
	if !op.noRestore {
		o.reg.putQueue(s)
	}
	return info, nil
}

// GeneratedQueueName is a client-side queue name ("warren.gen-" and 24 hex
// digits). Unlike the broker's amq.gen-* names it can be declared again
// after a reconnect.
func GeneratedQueueName() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return "warren.gen-" + hex.EncodeToString(b[:])
}

func (o *Ops) declareQueue(ctx context.Context, s QueueSpec) (QueueInfo, error) {
	var q amqp.Queue
	err := o.do(ctx, "declare", s.label(), func(ch *pooledChannel) error {
		var err error
		q, err = ch.QueueDeclare(s.Name, s.Durable, s.AutoDelete, s.Exclusive, false, s.Args.Table())
		return err
	})
	return QueueInfo{Name: q.Name, Messages: q.Messages, Consumers: q.Consumers}, err
}

func (o *Ops) recreateQueue(ctx context.Context, s QueueSpec, acceptLoss bool, cause error) (QueueInfo, error) {
	info, err := o.Inspect(ctx, s.Name)
	if err != nil {
		return QueueInfo{}, err
	}
	if info.Messages > 0 && !acceptLoss {
		return QueueInfo{}, &ForceRefusedError{Queue: s.Name, Messages: info.Messages, Cause: cause}
	}
	o.cfg.Logger.Warn("topology: recreating queue with other properties", "queue", s.Name, "messages_lost", info.Messages, "cause", cause)
	if err := o.do(ctx, "delete", s.label(), func(ch *pooledChannel) error {
		_, err := ch.QueueDelete(s.Name, false, false, false)
		return err
	}); err != nil {
		return QueueInfo{}, err
	}
	info, err = o.declareQueue(ctx, s)
	if err != nil {
		return QueueInfo{}, err
	}
	for _, b := range o.reg.bindingsOf(s.Name, false) {
		if err := o.bind(ctx, b); err != nil {
			return QueueInfo{}, err
		}
	}
	return info, nil
}

// Bind binds a queue or an exchange (s.Kind) to an exchange and records the
// binding for restore.
func (o *Ops) Bind(ctx context.Context, s BindSpec, opts ...Option) error {
	if err := s.Validate(); err != nil {
		return err
	}
	if err := o.bind(ctx, s); err != nil {
		return err
	}
	if !collect(opts).noRestore {
		o.reg.putBinding(s)
	}
	return nil
}

func (o *Ops) bind(ctx context.Context, s BindSpec) error {
	return o.do(ctx, "bind", s.label(), func(ch *pooledChannel) error {
		if s.Kind == BindExchange {
			return ch.ExchangeBind(s.Destination, s.RoutingKey, s.Source, false, s.Args)
		}
		return ch.QueueBind(s.Destination, s.RoutingKey, s.Source, false, s.Args)
	})
}

// Unbind removes a binding and forgets it. When it was the last recorded
// binding of an auto-delete source exchange, the broker deletes that
// exchange, so the registry forgets it too.
func (o *Ops) Unbind(ctx context.Context, s BindSpec) error {
	if err := s.Validate(); err != nil {
		return err
	}
	err := o.do(ctx, "unbind", s.label(), func(ch *pooledChannel) error {
		if s.Kind == BindExchange {
			return ch.ExchangeUnbind(s.Destination, s.RoutingKey, s.Source, false, s.Args)
		}
		return ch.QueueUnbind(s.Destination, s.RoutingKey, s.Source, s.Args)
	})
	if err != nil {
		return err
	}
	o.reg.forgetBinding(s)
	return nil
}

// DeleteOptions are the conditions of a delete.
type DeleteOptions struct {
	// IfUnused refuses (406) to delete an exchange with bindings or a queue
	// with consumers.
	IfUnused bool
	// IfEmpty refuses (406) to delete a queue holding messages.
	IfEmpty bool
}

// DeleteExchange deletes an exchange and forgets it and its bindings.
// Read-only names are refused (ErrReadOnly).
func (o *Ops) DeleteExchange(ctx context.Context, name string, d DeleteOptions) error {
	if err := o.checkDeletable(name, true); err != nil {
		return err
	}
	err := o.do(ctx, "delete", fmt.Sprintf("exchange %q", name), func(ch *pooledChannel) error {
		return ch.ExchangeDelete(name, d.IfUnused, false)
	})
	if err != nil {
		return err
	}
	o.reg.forgetExchange(name)
	return nil
}

// DeleteQueue deletes a queue, returns how many messages went with it, and
// forgets it, its bindings and its consumers (which are stopped).
func (o *Ops) DeleteQueue(ctx context.Context, name string, d DeleteOptions) (int, error) {
	if err := o.checkDeletable(name, false); err != nil {
		return 0, err
	}
	for _, c := range o.reg.consumersOf(name) {
		c.markQueueGone()
	}
	var n int
	err := o.do(ctx, "delete", fmt.Sprintf("queue %q", name), func(ch *pooledChannel) error {
		var err error
		n, err = ch.QueueDelete(name, d.IfUnused, d.IfEmpty, false)
		return err
	})
	if err != nil {
		return 0, err
	}
	for _, c := range o.reg.forgetQueue(name) {
		_ = c.stop(ctx)
	}
	return n, nil
}

func (o *Ops) checkDeletable(name string, exchange bool) error {
	kind := "queue"
	if exchange {
		kind = "exchange"
	}
	entity := fmt.Sprintf("%s %q", kind, display(name))
	if name == "" {
		return &OperationError{Op: "delete", Entity: entity, Reason: "empty name", Err: ErrInvalidSpec}
	}
	if (exchange && builtIn(name)) || o.reg.readOnly(name, exchange) {
		return &OperationError{Op: "delete", Entity: entity, Reason: "read-only", Err: ErrReadOnly}
	}
	return nil
}

// ExchangeExists reports whether the exchange exists (a passive declare; a
// 404 is false, not an error, and costs nobody their channel).
func (o *Ops) ExchangeExists(ctx context.Context, name string) (bool, error) {
	if name == "" {
		return true, nil
	}
	err := o.do(ctx, "check", fmt.Sprintf("exchange %q", name), func(ch *pooledChannel) error {
		return ch.ExchangeDeclarePassive(name, "direct", false, false, false, false, nil)
	})
	return existsResult(err)
}

// QueueExists reports whether the queue exists (passive; 404 is false).
func (o *Ops) QueueExists(ctx context.Context, name string) (bool, error) {
	_, err := o.Inspect(ctx, name)
	return existsResult(err)
}

func existsResult(err error) (bool, error) {
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, ErrNotFound):
		return false, nil
	}
	return false, err
}

// Inspect returns a queue's message and consumer counts (passive declare;
// ErrNotFound when it does not exist).
func (o *Ops) Inspect(ctx context.Context, name string) (QueueInfo, error) {
	if name == "" {
		return QueueInfo{}, &OperationError{Op: "inspect", Entity: "queue", Reason: "empty name", Err: ErrInvalidSpec}
	}
	var q amqp.Queue
	err := o.do(ctx, "inspect", fmt.Sprintf("queue %q", name), func(ch *pooledChannel) error {
		var err error
		q, err = ch.QueueDeclarePassive(name, false, false, false, false, nil)
		return err
	})
	return QueueInfo{Name: q.Name, Messages: q.Messages, Consumers: q.Consumers}, err
}

// ErrUnroutable is returned by Publish with Mandatory when the broker could
// not route the message to any queue.
var ErrUnroutable = errors.New("topology: message unroutable")

// PublishOptions shape Ops.Publish.
type PublishOptions struct {
	// Mandatory asks the broker to return the message when no queue gets
	// it; Publish then fails with ErrUnroutable.
	Mandatory bool
}

// Publish publishes one message and waits for the broker's confirm. A nack
// is an error, and so is an unroutable message with Mandatory. The write
// waits while the connection is blocked (ErrBlocked when ctx ends first).
// For throughput, use warren's Publisher.
func (o *Ops) Publish(ctx context.Context, exchange, routingKey string, msg amqp.Publishing, p PublishOptions) error {
	entity := fmt.Sprintf("to %s key %q", display(exchange), routingKey)
	return o.do(ctx, "publish", entity, func(ch *pooledChannel) error {
		drain(ch)
		if err := ch.WaitUnblocked(ctx); err != nil {
			return err
		}
		if err := ch.PublishWithContext(ctx, exchange, routingKey, p.Mandatory, false, msg); err != nil {
			return err
		}
		select {
		case c, ok := <-ch.confirms:
			if !ok {
				// Closed by the broker (a 403 for an internal exchange, a
				// 404 for a missing one): report its reason.
				select {
				case <-ch.Done():
				case <-time.After(time.Second):
				}
				if err := ch.Err(); err != nil {
					return err
				}
				return amqp.ErrClosed
			}
			// A basic.return precedes the ack of the same message and
			// amqp091 hands it over before the ack (PITFALLS 6).
			select {
			case r, ok := <-ch.returns:
				if ok {
					return fmt.Errorf("%w: %d %s", ErrUnroutable, r.ReplyCode, r.ReplyText)
				}
			default:
			}
			if !c.Ack {
				return errors.New("topology: publish nacked by the broker")
			}
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
}

// drain empties what an earlier, abandoned publish left behind. A closed
// notification channel is always ready: stop at the first one.
func drain(ch *pooledChannel) {
	for {
		select {
		case _, ok := <-ch.returns:
			if !ok {
				return
			}
		case _, ok := <-ch.confirms:
			if !ok {
				return
			}
		default:
			return
		}
	}
}

// Apply validates every spec first, then declares the topology in the order
// exchanges, queues, queue bindings, exchange bindings and, with
// WithConsume, consumers. Read-only entities are checked to exist instead of
// declared. It stops at the first error.
func (o *Ops) Apply(ctx context.Context, t Topology, opts ...Option) error {
	if err := t.Validate(); err != nil {
		return err
	}
	for _, s := range t.Exchanges {
		if s.IsReadOnly() {
			ok, err := o.ExchangeExists(ctx, s.Name)
			if err != nil {
				return err
			}
			if !ok {
				return &ChannelError{Op: "check", Entity: s.label(), Code: amqp.NotFound, Text: "read-only exchange does not exist"}
			}
			continue
		}
		if err := o.DeclareExchange(ctx, s, opts...); err != nil {
			return err
		}
	}
	for _, s := range t.Queues {
		if s.ReadOnly {
			if _, err := o.Inspect(ctx, s.Name); err != nil {
				return err
			}
			continue
		}
		if _, err := o.DeclareQueue(ctx, s, opts...); err != nil {
			return err
		}
	}
	for _, kind := range []BindKind{BindQueue, BindExchange} {
		for _, s := range t.Bindings {
			if s.Kind != kind {
				continue
			}
			if err := o.Bind(ctx, s, opts...); err != nil {
				return err
			}
		}
	}
	if collect(opts).consume {
		for _, s := range t.Consumers {
			if _, err := o.Consume(ctx, s, opts...); err != nil {
				return err
			}
		}
	}
	return nil
}
