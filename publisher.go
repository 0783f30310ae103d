package warren

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren/conn"
	"github.com/warrenmq/warren/topology"
)

var _ message.Publisher = (*Publisher)(nil)

// Publisher is a Watermill message.Publisher with publisher confirms,
// pipelined: Publish writes every message, then waits for all confirms at
// once, and concurrent Publish calls share a small pool of confirm channels.
// Messages whose confirm is lost in a connection drop are republished after
// the reconnect (at-least-once), bounded by PublishTimeout. Safe for
// concurrent use.
type Publisher struct {
	conn *conn.Conn
	ops  *topology.Ops
	cfg  PublisherConfig

	routesMu sync.Mutex
	routes   map[string]*routeEntry

	slots []*confirmSlot
	next  atomic.Uint32

	closeMu   sync.RWMutex
	closed    bool
	inflight  sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
}

type routeEntry struct {
	mu       sync.Mutex
	route    Route
	declared bool
}

// NewPublisher returns a Publisher on c. The connection is the caller's:
// Close does not close it.
func NewPublisher(c *conn.Conn, cfg PublisherConfig) (*Publisher, error) {
	if c == nil {
		return nil, &ConfigError{"conn", "must not be nil"}
	}
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	ops, err := topology.NewOps(c, topology.OpsConfig{Logger: cfg.Logger})
	if err != nil {
		return nil, err
	}
	p := &Publisher{conn: c, ops: ops, cfg: cfg, routes: map[string]*routeEntry{}}
	for i := 0; i < cfg.ConfirmChannels; i++ {
		p.slots = append(p.slots, &confirmSlot{p: p})
	}
	return p, nil
}

// Publish publishes msgs to topic and returns once every one is confirmed by
// the broker, or with a *PublishError naming those that were not (nacked:
// ErrNacked; unroutable with Mandatory: ErrUnroutable; PublishTimeout
// passed: ErrPublishTimeout). A blocked connection makes Publish wait,
// bounded the same way (conn.ErrBlocked). After Close: ErrClosed.
func (p *Publisher) Publish(topic string, msgs ...*message.Message) error {
	return p.PublishContext(context.Background(), topic, msgs...)
}

// PublishContext is Publish bounded by ctx as well as PublishTimeout.
func (p *Publisher) PublishContext(ctx context.Context, topic string, msgs ...*message.Message) error {
	p.closeMu.RLock()
	if p.closed {
		p.closeMu.RUnlock()
		return ErrClosed
	}
	p.inflight.Add(1)
	p.closeMu.RUnlock()
	defer p.inflight.Done()
	if len(msgs) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, p.cfg.PublishTimeout)
	defer cancel()
	return p.publish(ctx, topic, msgs)
}

func (p *Publisher) publish(ctx context.Context, topic string, msgs []*message.Message) error {
	route, err := p.route(ctx, topic)
	if err != nil {
		return err
	}
	pubs := make([]amqp.Publishing, len(msgs))
	for i, m := range msgs {
		if pubs[i], err = p.cfg.Marshaler.Marshal(topic, m); err != nil {
			return fmt.Errorf("warren: marshal message %s: %w", m.UUID, err)
		}
	}
	results := make([]error, len(msgs))
	todo := make([]int, len(msgs))
	for i := range todo {
		todo[i] = i
	}
	slot := p.slots[int(p.next.Add(1))%len(p.slots)]
	for len(todo) > 0 {
		st, err := slot.get(ctx)
		if err != nil {
			for _, i := range todo {
				results[i] = timeoutOr(ctx, err)
			}
			break
		}
		todo = st.publishBatch(ctx, route, pubs, todo, results)
		if len(todo) > 0 {
			p.cfg.Logger.Warn("warren: republishing messages whose confirm was lost", "topic", topic, "count", len(todo))
		}
	}
	var failed map[string]error
	for i, err := range results {
		if err != nil {
			if failed == nil {
				failed = map[string]error{}
			}
			failed[msgs[i].UUID] = err
		}
	}
	if failed != nil {
		return &PublishError{Topic: topic, Failed: failed}
	}
	return nil
}

func timeoutOr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%w: %w", ErrPublishTimeout, err)
	}
	return err
}

// route declares a topic's route topology once (restored after reconnects
// by the registry) and caches it.
func (p *Publisher) route(ctx context.Context, topic string) (Route, error) {
	p.routesMu.Lock()
	e := p.routes[topic]
	if e == nil {
		e = &routeEntry{}
		p.routes[topic] = e
	}
	p.routesMu.Unlock()
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.declared {
		return e.route, nil
	}
	r, err := p.cfg.Mapping.Route(topic)
	if err != nil {
		return Route{}, fmt.Errorf("warren: topic %q: %w", topic, err)
	}
	if err := p.ops.Apply(ctx, r.Topology); err != nil {
		return Route{}, fmt.Errorf("warren: declare route of topic %q: %w", topic, err)
	}
	e.route, e.declared = r, true
	return r, nil
}

// Close stops new publishes, waits for in-flight ones (bounded by
// CloseTimeout), and closes the confirm channels. Idempotent; the
// connection stays open.
func (p *Publisher) Close() error {
	p.closeOnce.Do(func() {
		p.closeMu.Lock()
		p.closed = true
		p.closeMu.Unlock()
		done := make(chan struct{})
		go func() {
			p.inflight.Wait()
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(p.cfg.CloseTimeout):
			p.closeErr = fmt.Errorf("warren: publisher closed with publishes still in flight after %s", p.cfg.CloseTimeout)
		}
		for _, s := range p.slots {
			s.close()
		}
		ctx, cancel := context.WithTimeout(context.Background(), p.cfg.CloseTimeout)
		defer cancel()
		_ = p.ops.Close(ctx)
	})
	return p.closeErr
}
