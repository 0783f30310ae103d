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

	"github.com/warrenmq/warren/conn"
	"github.com/warrenmq/warren/internal/lru"
	"github.com/warrenmq/warren/telemetry"
	"github.com/warrenmq/warren/topology"
)

var _ message.Publisher = (*Publisher)(nil)

// Publisher is a Watermill message.Publisher with publisher confirms,
// pipelined: Publish writes every message, then waits for all confirms at
// once, and concurrent Publish calls share a small pool of confirm channels.
// It publishes through topology.Ops.PublishAll, warren's one confirm path:
// broker refusals fail the refused message at once, and only messages
// whose confirm a connection drop made unknown are republished
// (at-least-once), bounded by PublishTimeout and each message's Context().
// Its topics' topology goes into the connection's one registry. Safe for
// concurrent use.
type Publisher struct {
	conn   *conn.Conn
	ops    *topology.Ops
	cfg    PublisherConfig
	log    *slog.Logger
	routes *lru.Cache[string, cachedRoute]

	mu       sync.Mutex
	closed   bool
	inflight int
	drained  chan struct{} // closed once closed and no Publish is in flight

	closeOnce sync.Once
	closeErr  error
}

// cachedRoute is a declared route, valid while the registry's epoch says
// nothing it declared went missing.
type cachedRoute struct {
	route Route
	epoch uint64
}

// NewPublisher returns a Publisher on c. The connection is the caller's:
// Close does not close it.
func NewPublisher(c *conn.Conn, cfg PublisherConfig) (*Publisher, error) {
	if c == nil {
		return nil, &ConfigError{Field: "warren.NewPublisher.conn", Reason: "must not be nil"}
	}
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = c.Logger()
	}
	if cfg.Telemetry == nil {
		cfg.Telemetry = c.Telemetry()
	}
	ops, err := topology.NewOps(c, topology.OpsConfig{ConfirmChannels: cfg.ConfirmChannels, Timeout: cfg.PublishTimeout, Logger: log})
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
// the broker, or with a *PublishError naming those that were not: nacked
// (ErrNacked); unroutable with Mandatory (ErrUnroutable); refused by the
// broker (*topology.ChannelError: topology.ErrNotFound for a missing
// exchange, topology.ErrAccessRefused, *topology.MessageTooLargeError);
// cancelled by their own Context() (its error); not confirmed within
// PublishTimeout (ErrPublishTimeout). A blocked connection makes Publish
// wait, bounded the same way (conn.ErrBlocked). A nil message
// (ErrInvalidMessage) or an invalid topic (ErrInvalidTopic) fails the call
// before anything is declared or sent. After Close: ErrClosed.
func (p *Publisher) Publish(topic string, msgs ...*message.Message) error {
	return p.PublishContext(context.Background(), topic, msgs...)
}

// PublishContext is Publish bounded by ctx as well.
func (p *Publisher) PublishContext(ctx context.Context, topic string, msgs ...*message.Message) error {
	if !p.enter() {
		return ErrClosed
	}
	defer p.leave()
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
	ctx, cancel := context.WithTimeout(ctx, p.cfg.PublishTimeout)
	defer cancel()
	route, err := p.route(ctx, topic)
	if err != nil {
		return err
	}
	out := make([]topology.Outgoing, len(msgs))
	traced := make([]telemetry.Outgoing, len(msgs))
	for i, m := range msgs {
		pub, err := p.cfg.Marshaler.Marshal(topic, m)
		if err != nil {
			return fmt.Errorf("warren: marshal message %s: %w", m.UUID, err)
		}
		exchange := route.Exchange
		if delay, scheduled, err := delayOf(m); err != nil {
			return err
		} else if scheduled {
			if exchange, err = p.schedule(ctx, topic, route, &pub, delay); err != nil {
				return err
			}
		}
		key := route.RoutingKey
		if route.KeyOf != nil {
			key = route.KeyOf(m)
		}
		out[i] = topology.Outgoing{Ctx: m.Context(), Exchange: exchange, RoutingKey: key, Mandatory: p.cfg.Mandatory, Msg: pub}
		traced[i] = telemetry.Outgoing{Ctx: m.Context(), MessageID: pub.MessageId, CorrelationID: pub.CorrelationId,
			Headers: (*map[string]any)(&out[i].Msg.Headers)}
	}
	// The send spans name the route's destination, also for a scheduled
	// message (which goes through a delay exchange first).
	send := p.cfg.Telemetry.StartSend(ctx, p.conn.Peer(), telemetry.Destination{Exchange: route.Exchange, RoutingKey: route.RoutingKey}, traced)
	var failed map[string]error
	for i, err := range p.ops.PublishAll(ctx, out) {
		if err == nil {
			continue
		}
		if failed == nil {
			failed = map[string]error{}
		}
		if ctx.Err() != nil && msgs[i].Context().Err() == nil && errors.Is(err, ctx.Err()) {
			err = fmt.Errorf("%w: %w", ErrPublishTimeout, err)
		}
		failed[msgs[i].UUID] = err
		send.Fail(i, err)
	}
	send.End(nil)
	if failed != nil {
		return &PublishError{Topic: topic, Failed: failed}
	}
	return nil
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

// route declares a topic's route topology (into the connection's registry,
// restored after every reconnect) and caches it. A name the registry already
// holds keeps its registered spec: publishing to a router route's queue
// uses that route's arguments (topology.KeepRegistered).
func (p *Publisher) route(ctx context.Context, topic string) (Route, error) {
	epoch := p.ops.Registry().Epoch()
	if c, ok := p.routes.Get(topic); ok && c.epoch == epoch {
		return c.route, nil
	}
	r, err := p.cfg.Mapping.Route(topic)
	if err != nil {
		return Route{}, &TopicError{Topic: topic, Reason: "the mapping makes no valid route of it", Err: err}
	}
	if err := p.ops.Apply(ctx, r.Topology, topology.KeepRegistered()); err != nil {
		return Route{}, fmt.Errorf("warren: declare route of topic %q: %w", topic, err)
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
		if err := p.ops.Close(closeCtx); err != nil {
			errs = append(errs, err)
		}
		p.closeErr = errors.Join(errs...)
	})
	return p.closeErr
}
