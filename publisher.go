package warren

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren/conn"
	"github.com/warrenmq/warren/topology"
)

var _ message.Publisher = (*Publisher)(nil)

// returnSeqHeader correlates a basic.return with the publish it belongs to
// (the return carries no delivery tag). Set only with Mandatory.
const returnSeqHeader = "warren-publish-seq"

// errUnconfirmed marks a message whose confirm was lost with its channel or
// connection: unknown, not refused (PITFALLS 5), so it is republished.
var errUnconfirmed = errors.New("warren: confirm lost with the channel")

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

// confirmSlot holds one confirm channel, reopened after it dies.
type confirmSlot struct {
	p  *Publisher
	mu sync.Mutex
	st *confirmChannel
}

func (s *confirmSlot) get(ctx context.Context) (*confirmChannel, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.st != nil && s.st.alive() {
		return s.st, nil
	}
	if err := s.p.conn.WaitUnblocked(ctx); err != nil {
		return nil, err
	}
	ch, err := s.p.conn.NewChannel(ctx)
	if err != nil {
		return nil, err
	}
	if err := ch.Confirm(false); err != nil {
		_ = ch.Close()
		return nil, err
	}
	st := &confirmChannel{
		ch:       ch,
		log:      s.p.cfg.Logger,
		mandator: s.p.cfg.Mandatory,
		pending:  map[uint64]pendingRef{},
		dead:     make(chan struct{}),
		// Buffered generously and drained by one goroutine that never
		// blocks, so amqp091's reader never waits on us (PITFALLS 1).
		confirms: ch.NotifyPublish(make(chan amqp.Confirmation, 1024)),
		returns:  ch.NotifyReturn(make(chan amqp.Return, 256)),
	}
	go st.loop()
	s.st = st
	return st, nil
}

func (s *confirmSlot) close() {
	s.mu.Lock()
	st := s.st
	s.st = nil
	s.mu.Unlock()
	if st != nil {
		_ = st.ch.Close()
		<-st.dead
	}
}

// confirmChannel is one confirm-mode channel and its in-flight publishes.
type confirmChannel struct {
	ch       *conn.Channel
	log      *slog.Logger
	mandator bool
	confirms <-chan amqp.Confirmation
	returns  <-chan amqp.Return
	dead     chan struct{}

	pubMu   sync.Mutex // serialises publishing: sequence numbers in order
	mu      sync.Mutex // guards pending
	pending map[uint64]pendingRef
}

type pendingRef struct {
	b   *batch
	idx int
}

// batch is one Publish call's messages on one channel: a single counter and
// channel for all, instead of one per message.
type batch struct {
	results   []error
	remaining atomic.Int32
	done      chan struct{}
}

func (b *batch) settle(idx int, err error) {
	b.results[idx] = err
	if b.remaining.Add(-1) == 0 {
		close(b.done)
	}
}

func (c *confirmChannel) alive() bool {
	select {
	case <-c.dead:
		return false
	default:
		return c.ch.IsOpen()
	}
}

// publishBatch writes every message of todo, then waits for their confirms.
// It returns the indexes to publish again (confirm lost with the channel).
func (c *confirmChannel) publishBatch(ctx context.Context, r Route, pubs []amqp.Publishing, todo []int, results []error) []int {
	if err := c.ch.WaitUnblocked(ctx); err != nil {
		for _, i := range todo {
			results[i] = err
		}
		return nil
	}
	b := &batch{results: make([]error, len(todo)), done: make(chan struct{})}
	b.remaining.Store(int32(len(todo)))
	c.pubMu.Lock()
	for j, i := range todo {
		pub := pubs[i]
		seq := c.ch.GetNextPublishSeqNo()
		if c.mandator {
			h := make(amqp.Table, len(pub.Headers)+1)
			for k, v := range pub.Headers {
				h[k] = v
			}
			h[returnSeqHeader] = int64(seq)
			pub.Headers = h
		}
		c.mu.Lock()
		c.pending[seq] = pendingRef{b, j}
		c.mu.Unlock()
		if err := c.ch.PublishWithContext(ctx, r.Exchange, r.RoutingKey, c.mandator, false, pub); err != nil {
			c.log.Warn("warren: publish write failed; the message will be sent again", "err", err)
			c.mu.Lock()
			_, still := c.pending[seq]
			delete(c.pending, seq)
			c.mu.Unlock()
			if still {
				b.settle(j, errUnconfirmed)
			}
		}
	}
	c.pubMu.Unlock()
	select {
	case <-b.done:
	case <-ctx.Done():
		// Stop waiting; whatever is still pending resolves into a batch
		// nobody reads.
		for _, i := range todo {
			results[i] = fmt.Errorf("%w: %w", ErrPublishTimeout, ctx.Err())
		}
		return nil
	}
	var again []int
	for j, i := range todo {
		err := b.results[j]
		switch {
		case errors.Is(err, errUnconfirmed):
			if ctx.Err() != nil {
				results[i] = fmt.Errorf("%w: %w", ErrPublishTimeout, err)
			} else {
				again = append(again, i)
			}
		default:
			results[i] = err
		}
	}
	return again
}

// loop resolves confirms. A basic.return precedes the basic.ack of the same
// message, and amqp091 hands the return over first (PITFALLS 6): draining
// the returns before each confirm attaches every return to its message.
func (c *confirmChannel) loop() {
	defer close(c.dead)
	returned := map[uint64]amqp.Return{}
	returns := c.returns
	for conf := range c.confirms {
		for drained := false; !drained; {
			select {
			case r, ok := <-returns:
				if !ok {
					// Closed with the channel while confirms are still
					// buffered: a closed channel is always ready, so stop
					// reading it or this loop spins forever.
					returns, drained = nil, true
					continue
				}
				if seq, ok := r.Headers[returnSeqHeader].(int64); ok {
					returned[uint64(seq)] = r
				}
			default:
				drained = true
			}
		}
		c.mu.Lock()
		ref, ok := c.pending[conf.DeliveryTag]
		delete(c.pending, conf.DeliveryTag)
		c.mu.Unlock()
		if !ok {
			continue
		}
		var err error
		if r, isRet := returned[conf.DeliveryTag]; isRet {
			delete(returned, conf.DeliveryTag)
			err = fmt.Errorf("%w: %d %s (exchange %q, key %q)", ErrUnroutable, r.ReplyCode, r.ReplyText, r.Exchange, r.RoutingKey)
		} else if !conf.Ack {
			err = ErrNacked
			if !c.ch.IsOpen() || c.ch.ConnectionLost() {
				// A nack of a channel that is going away is the client
				// giving up on the confirm, not the broker refusing
				// (PITFALLS 5).
				err = errUnconfirmed
			}
		}
		ref.b.settle(ref.idx, err)
	}
	// The channel is gone: amqp091 reports pending confirms of a dead
	// connection as nacks only sometimes; whatever is left is unknown.
	c.mu.Lock()
	left := c.pending
	c.pending = map[uint64]pendingRef{}
	c.mu.Unlock()
	for _, ref := range left {
		ref.b.settle(ref.idx, errUnconfirmed)
	}
	if returns != nil {
		for range returns {
		}
	}
}
