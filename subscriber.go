package warren

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren/ack"
	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/conn"
	"github.com/warrenmq/warren/internal/connx"
	"github.com/warrenmq/warren/internal/errkind"
	"github.com/warrenmq/warren/internal/headers"
	"github.com/warrenmq/warren/internal/instrument"
	"github.com/warrenmq/warren/internal/latch"
	"github.com/warrenmq/warren/internal/lazyctx"
	"github.com/warrenmq/warren/internal/logx"
	"github.com/warrenmq/warren/internal/lru"
	"github.com/warrenmq/warren/internal/partition"
	"github.com/warrenmq/warren/internal/streampos"
	"github.com/warrenmq/warren/internal/valuesonly"
	"github.com/warrenmq/warren/internal/workgroup"
)

var (
	_ message.Subscriber           = (*Subscriber)(nil)
	_ message.SubscribeInitializer = (*Subscriber)(nil)
)

// Subscriber is a Watermill message.Subscriber. Each Subscribe consumes the
// topic's queue (declared into the connection's one registry and restored
// after every reconnect) and returns a channel that stays open across
// reconnects, server-side cancels and deleted queues (the consumer comes
// back by itself); it closes only when Subscribe's ctx ends or Close is
// called. Safe for concurrent use.
type Subscriber struct {
	conn *conn.Conn
	ops  *broker.Ops
	reg  *broker.Registry
	cfg  SubscriberConfig
	log  *slog.Logger
	// observer is the marshaler as an AckObserver (nil: it is not one).
	// Its acks are sent before it hears of them, not held back with others
	// (broker.Delivery.AckNow): it may act on the message being gone.
	observer AckObserver

	group workgroup.Group // a watcher per subscription

	mu     sync.Mutex
	closed bool
	subs   []*subscription // a few per Subscriber, usually one: a slice, not a map
	groups []*partition.Group

	// attempts remembers, per queue and message id, how many attempts a
	// requeued message had: a classic queue's redelivery says only
	// "redelivered", not how often. Made on first use.
	attemptsOnce sync.Once
	attemptsLRU  *lru.Cache[string, int]

	staleAcks atomic.Int64
	poison    atomic.Int64
	inFlight  atomic.Int64
	givenBack atomic.Int64
}

// SubscriberStats are counters of what the subscriber had to handle.
type SubscriberStats struct {
	// StaleAcks are settlements dropped because the delivery's channel was
	// gone (the broker redelivers those messages).
	StaleAcks int64
	// Poison are deliveries that could not be decoded.
	Poison int64
	// InFlight are the messages handed to handlers and not yet settled,
	// now: what a drain waits for.
	InFlight int64
	// GivenBack are the messages a shutdown gave back to the broker
	// unfinished: their handler had not settled them by the shutdown's
	// deadline, or nothing had taken them from Subscribe's channel. The
	// broker delivers them again.
	GivenBack int64
}

// attemptMemory bounds what a Subscriber remembers of requeued messages.
const attemptMemory = 10000

// initializeTimeout bounds SubscribeInitialize, which takes no ctx: the
// declares of one topic's topology.
const initializeTimeout = 30 * time.Second

// watcherGrace is how long Shutdown waits past its ctx for the goroutines
// of subscriptions that have all stopped (each is returning): a short ctx
// would otherwise report them as left running.
const watcherGrace = time.Second

// NewSubscriber returns a Subscriber on c. The connection is the caller's:
// Close does not close it.
func NewSubscriber(c *conn.Conn, cfg SubscriberConfig) (*Subscriber, error) {
	if c == nil {
		return nil, &conn.ConfigError{Field: "warren.NewSubscriber.conn", Reason: "must not be nil"}
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
	ops, err := broker.NewOps(c, cfg.Ops)
	if err != nil {
		return nil, err
	}
	observer, _ := cfg.Marshaler.(AckObserver)
	return &Subscriber{
		conn: c, ops: ops, reg: ops.Registry(), cfg: cfg, log: log, observer: observer,
	}, nil
}

func (s *Subscriber) attempts() *lru.Cache[string, int] {
	s.attemptsOnce.Do(func() { s.attemptsLRU = lru.New[string, int](attemptMemory) })
	return s.attemptsLRU
}

// Stats returns the subscriber's counters.
func (s *Subscriber) Stats() SubscriberStats {
	return SubscriberStats{StaleAcks: s.staleAcks.Load(), Poison: s.poison.Load(), InFlight: s.inFlight.Load(), GivenBack: s.givenBack.Load()}
}

// Consuming reports whether the subscriber has at least one subscription,
// every one of them with a live consumer, on a connected connection: what
// a readiness probe wants to know. It is false while a consumer comes back
// from an interruption (a deleted queue, a lost channel).
func (s *Subscriber) Consuming() bool {
	if s.conn.State() != conn.StateConnected {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || len(s.subs) == 0 {
		return false
	}
	for _, st := range s.subs {
		if !st.consumer.Consuming() {
			return false
		}
	}
	return true
}

// SubscribeInitialize declares the topic's subscription topology (queue,
// exchange, bindings), recorded for restore, without consuming: messages
// published afterwards wait in the queue.
func (s *Subscriber) SubscribeInitialize(topic string) error {
	ctx, cancel := context.WithTimeout(context.Background(), initializeTimeout)
	defer cancel()
	_, err := s.initialize(ctx, topic)
	return err
}

func (s *Subscriber) initialize(ctx context.Context, topic string) (Subscription, error) {
	if err := checkTopic(topic); err != nil {
		return nil, err
	}
	sub, err := s.cfg.Mapping.Subscription(topic)
	if err != nil {
		return nil, &TopicError{Topic: topic, Reason: "the mapping makes no valid subscription of it", Err: err}
	}
	switch sub := sub.(type) {
	case QueueSubscription:
		if sub.Queue == "" {
			return nil, &TopicError{Topic: topic, Reason: "the mapping names no queue"}
		}
	case StreamSubscription:
		if sub.Stream == "" {
			return nil, &TopicError{Topic: topic, Reason: "the mapping names no stream"}
		}
	case PartitionedSubscription:
		if len(sub.Partitions) == 0 || sub.Members == "" {
			return nil, &TopicError{Topic: topic, Reason: "the mapping names no partitions or no members queue"}
		}
	default: // nil
		return nil, &TopicError{Topic: topic, Reason: "the mapping gives no subscription"}
	}
	if err := s.ops.Apply(ctx, sub.declares()); err != nil {
		return nil, fmt.Errorf("warren: declare subscription of topic %q: %w", topic, err)
	}
	return sub, nil
}

// Subscribe consumes topic. Messages come one at a time by default
// (MaxInFlight 1): the next only after the previous was acked or nacked.
// Each message's context carries ctx's values and ack.Info; it is cancelled
// once the message is settled, or when the subscription ends and its
// handler did not settle it in time (see SubscriberConfig.CloseTimeout).
// When ctx ends the subscription ends like Close: no new messages, the
// handlers in flight finish, then the output channel closes. Errors:
// conn.ErrClosed after Close; ErrInvalidTopic; declare errors from package
// topology.
func (s *Subscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	out, err := s.subscribe(ctx, topic, nil)
	if err != nil {
		return nil, err
	}
	return out, nil
}

// SubscribeFunc consumes topic like Subscribe, but runs h on each message
// itself, on the subscription's own goroutine (or MaxInFlight of them),
// instead of handing messages out through a channel: the message is acked
// when h returns nil (or settled as h set with package ack) and nacked when
// it returns an error. Nothing is passed between goroutines per message,
// which is how package router runs its routes. A panic in h is recovered
// into a nack. The subscription ends like Subscribe's (ctx, Close,
// Shutdown), letting a running h finish.
func (s *Subscriber) SubscribeFunc(ctx context.Context, topic string, h func(*message.Message) error) error {
	if h == nil {
		return &conn.ConfigError{Field: "warren.Subscriber.SubscribeFunc.h", Reason: "must not be nil"}
	}
	_, err := s.subscribe(ctx, topic, h)
	return err
}

// subscribe starts a subscription of topic, of the kind its mapping
// chose: a queue's, a stream's, or a share of a partitioned topic's
// partitions (internal/partition). It returns the output channel (nil with
// a handler).
func (s *Subscriber) subscribe(ctx context.Context, topic string, h func(*message.Message) error) (<-chan *message.Message, error) {
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return nil, conn.ErrClosed
	}
	sub, err := s.initialize(ctx, topic)
	if err != nil {
		return nil, err
	}
	var st *subscription
	switch sub := sub.(type) {
	case PartitionedSubscription:
		return s.subscribePartitions(ctx, topic, sub, h)
	case StreamSubscription:
		st, err = s.subscribeStream(ctx, topic, sub, h)
	case QueueSubscription:
		st, err = s.consumeQueue(ctx, topic, consumeOptions{queue: sub.Queue, kind: queueKind{}}, h)
	}
	if err != nil {
		return nil, err
	}
	return st.out, nil
}

// subscribeStream reads a stream from its position (internal/streampos).
func (s *Subscriber) subscribeStream(ctx context.Context, topic string, sub StreamSubscription, h func(*message.Message) error) (*subscription, error) {
	if s.cfg.MaxInFlight > 1 {
		return nil, &conn.ConfigError{Field: "warren.SubscriberConfig.MaxInFlight",
			Reason: "a stream subscription hands out one message at a time (its position is the last message acked); want 1"}
	}
	pos, err := streampos.New(ctx, streampos.Config{
		Conn: s.conn, Ops: s.ops, Log: s.log, Stream: sub.Stream, Start: sub.Start.arg(), Consumer: sub.Consumer,
		WriteTimeout: s.cfg.CloseTimeout, Go: s.group.Go,
	})
	if err != nil {
		return nil, err
	}
	st, err := s.consumeQueue(ctx, topic, consumeOptions{queue: sub.Stream, kind: streamKind{pos}, streamOffset: pos.Next}, h)
	if err != nil {
		pos.Close()
		return nil, err
	}
	return st, nil
}

// consumeOptions are a subscription's queue and kind.
type consumeOptions struct {
	queue string
	kind  kind
	// orderedHandOver marks a queue whose order holds from one consumer to
	// the next (a partition of a partitioned topic, any single-active-
	// consumer queue the registry knows): its consumer hands it over in
	// order when it stops or pauses (broker.ConsumerSpec.OrderedHandOver).
	orderedHandOver bool
	// streamOffset is where a stream's consume starts (each time).
	streamOffset func() any
}

// consumeQueue starts a subscription of o.queue.
func (s *Subscriber) consumeQueue(ctx context.Context, topic string, o consumeOptions, h func(*message.Message) error) (*subscription, error) {
	var err error
	st := &subscription{
		s:       s,
		topic:   topic,
		queue:   o.queue,
		kind:    o.kind,
		values:  instrument.Of(s.cfg.Telemetry).Received(valuesonly.From(ctx)),
		handler: h,
	}
	if spec, ok := s.reg.QueueSpec(o.queue); ok {
		st.temporary = spec.Exclusive || spec.AutoDelete
		// A single-active-consumer queue promises its order from one
		// consumer to the next and across a pause: only a channel's close
		// gives the prefetch back to the head of the queue before another
		// consumer is activated (PITFALLS 33, 48).
		o.orderedHandOver = o.orderedHandOver || spec.Args.SingleActiveConsumer
	}
	if h == nil {
		st.out = make(chan *message.Message)
	}
	spec := broker.ConsumerSpec{
		Queue:           o.queue,
		PrefetchCount:   s.cfg.Prefetch,
		Handler:         st.handle,
		Handlers:        s.cfg.MaxInFlight,
		OnEvent:         st.onEvent,
		OrderedHandOver: o.orderedHandOver,
		StreamOffset:    o.streamOffset,
	}
	st.consumer, err = s.ops.Consume(ctx, spec)
	st.consumed.Set()
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	if s.closed { // Close ran meanwhile
		s.mu.Unlock()
		st.stop(context.Background())
		return nil, conn.ErrClosed
	}
	s.subs = append(s.subs, st)
	s.mu.Unlock()
	// No goroutine waits for ctx: its end starts the stop.
	if ctx.Done() != nil {
		st.unwatch = context.AfterFunc(ctx, st.stopInBackground)
	}
	return st, nil
}

// Close is Shutdown bounded by CloseTimeout.
func (s *Subscriber) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.CloseTimeout)
	defer cancel()
	return s.Shutdown(ctx)
}

// Shutdown ends every subscription the way http.Server.Shutdown ends
// requests: it stops new deliveries at once, lets the handlers in flight
// finish and settle with live message contexts, and only when ctx ends
// cancels those contexts; whatever is still unsettled then goes back to the
// queue (the broker redelivers it). It returns once every output channel is
// closed and every goroutine has ended, or with an error naming what is
// still running. Idempotent: later calls wait the same way.
func (s *Subscriber) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	groups := slices.Clone(s.groups)
	s.mu.Unlock()
	for _, g := range groups {
		g.StopClaiming() // no partition claimed while the others stop
	}
	s.mu.Lock()
	subs := slices.Clone(s.subs)
	s.mu.Unlock()
	var wg sync.WaitGroup
	for _, st := range subs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st.stop(ctx)
		}()
	}
	wg.Wait()
	for _, g := range groups {
		g.UnlockAll()
		g.CloseOutput() // its partitions have stopped: the forwarders return
	}
	s.group.Close()
	waitCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), watcherGrace)
	defer cancel()
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) > watcherGrace {
		waitCtx = ctx
	}
	return errors.Join(s.group.Wait(waitCtx, "warren: Subscriber"), s.ops.Close(waitCtx))
}

// subscription is one Subscribe call.
type subscription struct {
	s        *Subscriber
	topic    string
	queue    string
	kind     kind
	consumer *broker.Consumer
	// consumed is set once consumer is: the consumer's events (its
	// end, when the connection closes for good) may come before Consume
	// returns, and a stop they start reads consumer.
	consumed latch.Latch
	// values is Subscribe's ctx without its cancellation, kept for its
	// values only: every message's context derives from it (Watermill
	// hands Subscribe's values to each message). It cannot be cancelled,
	// so a message's context costs no registration with it; at stop's
	// deadline abandon cancels the contexts of the messages in flight,
	// kept in flight.
	values context.Context
	// abandoned is set by abandon. It and stopping are latches, not
	// channels: most subscriptions are idle most of the time, and nobody
	// waits on either until a message is in hand or the subscription
	// stops (issue 33: heap per Subscriber).
	abandoned latch.Latch
	abandonMu sync.Mutex
	flight    map[*broker.Delivery]*lazyctx.Context // MaxInFlight > 1
	single    *lazyctx.Context                      // MaxInFlight 1
	// handler runs each message (SubscribeFunc); nil hands messages out on
	// out (Subscribe).
	handler  func(*message.Message) error
	out      chan *message.Message
	stopping latch.Latch // set when stop begins: hand out nothing more
	stopOnce sync.Once   // Do also makes concurrent stops wait for the first
	unwatch  func() bool // stops the wait for Subscribe's ctx
	// temporary marks an exclusive or auto-delete queue, for telemetry.
	temporary bool
	// destination is telemetry's description of where the last message
	// came from: the next most often came the same way.
	destination instrument.Memo
}

// Stop, Ended and Out make a subscription a partition.Member.
func (st *subscription) Stop(ctx context.Context)     { st.stop(ctx) }
func (st *subscription) Ended() <-chan struct{}       { return st.stopping.Done() }
func (st *subscription) Out() <-chan *message.Message { return st.out }

// Pause and Resume make a subscription a partition.Member.
func (st *subscription) Pause(ctx context.Context) error {
	select {
	case <-st.consumed.Done():
		return st.consumer.Pause(ctx)
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (st *subscription) Resume(ctx context.Context) error {
	select {
	case <-st.consumed.Done():
		return st.consumer.Resume(ctx)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// stopInBackground ends the subscription when Subscribe's ctx ended or its
// consumer ended with its owner (the connection closed), with CloseTimeout
// for the handlers in flight, on a goroutine Close waits for.
func (st *subscription) stopInBackground() {
	st.s.group.Go("stop subscription "+st.topic, func() {
		<-st.consumed.Done()
		ctx, cancel := context.WithTimeout(context.Background(), st.s.cfg.CloseTimeout)
		defer cancel()
		st.stop(ctx)
	})
}

// stop stops new deliveries, lets handlers settle what they hold until ctx
// ends (then cancels their contexts and requeues what is left), closes the
// output channel and forgets the subscription. Concurrent calls wait for the
// first.
func (st *subscription) stop(ctx context.Context) {
	st.stopOnce.Do(func() {
		if st.unwatch != nil {
			st.unwatch()
		}
		st.stopping.Set()
		release := context.AfterFunc(ctx, st.abandon)
		defer func() {
			release()
			st.abandon()
		}()
		// Stop returns once every handler the consumer runs (MaxInFlight
		// of them) has finished its message.
		_ = st.consumer.Stop(ctx)
		if st.out != nil {
			close(st.out)
		}
		st.kind.stopped()
		st.s.mu.Lock()
		if i := slices.Index(st.s.subs, st); i >= 0 {
			st.s.subs = slices.Delete(st.s.subs, i, i+1)
		}
		st.s.mu.Unlock()
	})
}

// abandon is stop's deadline: it tells every handler still running (their
// message contexts are cancelled), once.
func (st *subscription) abandon() {
	st.abandonMu.Lock()
	defer st.abandonMu.Unlock()
	if st.abandoned.IsSet() {
		return
	}
	st.abandoned.Set()
	// What handlers still hold at the deadline goes back to the broker
	// unfinished.
	n := int64(len(st.flight))
	if st.single != nil {
		n++
	}
	st.s.givenBack.Add(n)
	if st.single != nil {
		st.single.Cancel()
	}
	for _, ctx := range st.flight {
		ctx.Cancel()
	}
}

// track keeps a message's context for abandon until untrack; a message
// that arrives after abandon is cancelled at once.
func (st *subscription) track(d *broker.Delivery, ctx *lazyctx.Context) {
	st.s.inFlight.Add(1)
	st.abandonMu.Lock()
	defer st.abandonMu.Unlock()
	if st.abandoned.IsSet() {
		ctx.Cancel()
		return
	}
	if st.s.cfg.MaxInFlight == 1 {
		st.single = ctx
		return
	}
	if st.flight == nil {
		st.flight = map[*broker.Delivery]*lazyctx.Context{}
	}
	st.flight[d] = ctx
}

func (st *subscription) untrack(d *broker.Delivery) {
	st.s.inFlight.Add(-1)
	st.abandonMu.Lock()
	defer st.abandonMu.Unlock()
	if st.s.cfg.MaxInFlight == 1 {
		st.single = nil
		return
	}
	delete(st.flight, d)
}

func (st *subscription) onEvent(e broker.ConsumerEvent) {
	if e.Kind == broker.ConsumerEnded {
		st.s.log.Warn("warren: subscription ends with its consumer", "topic", st.topic, logx.Queue, st.queue, logx.Error, e.Err)
		st.stopInBackground()
	}
	if h := st.s.cfg.OnConsumerEvent; h != nil {
		h(st.topic, e)
	}
}

// handle runs for each delivery on the consumer's goroutine, or with
// MaxInFlight above 1 on one of the consumer's handler goroutines
// (broker.ConsumerSpec.Handlers), which take deliveries themselves.
func (st *subscription) handle(_ context.Context, f *broker.Delivery) {
	d := f
	if st.kind.passedOver(d) {
		st.settle(f, ack.Ack, nil)
		return
	}
	// A delivery of a channel that is gone is not handed out: the broker
	// gives it again (a stream's next consume starts after the last message
	// acked); handed out, it would run beside its redelivery.
	select {
	case <-d.Gone():
		return
	default:
	}
	msg, err := st.s.cfg.Marshaler.Unmarshal(&d.Delivery)
	if err != nil {
		st.poison(f, err)
		return
	}
	// With MaxInFlight above 1 this runs on one of the consumer's
	// handler goroutines, beside the others: a stop begun meanwhile hands
	// nothing more out.
	if st.s.cfg.MaxInFlight > 1 && st.stopping.IsSet() {
		st.settle(f, ack.Requeue, nil)
		return
	}
	st.process(f, msg)
}

func (st *subscription) attemptKey(d *broker.Delivery) string {
	if d.MessageId == "" {
		return ""
	}
	return st.queue + "\x00" + d.MessageId
}

// previousAttempts is what the broker's headers say, or what this
// subscriber remembers of the message, whichever is more.
func (st *subscription) previousAttempts(d *broker.Delivery) int {
	prev := headers.PreviousAttempts(d.Headers, st.queue, d.Redelivered)
	// A message this subscriber requeued comes back redelivered: only then
	// is there anything to remember.
	if !d.Redelivered {
		return prev
	}
	if k := st.attemptKey(d); k != "" {
		if n, ok := st.s.attempts().Get(k); ok && n > prev {
			prev = n
		}
	}
	return prev
}

// forgetRedelivery drops what this subscriber remembers of a settled
// delivery's attempts. Only a requeued message has a count, and it comes
// back redelivered (previousAttempts reads the count only then): a first
// delivery builds no key and takes no lock.
func (st *subscription) forgetRedelivery(d *broker.Delivery) {
	if !d.Redelivered {
		return
	}
	if k := st.attemptKey(d); k != "" {
		st.s.attempts().Delete(k)
	}
}

func (st *subscription) poison(f *broker.Delivery, err error) {
	d := f
	st.s.poison.Add(1)
	instrument.Of(st.s.cfg.Telemetry).Poison(st.queue)
	pe := &PoisonError{Queue: st.queue, DeliveryTag: d.DeliveryTag, MessageID: d.MessageId, Delivery: d.Delivery, Err: err}
	level := slog.LevelError
	if st.previousAttempts(d) > 0 {
		level = slog.LevelDebug // logged when it first came: once per message, not per redelivery
	}
	st.logMessage(level, "warren: poison message: it cannot be decoded and never reaches a handler",
		logx.MessageID, d.MessageId, logx.Error, err, logx.ErrorType, errkind.Type(pe))
	if st.s.cfg.OnPoison != nil && st.s.cfg.OnPoison(pe) == nil {
		st.settle(f, ack.Ack, nil)
		return
	}
	st.kind.poison(st, f)
}

// hasDeadLetter reports whether the queue's registered spec names a
// dead-letter target (a policy may add one the client cannot see; such a
// queue is treated as having none, which loses nothing).
func (st *subscription) hasDeadLetter() bool {
	spec, ok := st.s.reg.QueueSpec(st.queue)
	return ok && spec.HasDeadLetter()
}

// deadLetterKnownMissing reports a queue whose registered spec names no
// dead-letter target: rejecting into it drops the message (a queue the
// registry does not hold may have one, set by its declarer or a policy).
func (st *subscription) deadLetterKnownMissing() bool {
	spec, ok := st.s.reg.QueueSpec(st.queue)
	return ok && !spec.HasDeadLetter() && !spec.ReadOnly
}

func (st *subscription) process(f *broker.Delivery, msg *message.Message) {
	previous := st.previousAttempts(f)
	for msg != nil {
		msg, previous = st.processOnce(f, msg, previous)
	}
}

// processOnce hands msg out and settles it; it returns the message to hand
// out again (a stream's nacked message: a stream does not redeliver), with
// its attempts so far, or nil.
func (st *subscription) processOnce(f *broker.Delivery, msg *message.Message, previous int) (*message.Message, int) {
	d := f
	exchange, key := deliveredVia(&d.Delivery)
	info := ack.Info{
		DeliveryTag: d.DeliveryTag, Redelivered: d.Redelivered, Exchange: exchange, RoutingKey: key,
		Queue: st.queue, ConsumerTag: d.ConsumerTag, Headers: d.Headers, Generation: d.Generation(),
		PreviousAttempts: previous,
	}
	traced, proc := instrument.Of(st.s.cfg.Telemetry).StartProcess(ack.NewContext(st.values, info), connx.Peer(st.s.conn), instrument.Incoming{
		Destination: instrument.Destination{Exchange: info.Exchange, RoutingKey: key, Queue: st.queue, Temporary: st.temporary},
		MessageID:   d.MessageId, CorrelationID: d.CorrelationId, DeliveryTag: d.DeliveryTag, Headers: d.Headers,
		BodySize: len(d.Body), Memo: &st.destination,
	})
	// The message's context ends once it is settled, at HandlerTimeout, or
	// at the shutdown deadline (abandon); its timer is armed only if the
	// handler waits on it (internal/lazyctx).
	ctx := lazyctx.New(traced, st.s.cfg.HandlerTimeout)
	defer ctx.Cancel()
	st.track(f, ctx)
	defer st.untrack(f)
	msg.SetContext(ctx)
	if st.handler != nil {
		st.run(msg)
	} else if !st.handOut(msg) {
		select {
		case st.out <- msg:
		case <-st.stopping.Done():
			proc.End(nil)
			st.s.givenBack.Add(1)
			st.settle(f, ack.Requeue, proc)
			return nil, 0
		case <-d.Gone():
			proc.End(errDeliveryGone)
			st.stale()
			return nil, 0
		}
	}
	// A handler's message is settled by now, and a reader's often is: the
	// four-case select below locks and queues on every channel it waits
	// for, even to find one already closed.
	select {
	case <-msg.Acked():
		return st.finishAcked(f, msg, proc)
	default:
	}
	select {
	case <-msg.Nacked():
		return st.finishNacked(f, msg, proc)
	default:
	}
	select {
	case <-msg.Acked():
		return st.finishAcked(f, msg, proc)
	case <-msg.Nacked():
		return st.finishNacked(f, msg, proc)
	case <-d.Gone():
		// The channel died with the delivery in hand: its tag means
		// nothing on any other channel, and the broker redelivers it.
		proc.End(errDeliveryGone)
		st.stale()
	case <-st.abandoned.Done():
		// Shutdown's deadline (the handler was told by its context): give
		// the message back now; a settlement the handler makes later is
		// dropped.
		proc.End(context.Canceled)
		st.settle(f, ack.Requeue, proc)
	}
	return nil, 0
}

// finishAcked finishes a message its handler acked (or settled with
// another disposition through ack.Set, then acked).
func (st *subscription) finishAcked(f *broker.Delivery, msg *message.Message, proc *instrument.Process) (*message.Message, int) {
	disp, why := ack.Get(msg)
	if disp == ack.Unset {
		disp = ack.Ack
	}
	if disp == ack.Ack {
		why = nil
	}
	proc.End(why)
	return st.kind.finish(st, f, msg, disp, proc)
}

// finishNacked finishes a message its handler nacked.
func (st *subscription) finishNacked(f *broker.Delivery, msg *message.Message, proc *instrument.Process) (*message.Message, int) {
	disp, why := ack.Get(msg)
	if disp == ack.Unset || disp == ack.Ack {
		disp = st.s.cfg.NackDisposition
	}
	if why == nil {
		why = errkind.ErrHandlerNacked
	}
	proc.End(why)
	return st.kind.finish(st, f, msg, disp, proc)
}

// handOut gives msg to a reader already waiting for it, if there is one
// and the subscription is not stopping: the common case, which then skips
// the blocking select that locks and queues on three channels.
func (st *subscription) handOut(msg *message.Message) bool {
	if st.stopping.IsSet() {
		return false
	}
	select {
	case st.out <- msg:
		return true
	default:
		return false
	}
}

// run runs the SubscribeFunc handler on msg and settles it by the result,
// as Watermill's router does with a handler: nil acks, an error nacks, and
// a panic is an error.
func (st *subscription) run(msg *message.Message) {
	defer func() {
		if p := recover(); p != nil {
			st.logMessage(slog.LevelError, "warren: handler panicked", logx.MessageUUID, msg.UUID, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			msg.Nack()
		}
	}()
	if err := st.handler(msg); err != nil {
		if d, why := ack.Get(msg); d == ack.Unset && why == nil {
			// The error is the nack's reason: the failure's log line and
			// process span say what it was, not only "nacked".
			ack.Set(msg, ack.Unset, err)
		}
		msg.Nack()
		return
	}
	msg.Ack()
}

// fail settles a failed message: to the dead-letter exchange after
// MaxAttempts when the queue has one, otherwise back into the queue after a
// backoff, never dropped.
//
// It logs the failure once per message, not once per redelivery: the first
// failure at Info, the dead-lettering (or, without a dead-letter exchange,
// the attempt that reaches MaxAttempts) at Warn, every other redelivery at
// Debug. quiet leaves the log to the caller, which said it already.
func (st *subscription) fail(f *broker.Delivery, msg *message.Message, attempts int, proc *instrument.Process, quiet bool) {
	rd := st.s.cfg.Redelivery
	var uuid string
	var why error = errkind.ErrHandlerNacked
	if msg != nil { // nil for a poison delivery
		uuid = msg.UUID
		if _, err := ack.Get(msg); err != nil {
			why = err
		}
	} else {
		uuid, why = f.MessageId, ErrPoison
	}
	log := func(level slog.Level, text string, extra ...any) {
		if quiet {
			level = slog.LevelDebug
		}
		st.logMessage(level, text, append(logx.Failure(uuid, attempts, why), extra...)...)
	}
	if attempts >= rd.MaxAttempts {
		if st.hasDeadLetter() {
			log(slog.LevelWarn, "warren: message failed too often; rejected to its queue's dead-letter exchange", "max_attempts", rd.MaxAttempts)
			if k := st.attemptKey(f); k != "" {
				st.s.attempts().Delete(k)
			}
			st.settle(f, ack.Reject, proc)
			return
		}
		level := slog.LevelDebug
		if attempts == rd.MaxAttempts {
			level = slog.LevelWarn
		}
		log(level, "warren: message keeps failing and its queue has no dead-letter exchange; redelivered at the capped backoff",
			"max_attempts", rd.MaxAttempts, "retry_in", rd.delay(attempts))
	} else {
		level := slog.LevelDebug
		if attempts <= 1 {
			level = slog.LevelInfo
		}
		log(level, "warren: handler failed; the message is redelivered after a backoff", "retry_in", rd.delay(attempts))
	}
	st.later(f, ack.RejectRequeue, attempts, proc)
}

// logMessage logs a line about one of the subscription's messages, with
// its queue.
func (st *subscription) logMessage(level slog.Level, text string, attrs ...any) {
	if !st.s.log.Enabled(context.Background(), level) {
		return
	}
	st.s.log.Log(context.Background(), level, text, append(attrs, logx.Queue, st.queue)...)
}

// later settles disp after the redelivery backoff of attempts, holding the
// message (and, with MaxInFlight 1, the subscription) meanwhile: a failing
// message never spins. Stopping cuts the wait short.
func (st *subscription) later(f *broker.Delivery, disp ack.Disposition, attempts int, proc *instrument.Process) {
	if k := st.attemptKey(f); k != "" {
		st.s.attempts().Put(k, attempts)
	}
	t := time.NewTimer(st.s.cfg.Redelivery.delay(attempts))
	defer t.Stop()
	select {
	case <-t.C:
	case <-st.stopping.Done():
	case <-f.Gone():
		st.stale()
		return
	}
	st.settle(f, disp, proc)
}

// acked tells an AckObserver marshaler of a delivery acked on its queue.
func (st *subscription) acked(d *broker.Delivery) {
	o := st.s.observer
	if o == nil {
		return
	}
	if err := o.Acked(&d.Delivery); err != nil {
		st.s.log.Warn("warren: the marshaler failed after an ack", logx.Queue, st.queue, logx.MessageUUID, d.MessageId, logx.Error, err, logx.ErrorType, errkind.Type(err))
	}
}

// settle acks, nacks or rejects a delivery on the channel it came on, once
// (broker.Delivery refuses a second settlement: a handler's late Ack
// after Shutdown requeued its message is dropped), or drops the settlement
// when that channel is gone (PITFALLS 4). It reports whether the broker
// was told, or, for an ack held to leave with others of its channel (see
// broker.Delivery), will be within milliseconds.
func (st *subscription) settle(d *broker.Delivery, disp ack.Disposition, proc *instrument.Process) bool {
	var err error
	start := time.Now()
	switch {
	case disp == ack.Ack && st.s.observer != nil:
		err = d.AckNow()
	case disp == ack.Ack:
		err = d.Ack()
	case disp == ack.Requeue:
		err = d.Nack(true)
	case disp == ack.Reject:
		err = d.Reject(false)
	case disp == ack.RejectRequeue:
		err = d.Reject(true)
	}
	switch {
	case err == nil:
		proc.Settle(settleOp(disp), nil, start)
		return true
	case errors.Is(err, broker.ErrAlreadySettled):
	case !d.Settleable() || errors.Is(err, amqp.ErrClosed):
		proc.Settle(settleOp(disp), err, start)
		st.stale()
	default:
		proc.Settle(settleOp(disp), err, start)
		st.stale()
		st.s.log.Warn("warren: settling a delivery failed", logx.Queue, st.queue, "disposition", disp.String(), logx.Error, err, logx.ErrorType, errkind.Type(err))
	}
	return false
}

// stale counts a settlement dropped because its channel is gone.
func (st *subscription) stale() {
	st.s.staleAcks.Add(1)
	instrument.Of(st.s.cfg.Telemetry).StaleSettlement(st.queue)
}

// settleOp names disp for telemetry.
func settleOp(disp ack.Disposition) instrument.SettleOp {
	switch disp {
	case ack.Requeue:
		return instrument.NackRequeue
	case ack.Reject:
		return instrument.Reject
	case ack.RejectRequeue:
		return instrument.RejectRequeue
	}
	return instrument.Ack
}
