package warren

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren/ack"
	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/conn"
	"github.com/warrenmq/warren/internal/configerr"
	"github.com/warrenmq/warren/internal/connx"
	"github.com/warrenmq/warren/internal/headers"
	"github.com/warrenmq/warren/internal/instrument"
	"github.com/warrenmq/warren/internal/lazyctx"
	"github.com/warrenmq/warren/internal/msgid"
	"github.com/warrenmq/warren/internal/workgroup"
	"github.com/warrenmq/warren/telemetry"
)

// Headers of an error reply (see Requester and router.Route.Respond).
const (
	HeaderReplyError     = headers.ReplyError
	HeaderReplyErrorType = headers.ReplyErrorType
)

var (
	// ErrReplyLost: the connection (or the reply channel) went while the
	// request waited: its reply can no longer arrive. The request may or
	// may not have been handled.
	ErrReplyLost = ack.NamedError("warren: reply lost with the connection", "reply_lost")
	// ErrRemote: the responder's handler failed; *RemoteError says how.
	ErrRemote = ack.NamedError("warren: the responder failed", "remote")
)

// RemoteError is an error reply: the responder's handler failed with Text,
// of kind Type (ack.ErrorType). It matches ErrRemote.
type RemoteError struct {
	Type, Text string
}

func (e *RemoteError) Error() string {
	return fmt.Sprintf("warren: the responder failed (%s): %s", e.Type, e.Text)
}

// Is matches ErrRemote.
func (e *RemoteError) Is(target error) bool { return target == ErrRemote }

// RequesterConfig shapes a Requester.
type RequesterConfig struct {
	// Mapping routes a request's topic. Default: ExistingQueues (the topic
	// is the responder's queue).
	Mapping Mapping
	// Marshaler of requests and replies. Default: DefaultMarshaler, its
	// requests transient unless KeepUnanswered (or their metadata's
	// MetaDeliveryMode) says otherwise: a request's reply can reach only
	// the channel that sent it, and a broker restart ends that channel,
	// so a request kept on disk across the restart would be handled for
	// nobody.
	Marshaler Marshaler
	// Timeout bounds a request whose ctx has no deadline. Default: 30s.
	Timeout time.Duration
	// KeepUnanswered sends requests without an expiration. By default a
	// request expires (its AMQP expiration) when its ctx's deadline (or
	// Timeout) passes, unless it sets MetaExpiration itself: a request
	// nobody waits for any more is never handled, say by a responder that
	// comes back after the requester gave up. With the default Marshaler,
	// a kept request is also persistent, as a published message is: it is
	// meant to be handled whoever waits for it. Default: false.
	KeepUnanswered bool
	// Logger. Default: the connection's.
	Logger *slog.Logger
	// Telemetry traces and counts requests like every publish (a send
	// span whose context the responder's process span continues).
	// Default: the connection's.
	Telemetry *telemetry.Telemetry
}

func (c *RequesterConfig) setDefaults() {
	if c.Mapping == nil {
		c.Mapping = ExistingQueues{}
	}
	if c.Marshaler == nil {
		c.Marshaler = DefaultMarshaler{Transient: !c.KeepUnanswered}
	}
	if c.Timeout == 0 {
		c.Timeout = 30 * time.Second
	}
}

// Validate reports every problem, each naming its field.
func (c *RequesterConfig) Validate() error {
	f := configerr.For("warren.RequesterConfig")
	f.Check(c.Timeout < 0, "Timeout", "must not be negative")
	return f.Err()
}

// Requester sends requests and waits for their replies over RabbitMQ's
// direct reply-to: one channel consumes amq.rabbitmq.reply-to (without
// acks, as direct reply-to requires; an acking consumer is refused with 406)
// and publishes the requests, confirmed and mandatory; replies, and the
// returns of requests no queue took, find their request by correlation id.
// A request waits for its confirm only until its reply comes: a nack or a
// return fails it at once, a reply ends it whatever the confirm says later.
// Any number of requests may be in flight. When the channel or the
// connection goes, every request waiting on it fails at once with
// ErrReplyLost (its reply could only have come to that channel); the next
// request opens a new one. Safe for concurrent use.
type Requester struct {
	conn *conn.Conn
	// pub routes topics into the registry and traces and counts the
	// requests (Publisher.send); its confirm channels are unused: a
	// request goes on its reply channel.
	pub *Publisher
	cfg RequesterConfig
	log *slog.Logger
	wg  workgroup.Group

	mu     sync.Mutex
	line   *replyLine
	closed bool

	// alarm rings for the Timeout of every request in flight whose
	// context has no deadline of its own (internal/lazyctx).
	alarm lazyctx.Alarm
}

// replyLine is one reply channel and the requests waiting on it.
type replyLine struct {
	rc      *broker.ReplyChannel
	mu      sync.Mutex
	pending map[string]*replyWaiter
	dead    bool
}

// replyWaiter is a request waiting on its line. The line sets reply and
// replied (the reader) or returned (the broker returned the request: no
// queue took it), or neither when the line died, and then closes done: one
// channel both hands the outcome over and ends the request's wait for its
// confirm (see Request).
//
// It also holds what the request's send needs: the request's one heap
// object carries them all, where each was an allocation of its own (a
// round trip's allocations are a good part of its CPU on a busy machine:
// docs/MEASUREMENTS.md). At about 900 bytes, most of it the reply's
// delivery and the request's publishing, it is the largest thing a
// request allocates: waiters are reused (waiters), each once its line
// closed done, the line's last touch of it.
type replyWaiter struct {
	done     chan struct{}
	reply    amqp.Delivery
	replied  bool
	returned error

	out    [1]broker.Outgoing
	traced [1]instrument.Outgoing
	errs   [1]error
}

// NewRequester returns a Requester on c (the connection stays the
// caller's).
func NewRequester(c *conn.Conn, cfg RequesterConfig) (*Requester, error) {
	if c == nil {
		return nil, &conn.ConfigError{Field: "warren.NewRequester.conn", Reason: "must not be nil"}
	}
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	pub, err := NewPublisher(c, PublisherConfig{Mapping: cfg.Mapping, Marshaler: cfg.Marshaler, Logger: cfg.Logger, Telemetry: cfg.Telemetry})
	if err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = connx.Logger(c)
	}
	return &Requester{conn: c, pub: pub, cfg: cfg, log: log}, nil
}

// Request sends msg to topic and returns the reply: the responder's
// message, or its failure as a *RemoteError (ErrRemote). A request no queue
// takes fails with broker.ErrUnroutable; one whose reply cannot arrive any more
// with ErrReplyLost, at once; ctx (or Timeout) bounds the wait.
func (r *Requester) Request(ctx context.Context, topic string, msg *message.Message) (*message.Message, error) {
	if ctx == nil {
		return nil, fmt.Errorf("%w: nil context", ErrInvalidMessage)
	}
	if err := checkTopic(topic); err != nil {
		return nil, err
	}
	if msg == nil {
		return nil, fmt.Errorf("%w: nil request", ErrInvalidMessage)
	}
	// Timeout without a timer of its own per request (as a Publisher's
	// PublishTimeout: internal/lazyctx). A consumed message's context (a
	// handler's request) is bounded the same way at its own deadline, so
	// that the request's waits leave the message's timer unarmed.
	if _, bounded := ctx.Deadline(); !bounded || lazyctx.Is(ctx) {
		timeout := r.cfg.Timeout
		if bounded {
			timeout = 0 // ctx's own deadline
		}
		call := lazyctx.Bound(ctx, timeout, &r.alarm)
		defer call.Cancel()
		ctx = call
	}
	return r.request(ctx, topic, msg)
}

// request is Request once its arguments are checked and ctx has its
// deadline. A function of its own, so that each has a single defer: the
// compiler inlines a function's defers only while its returns times its
// defers are at most 15, and at the return of a function whose defers it
// left to the runtime, the runtime looks for deferred calls in the tables
// of the frames on the stack (runtime.pcvalue, a few hundred instructions).
func (r *Requester) request(ctx context.Context, topic string, msg *message.Message) (*message.Message, error) {
	route, err := r.pub.route(ctx, topic)
	if err != nil {
		return nil, err
	}
	pub, err := r.cfg.Marshaler.Marshal(topic, msg)
	if err != nil {
		return nil, fmt.Errorf("warren: marshal request %s: %w", msg.UUID, err)
	}
	if !r.cfg.KeepUnanswered && pub.Expiration == "" {
		dl, _ := ctx.Deadline() // always set: Timeout above
		pub.Expiration = strconv.FormatInt(max(time.Until(dl).Milliseconds(), 1), 10)
	}
	line, err := r.replyLine(ctx)
	if err != nil {
		return nil, err
	}
	corr := msgid.New()
	pub.CorrelationId = corr
	// The confirm is waited for until the reply comes, not after it: the
	// reply proves the broker took the request, while the confirm of a
	// persistent request may wait on the broker's disk (or on the
	// responder's ack) well after the reply is here. Without a reply the
	// confirm still decides: a nack or a return fails the request at once.
	w := newReplyWaiter()
	if !line.expect(corr, w) {
		return nil, ErrReplyLost
	}
	defer line.forget(corr)
	key := route.RoutingKey
	if route.KeyOf != nil {
		key = route.KeyOf(msg)
	}
	w.out[0] = broker.Outgoing{Ctx: instrument.TraceParent(msg.Context(), ctx), Exchange: route.Exchange, RoutingKey: key, Mandatory: true, Msg: pub}
	err = r.pub.send(ctx, route, w.out[:], w.traced[:], func(_ context.Context, out []broker.Outgoing) []error {
		w.errs[0] = line.rc.Publish(ctx, out[0], w.done)
		return w.errs[:]
	})[0]
	if err != nil {
		select {
		case <-w.done:
			// A reply proves the request arrived, whatever its confirm
			// said (one lost with the channel after the reply came).
			if reply, answered, err := r.answer(topic, w); answered {
				return reply, err
			}
		default:
		}
		if !line.rc.IsOpen() {
			return nil, fmt.Errorf("%w: request to %q: %w", ErrReplyLost, topic, err)
		}
		return nil, fmt.Errorf("warren: request to %q: %w", topic, err)
	}
	// Most often the reply is in already (the confirm wait ended at it):
	// asked first on its own, without the select on the call's channels,
	// which locks and unlocks each of them.
	select {
	case <-w.done:
		return r.outcome(topic, w)
	default:
	}
	done, ring := lazyctx.Until(ctx)
	for {
		select {
		case <-w.done:
			return r.outcome(topic, w)
		case <-done:
			return nil, fmt.Errorf("warren: no reply from %q: %w", topic, ctx.Err())
		case <-ring:
			if err := ctx.Err(); err != nil {
				return nil, fmt.Errorf("warren: no reply from %q: %w", topic, err)
			}
			done, ring = lazyctx.Until(ctx)
		}
	}
}

// outcome is what a request whose line closed w.done returns: answer's,
// or ErrReplyLost when the line died.
func (r *Requester) outcome(topic string, w *replyWaiter) (*message.Message, error) {
	if reply, answered, err := r.answer(topic, w); answered {
		return reply, err
	}
	return nil, fmt.Errorf("%w: request to %q", ErrReplyLost, topic)
}

// waiters keeps the replyWaiters of requests that ended, for the next
// ones.
var waiters sync.Pool

// newReplyWaiter returns a waiter with its own done channel: a closed
// channel cannot be opened again, the rest of a waiter can be reused.
func newReplyWaiter() *replyWaiter {
	w, _ := waiters.Get().(*replyWaiter)
	if w == nil {
		w = new(replyWaiter)
	}
	w.done = make(chan struct{})
	return w
}

// recycle hands w back for another request. Only once its line closed
// w.done, which is the line's last touch of it, and once what the request
// returns was made of it: the reply message keeps the delivery's body and
// strings, not w. A request that gives up before done closes (its
// deadline) leaves w to the collector, since the line may still hold it.
// Cleared first, so that the pool keeps no body or headers alive.
func (w *replyWaiter) recycle() {
	*w = replyWaiter{}
	waiters.Put(w)
}

// answer is what a request whose line closed w.done gets: its reply, or
// its return (ErrUnroutable); answered is false when the line died with
// neither. It is the waiter's last use: w is handed back for reuse.
func (r *Requester) answer(topic string, w *replyWaiter) (reply *message.Message, answered bool, err error) {
	defer w.recycle()
	switch {
	case w.replied:
		reply, err = r.reply(topic, &w.reply)
		return reply, true, err
	case w.returned != nil:
		return nil, true, fmt.Errorf("warren: request to %q: %w", topic, w.returned)
	}
	return nil, false, nil
}

// reply is the requester's answer for a reply delivery.
func (r *Requester) reply(topic string, d *amqp.Delivery) (*message.Message, error) {
	if text, failed := d.Headers[HeaderReplyError]; failed {
		return nil, &RemoteError{Type: headers.String(d.Headers[HeaderReplyErrorType]), Text: headers.String(text)}
	}
	reply, err := r.cfg.Marshaler.Unmarshal(d)
	if err != nil {
		return nil, fmt.Errorf("warren: reply to %q: %w", topic, err)
	}
	return reply, nil
}

// replyLine returns the live reply channel, opening one when there is none.
func (r *Requester) replyLine(ctx context.Context) (*replyLine, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil, conn.ErrClosed
	}
	if r.line != nil && !r.line.isDead() {
		return r.line, nil
	}
	line := &replyLine{pending: map[string]*replyWaiter{}}
	rc, err := r.pub.ops.OpenReplyChannel(ctx, line.unroutable)
	if err != nil {
		return nil, fmt.Errorf("warren: open the reply channel: %w", err)
	}
	line.rc = rc
	r.line = line
	r.wg.Go("reply reader", func() { line.read(rc.Replies(), r.log) })
	return line, nil
}

// read hands each reply to its request; when the channel ends, every
// request still waiting fails at once.
func (l *replyLine) read(deliveries <-chan amqp.Delivery, log *slog.Logger) {
	for d := range deliveries {
		l.mu.Lock()
		w, ok := l.pending[d.CorrelationId]
		delete(l.pending, d.CorrelationId)
		l.mu.Unlock()
		if !ok {
			log.Debug("warren: reply for no waiting request (it gave up)", "correlation_id", d.CorrelationId)
			continue
		}
		w.reply, w.replied = d, true // read by the request once done is closed
		close(w.done)
	}
	l.mu.Lock()
	l.dead = true
	for corr, w := range l.pending {
		close(w.done) // no reply: the line died
		delete(l.pending, corr)
	}
	l.mu.Unlock()
}

// unroutable ends the wait of the request the broker returned: no queue
// took it, and no reply will come.
func (l *replyLine) unroutable(corr string, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if w, ok := l.pending[corr]; ok {
		delete(l.pending, corr)
		w.returned = err
		close(w.done)
	}
}

func (l *replyLine) expect(corr string, w *replyWaiter) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.dead {
		return false
	}
	l.pending[corr] = w
	return true
}

func (l *replyLine) forget(corr string) {
	l.mu.Lock()
	delete(l.pending, corr)
	l.mu.Unlock()
}

func (l *replyLine) isDead() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.dead || !l.rc.IsOpen()
}

// requesterCloseTimeout bounds Close's wait for the reply reader, which
// returns as soon as the closed channel's deliveries end.
const requesterCloseTimeout = 10 * time.Second

// Close fails the requests in flight with ErrReplyLost, closes the reply
// channel and waits for its reader. The connection stays open.
func (r *Requester) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	line := r.line
	r.mu.Unlock()
	r.wg.Close()
	if line != nil {
		_ = line.rc.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), requesterCloseTimeout)
	defer cancel()
	err := r.wg.Wait(ctx, "warren.Requester")
	r.alarm.Stop()
	return errors.Join(err, r.pub.Close())
}
