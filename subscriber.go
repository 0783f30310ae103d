package warren

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren/ack"
	"github.com/warrenmq/warren/conn"
	"github.com/warrenmq/warren/topology"
)

var (
	_ message.Subscriber           = (*Subscriber)(nil)
	_ message.SubscribeInitializer = (*Subscriber)(nil)
)

// Subscriber is a Watermill message.Subscriber. Each Subscribe consumes the
// topic's queue (declared and restored through the topology registry) and
// returns a channel that stays open across reconnects and server-side
// consumer cancels; it closes only when Subscribe's ctx ends or Close is
// called. Safe for concurrent use.
type Subscriber struct {
	conn *conn.Conn
	ops  *topology.Ops
	cfg  SubscriberConfig

	mu      sync.Mutex
	closed  bool
	subs    map[*subscription]struct{}
	closing chan struct{}
	wg      sync.WaitGroup

	staleAcks atomic.Int64
	poison    atomic.Int64
}

// SubscriberStats are counters of what the subscriber had to handle.
type SubscriberStats struct {
	// StaleAcks are settlements dropped because the delivery's channel was
	// gone (the broker redelivers those messages).
	StaleAcks int64
	// Poison are deliveries that could not be decoded.
	Poison int64
}

// NewSubscriber returns a Subscriber on c. The connection is the caller's:
// Close does not close it.
func NewSubscriber(c *conn.Conn, cfg SubscriberConfig) (*Subscriber, error) {
	if c == nil {
		return nil, &ConfigError{"conn", "must not be nil"}
	}
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	ops, err := topology.NewOps(c, cfg.Ops)
	if err != nil {
		return nil, err
	}
	return &Subscriber{conn: c, ops: ops, cfg: cfg, subs: map[*subscription]struct{}{}, closing: make(chan struct{})}, nil
}

// Stats returns the subscriber's counters.
func (s *Subscriber) Stats() SubscriberStats {
	return SubscriberStats{StaleAcks: s.staleAcks.Load(), Poison: s.poison.Load()}
}

// Consuming reports whether the subscriber has at least one subscription,
// every one of them with a live consumer, on a connected connection: what
// a readiness probe wants to know.
func (s *Subscriber) Consuming() bool {
	if s.conn.State() != conn.StateConnected {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || len(s.subs) == 0 {
		return false
	}
	for st := range s.subs {
		select {
		case <-st.consumer.Done():
			return false
		default:
		}
	}
	return true
}

// SubscribeInitialize declares the topic's subscription topology (queue,
// exchange, bindings), recorded for restore, without consuming: messages
// published afterwards wait in the queue.
func (s *Subscriber) SubscribeInitialize(topic string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := s.initialize(ctx, topic)
	return err
}

func (s *Subscriber) initialize(ctx context.Context, topic string) (Subscription, error) {
	sub, err := s.cfg.Mapping.Subscription(topic)
	if err != nil {
		return Subscription{}, fmt.Errorf("warren: topic %q: %w", topic, err)
	}
	if err := s.ops.Apply(ctx, sub.Topology); err != nil {
		return Subscription{}, fmt.Errorf("warren: declare subscription of topic %q: %w", topic, err)
	}
	return sub, nil
}

// Subscribe consumes topic. Messages come one at a time by default
// (MaxInFlight 1): the next only after the previous was acked or nacked. The
// message's context carries ack.Info and is cancelled once it is settled.
// Errors: ErrClosed after Close; declare errors from package topology.
func (s *Subscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, ErrClosed
	}
	s.wg.Add(1)
	s.mu.Unlock()
	started := false
	defer func() {
		if !started {
			s.wg.Done()
		}
	}()
	sub, err := s.initialize(ctx, topic)
	if err != nil {
		return nil, err
	}
	st := &subscription{
		s:        s,
		queue:    sub.Queue,
		out:      make(chan *message.Message),
		stopping: make(chan struct{}),
		abandon:  make(chan struct{}),
	}
	if s.cfg.MaxInFlight > 1 {
		st.slots = make(chan struct{}, s.cfg.MaxInFlight)
	}
	st.consumer, err = s.ops.Consume(ctx, topology.ConsumerSpec{
		Queue:         sub.Queue,
		PrefetchCount: s.cfg.Prefetch,
		Handler:       st.handle,
	})
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	if s.closed { // Close ran meanwhile
		s.mu.Unlock()
		stopCtx, cancel := context.WithTimeout(context.Background(), s.cfg.CloseTimeout)
		_ = st.consumer.Stop(stopCtx)
		cancel()
		return nil, ErrClosed
	}
	s.subs[st] = struct{}{}
	s.mu.Unlock()
	started = true
	go func() {
		defer s.wg.Done()
		select {
		case <-ctx.Done():
		case <-s.closing:
		case <-st.consumer.Done(): // its queue is gone for good
			s.cfg.Logger.Error("warren: consumer ended", "topic", topic, "queue", sub.Queue, "err", st.consumer.Err())
		}
		st.stop()
		s.mu.Lock()
		delete(s.subs, st)
		s.mu.Unlock()
	}()
	return st.out, nil
}

// Close stops every subscription, lets handlers settle what they hold
// (bounded by CloseTimeout), and returns once every output channel is closed
// and every goroutine has ended. Idempotent.
func (s *Subscriber) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		s.wg.Wait()
		return nil
	}
	s.closed = true
	close(s.closing)
	s.mu.Unlock()
	s.wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.CloseTimeout)
	defer cancel()
	return s.ops.Close(ctx)
}

// subscription is one Subscribe call.
type subscription struct {
	s        *Subscriber
	queue    string
	consumer *topology.Consumer
	out      chan *message.Message
	slots    chan struct{} // MaxInFlight > 1
	workers  sync.WaitGroup
	stopping chan struct{} // closed when stop begins: hand out nothing more
	abandon  chan struct{} // closed after CloseTimeout: stop waiting for settles
	stopOnce sync.Once
}

// stop cancels the consumer, lets handlers settle what they hold (bounded
// by CloseTimeout; after that the broker redelivers what is left), then
// closes the output channel.
func (st *subscription) stop() {
	st.stopOnce.Do(func() {
		close(st.stopping)
		var abandonOnce sync.Once
		abandon := func() { abandonOnce.Do(func() { close(st.abandon) }) }
		timer := time.AfterFunc(st.s.cfg.CloseTimeout, abandon)
		defer timer.Stop()
		ctx, cancel := context.WithTimeout(context.Background(), st.s.cfg.CloseTimeout+5*time.Second)
		defer cancel()
		_ = st.consumer.StopWith(ctx, func(context.Context) { st.workers.Wait() })
		abandon()
		close(st.out)
	})
}

// handle runs on the consumer's goroutine for each delivery.
func (st *subscription) handle(hctx context.Context, d amqp.Delivery) {
	ch := topology.DeliveryChannel(hctx)
	msg, err := st.s.cfg.Marshaler.Unmarshal(&d)
	if err != nil {
		st.poison(ch, &d, err)
		return
	}
	if st.slots == nil {
		st.process(ch, &d, msg)
		return
	}
	select {
	case st.slots <- struct{}{}:
	case <-st.stopping:
		st.settle(ch, &d, ack.Requeue)
		return
	}
	st.workers.Add(1)
	go func() {
		defer func() {
			<-st.slots
			st.workers.Done()
		}()
		st.process(ch, &d, msg)
	}()
}

func (st *subscription) poison(ch *conn.Channel, d *amqp.Delivery, err error) {
	st.s.poison.Add(1)
	pe := &PoisonError{Queue: st.queue, DeliveryTag: d.DeliveryTag, MessageID: d.MessageId, Body: d.Body, Headers: d.Headers, Err: err}
	st.s.cfg.Logger.Error("warren: poison message", "queue", st.queue, "message_id", d.MessageId, "err", err)
	if st.s.cfg.OnPoison != nil && st.s.cfg.OnPoison(pe) == nil {
		st.settle(ch, d, ack.Ack)
		return
	}
	// Rejected without requeue: to the queue's dead-letter exchange, never
	// back into the queue in a loop (watermill-amqp issues 65, 184).
	st.settle(ch, d, ack.Reject)
}

func (st *subscription) process(ch *conn.Channel, d *amqp.Delivery, msg *message.Message) {
	var gen uint64
	if ch != nil {
		gen = ch.Generation()
	}
	info := ack.Info{
		DeliveryTag: d.DeliveryTag, Redelivered: d.Redelivered, Exchange: d.Exchange, RoutingKey: d.RoutingKey,
		Queue: st.queue, ConsumerTag: d.ConsumerTag, Headers: d.Headers, Generation: gen,
	}
	ctx, cancel := context.WithCancel(ack.NewContext(context.Background(), info))
	defer cancel() // the message's context ends once it is settled
	msg.SetContext(ctx)
	var chDone <-chan struct{}
	if ch != nil {
		chDone = ch.Done()
	}
	select {
	case st.out <- msg:
	case <-st.stopping:
		st.settle(ch, d, ack.Requeue)
		return
	case <-chDone:
		st.s.staleAcks.Add(1)
		return
	}
	stopping := st.stopping
	for {
		select {
		case <-msg.Acked():
			disp, _ := ack.Get(msg)
			if disp == ack.Unset {
				disp = ack.Ack
			}
			st.settle(ch, d, disp)
			return
		case <-msg.Nacked():
			disp, _ := ack.Get(msg)
			if disp == ack.Unset || disp == ack.Ack {
				disp = st.s.cfg.NackDisposition
			}
			st.settle(ch, d, disp)
			return
		case <-chDone:
			// The channel died with the delivery in hand: its tag means
			// nothing on any other channel, and the broker redelivers it.
			st.s.staleAcks.Add(1)
			return
		case <-stopping:
			// Closing: tell the handler through the message's context,
			// then keep waiting for its ack or nack until abandon.
			cancel()
			stopping = nil
		case <-st.abandon:
			return
		}
	}
}

// settle acks, nacks or rejects a delivery on the channel it came on, or
// drops the settlement when that channel is gone (PITFALLS 4).
func (st *subscription) settle(ch *conn.Channel, d *amqp.Delivery, disp ack.Disposition) {
	if ch != nil && !ch.IsOpen() {
		st.s.staleAcks.Add(1)
		return
	}
	var err error
	switch disp {
	case ack.Ack:
		err = d.Ack(false)
	case ack.Requeue:
		err = d.Nack(false, true)
	case ack.Reject:
		err = d.Reject(false)
	case ack.RejectRequeue:
		err = d.Reject(true)
	}
	if err != nil {
		if errors.Is(err, amqp.ErrClosed) {
			st.s.staleAcks.Add(1)
			return
		}
		st.s.cfg.Logger.Warn("warren: settling a delivery failed", "queue", st.queue, "disposition", disp.String(), "err", err)
	}
}
