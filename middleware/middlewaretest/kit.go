// Package middlewaretest runs handlers and middleware without a broker:
// messages with fake delivery info, a recording publisher, a sleeper that
// records retry waits instead of sleeping, an in-memory trace exporter, and
// Run, which reports the disposition the Subscriber would apply.
package middlewaretest

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/warrenmq/warren/ack"
	"github.com/warrenmq/warren/internal/headers"
	"github.com/warrenmq/warren/middleware"
)

// MessageOption shapes NewMessage.
type MessageOption func(*ack.Info, *message.Message)

// NewMessage is a message as a warren Subscriber would hand it out: UUID
// "msg-1" unless WithUUID, delivery info of queue "work" on exchange
// "orders" with routing key "order.created" unless changed.
func NewMessage(payload string, opts ...MessageOption) *message.Message {
	msg := message.NewMessage("msg-1", []byte(payload))
	info := ack.Info{DeliveryTag: 1, Exchange: "orders", RoutingKey: "order.created", Queue: "work", ConsumerTag: "ctag", Headers: map[string]any{}, Generation: 1}
	for _, o := range opts {
		if o != nil {
			o(&info, msg)
		}
	}
	info.PreviousAttempts = headers.PreviousAttempts(info.Headers, info.Queue, info.Redelivered)
	msg.SetContext(ack.NewContext(context.Background(), info))
	return msg
}

// Must returns mw, and panics when err is not nil: for building a stack in
// a test or an example from the constructors, which return an error for an
// invalid config.
func Must(mw message.HandlerMiddleware, err error) message.HandlerMiddleware {
	if err != nil {
		panic(err)
	}
	return mw
}

// WithUUID sets the message UUID.
func WithUUID(id string) MessageOption {
	return func(_ *ack.Info, m *message.Message) { m.UUID = id }
}

// WithInfo replaces the delivery info.
func WithInfo(info ack.Info) MessageOption {
	return func(i *ack.Info, _ *message.Message) {
		*i = info
		if i.Headers == nil {
			i.Headers = map[string]any{}
		}
	}
}

// WithQueue sets the queue the message was consumed from.
func WithQueue(q string) MessageOption { return func(i *ack.Info, _ *message.Message) { i.Queue = q } }

// WithMetadata sets a metadata entry and the matching raw header.
func WithMetadata(k, v string) MessageOption {
	return func(i *ack.Info, m *message.Message) {
		m.Metadata.Set(k, v)
		i.Headers[k] = v
	}
}

// WithAttempt makes the message attempt n (warren's attempt header, n-1
// previous attempts).
func WithAttempt(n int) MessageOption {
	return WithMetadata(ack.AttemptHeader, strconv.Itoa(n-1))
}

// WithHeader sets a raw AMQP header (any AMQP type: int32, tables, x-death
// arrays, ...) and its metadata as the Subscriber shows it.
func WithHeader(k string, v any) MessageOption {
	return func(i *ack.Info, m *message.Message) {
		i.Headers[k] = v
		m.Metadata.Set(k, headers.String(v))
	}
}

// WithRetryRound makes the message a copy back from its n-th delayed retry
// (DelayedRetry's round header): the next failure goes to level n+1.
func WithRetryRound(n int) MessageOption {
	return WithMetadata(middleware.HeaderRetryRound, strconv.Itoa(n))
}

// ConsumeOnly adapts a handler that produces nothing (a route's Handler)
// for Run.
func ConsumeOnly(h message.NoPublishHandlerFunc) message.HandlerFunc {
	return func(m *message.Message) ([]*message.Message, error) { return nil, h(m) }
}

// WithRedelivered sets the redelivered flag.
func WithRedelivered() MessageOption {
	return func(i *ack.Info, _ *message.Message) { i.Redelivered = true }
}

// ErrNilArgument: Run was given a nil message, handler or middleware (a
// constructor's error ignored, say).
var ErrNilArgument = errors.New("middlewaretest: nil argument")

// Result is what running a message through a stack came to.
type Result struct {
	Produced []*message.Message
	Err      error
	// Disposition is what the Subscriber would do: the one set on the
	// message, else Ack on success and Requeue (its default Nack) on error.
	Disposition ack.Disposition
	Reason      error
}

// Run passes msg through mws (the first is the outermost) to h. A nil
// message, handler or middleware is the Result's Err (ErrNilArgument), and
// nothing runs.
func Run(msg *message.Message, h message.HandlerFunc, mws ...message.HandlerMiddleware) Result {
	if msg == nil || h == nil {
		return Result{Err: fmt.Errorf("%w: message or handler", ErrNilArgument)}
	}
	for i, mw := range mws {
		if mw == nil {
			return Result{Err: fmt.Errorf("%w: middleware %d of %d", ErrNilArgument, i, len(mws))}
		}
	}
	ack.Track(msg)
	for i := len(mws) - 1; i >= 0; i-- {
		h = mws[i](h)
	}
	out, err := h(msg)
	d, why := ack.Get(msg)
	if d == ack.Unset || (err != nil && d == ack.Ack) {
		if err == nil {
			d = ack.Ack
		} else {
			d = ack.Requeue
		}
	}
	return Result{Produced: out, Err: err, Disposition: d, Reason: why}
}

// Handler fails its first Failures calls with Err (default "boom"), then
// succeeds. Calls counts every call; Contexts keeps each call's context.
type Handler struct {
	Failures int
	Err      error

	calls    atomic.Int32
	mu       sync.Mutex
	contexts []context.Context
}

// Func is the handler function.
func (h *Handler) Func(msg *message.Message) ([]*message.Message, error) {
	if msg == nil {
		return nil, fmt.Errorf("%w: message", ErrNilArgument)
	}
	n := int(h.calls.Add(1))
	h.mu.Lock()
	h.contexts = append(h.contexts, msg.Context())
	h.mu.Unlock()
	if n <= h.Failures {
		if h.Err != nil {
			return nil, h.Err
		}
		return nil, errors.New("boom")
	}
	return nil, nil
}

// Calls is how often the handler ran.
func (h *Handler) Calls() int { return int(h.calls.Load()) }

// Contexts are the message contexts of each call.
func (h *Handler) Contexts() []context.Context {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]context.Context(nil), h.contexts...)
}

// Published is one message a Publisher received.
type Published struct {
	Topic string
	Msg   *message.Message
}

// Publisher records what is published. Fail, when set, is returned by
// Publish (and nothing is recorded).
type Publisher struct {
	Fail error

	mu        sync.Mutex
	published []Published
	closed    bool
}

// Publish implements message.Publisher.
func (p *Publisher) Publish(topic string, msgs ...*message.Message) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return errors.New("middlewaretest: publisher closed")
	}
	if p.Fail != nil {
		return p.Fail
	}
	for _, m := range msgs {
		p.published = append(p.published, Published{topic, m})
	}
	return nil
}

// Close implements message.Publisher.
func (p *Publisher) Close() error {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	return nil
}

// Published returns what was published, in order.
func (p *Publisher) Published() []Published {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Published(nil), p.published...)
}

// Sleeper records Retry's waits instead of sleeping (RetryConfig.Sleep).
type Sleeper struct {
	mu    sync.Mutex
	waits []time.Duration
}

// Sleep implements RetryConfig.Sleep.
func (s *Sleeper) Sleep(ctx context.Context, d time.Duration) error {
	s.mu.Lock()
	s.waits = append(s.waits, d)
	s.mu.Unlock()
	return ctx.Err()
}

// Waits returns the recorded waits.
func (s *Sleeper) Waits() []time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Duration(nil), s.waits...)
}
