package warren

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/conn"
	"github.com/warrenmq/warren/internal/connx"
	"github.com/warrenmq/warren/internal/delay"
	"github.com/warrenmq/warren/internal/instrument"
	"github.com/warrenmq/warren/internal/lazyctx"
	"github.com/warrenmq/warren/internal/lru"
)

var _ message.Publisher = (*Publisher)(nil)

// Publisher is a Watermill message.Publisher with publisher confirms,
// pipelined: Publish writes every message, then waits for all confirms at
// once, and concurrent Publish calls share a small pool of confirm channels.
// It publishes through broker.Ops.PublishAll, warren's one confirm path:
// broker refusals fail the refused message at once, and only messages
// whose confirm a connection drop made unknown are republished
// (at-least-once), bounded by PublishTimeout and each message's Context().
// Its topics' topology goes into the connection's one registry. Safe for
// concurrent use.
type Publisher struct {
	conn   *conn.Conn
	ops    *broker.Ops
	cfg    PublisherConfig
	log    *slog.Logger
	routes *lru.Cache[string, cachedRoute]

	mu       sync.Mutex
	closed   bool
	inflight int
	drained  chan struct{} // closed once closed and no Publish is in flight

	closeOnce sync.Once
	closeErr  error

	// handOver is the connection's hand-over of due messages, which the
	// Publisher takes part in from its first scheduled message until Close.
	handOverMu sync.Mutex
	handOver   *delay.HandOver

	// destination is telemetry's description of where the last publish
	// went: most Publishers send to one or a few topics.
	destination instrument.Memo

	// alarm rings for the PublishTimeout of every publish in flight: one
	// timer for them all, not one each (internal/lazyctx).
	alarm lazyctx.Alarm
}

// cachedRoute is a declared route, valid while the registry's epoch says
// nothing it declared went missing.
type cachedRoute struct {
	route Destination
	epoch uint64
}

// NewPublisher returns a Publisher on c. The connection is the caller's:
// Close does not close it.
func NewPublisher(c *conn.Conn, cfg PublisherConfig) (*Publisher, error) {
	if c == nil {
		return nil, &conn.ConfigError{Field: "warren.NewPublisher.conn", Reason: "must not be nil"}
	}
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = connx.Logger(c)
	}
	if cfg.Telemetry == nil {
		cfg.Telemetry = connx.Telemetry(c)
	}
	ops, err := broker.NewOps(c, broker.OpsConfig{ConfirmChannels: cfg.ConfirmChannels, Timeout: cfg.PublishTimeout, Logger: log})
	if err != nil {
		return nil, err
	}
	return &Publisher{
		conn: c, ops: ops, cfg: cfg, log: log,
		routes:  lru.New[string, cachedRoute](cfg.RouteCache),
		drained: make(chan struct{}),
	}, nil
}

// Publish publishes msgs to topic and returns once every one is confirmed by
// the broker, or with a *PublishError naming those that were not, each with
// its own reason, the others published and confirmed: metadata the
// marshaler cannot put into AMQP (ErrInvalidMessage: an expiration that is
// not milliseconds, a delay that is not RFC 3339, a delay beyond the delay
// levels); nacked (broker.ErrNacked); unroutable with Mandatory (broker.ErrUnroutable);
// refused by the broker (*conn.RefusedError: conn.ErrNotFound for a
// missing exchange, conn.ErrAccessRefused,
// *broker.MessageTooLargeError); cancelled by their own Context() (its
// error); not confirmed within PublishTimeout (ErrPublishTimeout). A
// blocked connection makes Publish wait, bounded the same way
// (conn.ErrBlocked). A nil message (ErrInvalidMessage) or an invalid topic
// (ErrInvalidTopic) fails the whole call before anything is declared or
// sent. After Close: conn.ErrClosed.
func (p *Publisher) Publish(topic string, msgs ...*message.Message) error {
	return p.PublishContext(context.Background(), topic, msgs...)
}

// PublishContext is Publish bounded by ctx as well.
func (p *Publisher) PublishContext(ctx context.Context, topic string, msgs ...*message.Message) error {
	if !p.enter() {
		return conn.ErrClosed
	}
	defer p.leave()
	if ctx == nil {
		return fmt.Errorf("%w: nil context", ErrInvalidMessage)
	}
	if err := checkTopic(topic); err != nil {
		return err
	}
	for i, m := range msgs {
		if m == nil {
			return fmt.Errorf("%w: message %d of %d is nil", ErrInvalidMessage, i, len(msgs))
		}
	}
	if len(msgs) == 0 {
		return nil
	}
	// PublishTimeout without a timer of its own: most publishes are
	// confirmed long before it, and a context.WithTimeout for each cost a
	// 16-goroutine publish a sixth of its instructions (MEASUREMENTS.md,
	// the twenty-second pass).
	call := lazyctx.Bound(ctx, p.cfg.PublishTimeout, &p.alarm)
	defer call.Cancel()
	return p.publish(call, topic, msgs)
}

// publish is PublishContext once its arguments are checked: a function of
// its own so that the compiler inlines PublishContext's defers (see
// Requester.request).
func (p *Publisher) publish(ctx context.Context, topic string, msgs []*message.Message) error {
	route, err := p.route(ctx, topic)
	if err != nil {
		return err
	}
	var perr *PublishError
	fail := func(i int, err error) {
		if perr == nil {
			perr = &PublishError{Topic: topic, Failed: map[string]error{}, Errs: make([]error, len(msgs))}
		}
		perr.Failed[msgs[i].UUID] = err
		perr.Errs[i] = err
	}
	out := make([]broker.Outgoing, 0, len(msgs))
	sent := make([]int, 0, len(msgs)) // out[j] is msgs[sent[j]]
	for i, m := range msgs {
		pub, err := p.cfg.Marshaler.Marshal(topic, m)
		if err != nil {
			if !errors.Is(err, ErrInvalidMessage) {
				err = fmt.Errorf("%w: %w", ErrInvalidMessage, err)
			}
			fail(i, fmt.Errorf("warren: marshal message %s: %w", m.UUID, err))
			continue
		}
		exchange, key := route.Exchange, route.RoutingKey
		if route.KeyOf != nil {
			key = route.KeyOf(m)
		}
		if delay, scheduled, err := delayOf(m); err != nil {
			fail(i, err)
			continue
		} else if scheduled {
			if exchange, key, err = p.schedule(ctx, exchange, key, &pub, delay); err != nil {
				fail(i, err)
				continue
			}
		}
		out = append(out, broker.Outgoing{Ctx: m.Context(), Exchange: exchange, RoutingKey: key, Mandatory: p.cfg.Mandatory, Msg: pub})
		sent = append(sent, i)
	}
	if len(out) > 0 {
		errs := p.send(ctx, route, out, nil, func(ctx context.Context, out []broker.Outgoing) []error {
			errs := p.ops.PublishAll(ctx, out)
			for j, err := range errs {
				if err != nil && ctx.Err() != nil && msgs[sent[j]].Context().Err() == nil && errors.Is(err, ctx.Err()) {
					errs[j] = fmt.Errorf("%w: %w", ErrPublishTimeout, err)
				}
			}
			return errs
		})
		for j, err := range errs {
			if err != nil {
				fail(sent[j], err)
			}
		}
	}
	if perr != nil {
		return perr
	}
	return nil
}

// send publishes out through via (the Ops' confirm channels, or a
// Requester's reply channel) inside send spans named for route's
// destination, which also count the messages and carry each one's trace
// context in its headers: every message warren sends for a user goes
// through here. It returns via's errors, one per message. traced, when not
// nil, is room for len(out) instrument.Outgoing the caller already has (a
// request's: Requester.Request).
func (p *Publisher) send(ctx context.Context, route Destination, out []broker.Outgoing, traced []instrument.Outgoing, via func(context.Context, []broker.Outgoing) []error) []error {
	if traced == nil {
		traced = make([]instrument.Outgoing, len(out))
	}
	for j := range out {
		traced[j] = instrument.Outgoing{Ctx: out[j].Ctx, MessageID: out[j].Msg.MessageId, CorrelationID: out[j].Msg.CorrelationId,
			Headers: (*map[string]any)(&out[j].Msg.Headers), BodySize: len(out[j].Msg.Body)}
	}
	// The send spans name the route's destination, also for a scheduled
	// message (which goes through a delay exchange first).
	send := instrument.Of(p.cfg.Telemetry).StartSend(ctx, connx.Peer(p.conn), instrument.Destination{Exchange: route.Exchange, RoutingKey: route.RoutingKey}, traced, &p.destination)
	errs := via(ctx, out)
	for j, err := range errs {
		if err != nil {
			send.Fail(j, err)
		}
	}
	send.End(nil)
	return errs
}

// checkTopic refuses topics no mapping can make a name of.
func checkTopic(topic string) error {
	switch {
	case topic == "":
		return &TopicError{Topic: topic, Reason: "empty"}
	case !utf8.ValidString(topic):
		return &TopicError{Topic: topic, Reason: "not valid UTF-8"}
	case len(topic) > 255:
		return &TopicError{Topic: topic, Reason: fmt.Sprintf("%d bytes; AMQP names hold at most 255", len(topic))}
	}
	return nil
}

func (p *Publisher) enter() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.inflight++
	return true
}

func (p *Publisher) leave() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.inflight--; p.inflight == 0 && p.closed {
		close(p.drained)
	}
}

// route declares what is missing of a topic's route topology (into the
// connection's registry, restored after every reconnect) and caches it. The
// consumer side owns a queue's arguments: a queue (or an exchange) that
// exists is used as it is, whoever declared it and with whatever arguments
// (a router's route, another service), and only one that is missing is
// declared, from the mapping, so that nothing published before the first
// subscriber is lost (broker.IfMissing).
func (p *Publisher) route(ctx context.Context, topic string) (Destination, error) {
	epoch := p.ops.Registry().Epoch()
	if c, ok := p.routes.Get(topic); ok && c.epoch == epoch {
		return c.route, nil
	}
	r, err := p.cfg.Mapping.Destination(topic)
	if err != nil {
		return Destination{}, &TopicError{Topic: topic, Reason: "the mapping makes no valid route of it", Err: err}
	}
	if err := p.ops.Apply(ctx, r.Topology, broker.IfMissing()); err != nil {
		return Destination{}, fmt.Errorf("warren: declare route of topic %q: %w", topic, err)
	}
	p.routes.Put(topic, cachedRoute{r, epoch})
	return r, nil
}

// Close stops new publishes, waits for those in flight (bounded by
// CloseTimeout), closes the confirm channels and waits for its goroutines.
// When CloseTimeout passes first, the error says what is still running.
// Idempotent; the connection stays open.
func (p *Publisher) Close() error {
	p.closeOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), p.cfg.CloseTimeout)
		defer cancel()
		p.mu.Lock()
		p.closed = true
		if p.inflight == 0 {
			close(p.drained)
		}
		n := p.inflight
		p.mu.Unlock()
		var errs []error
		select {
		case <-p.drained:
		case <-ctx.Done():
			errs = append(errs, fmt.Errorf("warren: publisher closed with %d Publish call(s) still in flight after %s", n, p.cfg.CloseTimeout))
		}
		closeCtx, cancelClose := context.WithTimeout(context.Background(), time.Second+p.cfg.CloseTimeout/10)
		defer cancelClose()
		p.handOverMu.Lock()
		if p.handOver != nil {
			if err := p.handOver.Release(closeCtx); err != nil {
				errs = append(errs, err)
			}
		}
		p.handOverMu.Unlock()
		if err := p.ops.Close(closeCtx); err != nil {
			errs = append(errs, err)
		}
		p.alarm.Stop()
		p.closeErr = errors.Join(errs...)
	})
	return p.closeErr
}
