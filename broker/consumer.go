package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren/conn"
	"github.com/warrenmq/warren/internal/connx"
	"github.com/warrenmq/warren/internal/latch"
	"github.com/warrenmq/warren/retry"
	"github.com/warrenmq/warren/topology"
)

// ConsumerEventKind says what happened to a consumer.
type ConsumerEventKind int

const (
	// ConsumerInterrupted: the consumer stopped receiving: the broker
	// cancelled it (its queue deleted, a quorum leader moving), its channel
	// was closed, or its connection was lost. It is coming back.
	ConsumerInterrupted ConsumerEventKind = iota + 1
	// ConsumerWaiting: an attempt to consume again failed (Err says why;
	// a queue warren did not declare and that does not exist yet, say); it
	// tries again with backoff.
	ConsumerWaiting
	// ConsumerQueueRedeclared: its queue was gone and was declared again
	// from the registered spec, with its registered bindings.
	ConsumerQueueRedeclared
	// ConsumerResumed: consuming again.
	ConsumerResumed
	// ConsumerEnded: the consumer ended without Stop, because its owner
	// ended what it runs on: the connection was closed, or (NoRestore) lost.
	// Err says which.
	ConsumerEnded
	// ConsumerPaused: its owner paused it (Pause): it takes nothing until
	// Resume, then ConsumerResumed.
	ConsumerPaused
)

var consumerEventNames = [...]string{"", "interrupted", "waiting", "queue-redeclared", "resumed", "ended", "paused"}

func (k ConsumerEventKind) String() string {
	if k > 0 && int(k) < len(consumerEventNames) {
		return consumerEventNames[k]
	}
	return fmt.Sprintf("consumer-event(%d)", int(k))
}

// ConsumerEvent is one thing that happened to a consumer, for
// ConsumerSpec.OnEvent.
type ConsumerEvent struct {
	Kind  ConsumerEventKind
	Tag   string
	Queue string
	// Err is why it was interrupted or why an attempt failed.
	Err error
	// Attempt counts the attempts to consume again since the interruption.
	Attempt int
	// Gap is how long it has not been consuming (Resumed, Waiting).
	Gap time.Duration
}

// restoreGrace is how long a consumer whose connection was lost waits, once
// connected again, for the registry's restore to hand it a subscription
// before it subscribes by itself (its restore failed: a queue not yet
// recovered after a broker restart, say). A variable for the tests only.
var restoreGrace = time.Second

// Consumer is a running consumer started by Ops.Consume. It ends only when
// its owner ends it: Stop, DeleteQueue of its queue through Ops, Close of the
// Ops that started it, Close of the connection, or, for a consumer started
// with NoRestore, the loss of its connection. Whatever else happens to it
// (the broker cancels it because its queue was deleted or a quorum leader
// moved, its channel is closed by an error, its connection is lost) it comes
// back by itself (PITFALLS 12): it declares its queue again from the
// registered spec when the queue is gone, waits with backoff for a queue
// warren did not declare, and resubscribes. Consuming reports the gaps and
// ConsumerSpec.OnEvent is told of each.
type Consumer struct {
	ops     *Ops
	reg     *Registry
	spec    ConsumerSpec
	restore bool
	log     *slog.Logger
	// stream: the queue is a stream, whose deliveries are never nacked or
	// rejected (see Delivery).
	stream bool
	// hold is how many of its acks may be held back (holdLimit).
	hold int

	handlerCtx context.Context
	cancel     context.CancelFunc
	// handoff holds a subscription the restore run made (buffered, one),
	// made by the first hand-off or recovery (handoffCh, under mu).
	// stopping is set when Stop begins; ended when the loop has returned.
	// Latches and lazy channels: an idle consumer, what most of them are
	// most of the time, holds no channel it does not wait on (issue 33:
	// heap per Subscriber).
	handoff  chan *subscription
	stopping latch.Latch
	ended    latch.Latch
	// halt is closed by Pause or Stop (under mu), whichever comes first:
	// the loop hands out nothing more, and parks (paused) or returns
	// (stopped); a recovery in progress wakes. Resume makes a new one. One
	// channel for both, so that the loop's wait for a delivery watches two
	// channels, not three: every idle consumer holds a waiter per channel
	// watched (issue 33: heap per Subscriber). parked is closed by the loop
	// once it has parked; resumed is closed by Resume. Pause makes a new
	// parked and resumed each time.
	halt, parked, resumed chan struct{}
	// consumingAgain is closed once a resumed consumer consumes (Resume
	// waits for it).
	consumingAgain chan struct{}
	// pauseDeadline bounds the loop's giving back of what the broker sent
	// and nobody got when it pauses: Pause's ctx's deadline (none: zero).
	pauseDeadline time.Time

	// subMu serialises subscribing, so the restore run and the consumer's
	// own recovery never both subscribe.
	subMu sync.Mutex

	// prev, next and listed link the consumer into its Ops' list (under
	// the Ops' lock).
	prev, next *Consumer
	listed     bool

	mu        sync.Mutex
	subCancel context.CancelFunc // ends a self-subscription in progress (Stop)
	cur       *subscription      // owned: whoever takes it releases it
	live      bool
	stopped   bool
	paused    bool
	deleting  bool
	err       error
}

// Tag is the consumer tag (generated when the spec had none).
func (c *Consumer) Tag() string { return c.spec.Tag }

// Done is closed when the consumer has ended.
func (c *Consumer) Done() <-chan struct{} { return c.ended.Done() }

// Err is why the consumer ended (wrapping ErrConsumerStopped), nil while it
// runs.
func (c *Consumer) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Consuming reports whether the consumer has a live subscription now
// (false while it comes back from an interruption, and once it ended).
func (c *Consumer) Consuming() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.live && !c.stopped
}

// Consume starts a consumer (validated first). Its Tag stays the same across
// reconnects and interruptions. The queue must exist (conn.ErrNotFound
// otherwise); a queue warren declared is declared again when it went
// missing. With restore (the default) the consumer is recorded and
// resubscribed after every reconnect; with NoRestore it ends when the
// connection is lost. A tag in use by another consumer of the connection is
// refused with ErrConflict.
func (o *Ops) Consume(ctx context.Context, s ConsumerSpec, opts ...Option) (*Consumer, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	c, err := o.newConsumer(s, collect(opts))
	if err != nil {
		return nil, err
	}
	ctx, cancel := o.bounded(ctx)
	defer cancel()
	if _, err := c.ensureQueue(ctx, false); err != nil {
		c.discard()
		return nil, err
	}
	sub, err := c.subscribe(ctx)
	if err != nil {
		c.discard()
		return nil, err
	}
	if err := c.start(sub); err != nil {
		return nil, err
	}
	return c, nil
}

// ConsumeAll starts consumers together: the basic.consume calls go out
// pipelined per consumer channel, which starts thousands of consumers in
// the time of a few round trips. It returns them in the order of specs, or
// the first error (every spec is validated first; the consumers started
// before an error are stopped).
func (o *Ops) ConsumeAll(ctx context.Context, specs []ConsumerSpec, opts ...Option) ([]*Consumer, error) {
	op := collect(opts)
	cs := make([]*Consumer, 0, len(specs))
	fail := func(err error) ([]*Consumer, error) {
		for _, c := range cs {
			c.discard()
		}
		return nil, err
	}
	tags := make(map[string]bool, len(specs))
	for _, s := range specs {
		if s.Tag != "" {
			if tags[s.Tag] {
				// Two consumers with one tag on one channel is a
				// connection error (530): refused before the network.
				return fail(tagConflict(s))
			}
			tags[s.Tag] = true
		}
		c, err := o.newConsumer(s, op)
		if err != nil {
			return fail(err)
		}
		cs = append(cs, c)
		if !c.queueTrusted(ctx) {
			qctx, cancel := o.bounded(ctx)
			_, err := c.ensureQueue(qctx, false)
			cancel()
			if err != nil {
				return fail(err)
			}
		}
	}
	specs = make([]ConsumerSpec, len(cs))
	for i, c := range cs {
		specs[i] = c.spec
	}
	subs := o.reg.channels.subscribeMany(ctx, specs)
	started := make([]*Consumer, 0, len(cs))
	for i, c := range cs {
		sub := subs[i]
		if sub == nil {
			sctx, cancel := o.bounded(ctx)
			var err error
			sub, err = c.subscribe(sctx)
			cancel()
			if err != nil {
				for _, rest := range cs[i:] {
					rest.discard()
				}
				for j := i + 1; j < len(cs); j++ {
					if subs[j] != nil {
						o.reg.channels.release(subs[j].channel, subs[j].tag)
					}
				}
				return started, err
			}
		}
		if err := c.start(sub); err != nil {
			for j := i + 1; j < len(cs); j++ {
				cs[j].discard()
				if subs[j] != nil {
					o.reg.channels.release(subs[j].channel, subs[j].tag)
				}
			}
			return started, err
		}
		started = append(started, c)
	}
	return started, nil
}

// newConsumer makes a consumer that does not run yet (start runs it); a
// tag another consumer of the connection uses is refused.
func (o *Ops) newConsumer(s ConsumerSpec, op options) (*Consumer, error) {
	if s.Tag == "" {
		s.Tag = generatedTag()
	}
	if cur, ok := o.reg.consumerWithTag(s.Tag); ok && cur != nil {
		return nil, tagConflict(s)
	}
	hctx, cancel := context.WithCancel(context.Background())
	q, _ := o.reg.queueSpec(s.Queue)
	stream := s.StreamOffset != nil || q.Args.Type == topology.Stream
	return &Consumer{
		ops: o, reg: o.reg, spec: s, restore: !op.noRestore, log: o.cfg.Logger,
		stream: stream, hold: holdLimit(s, stream),
		handlerCtx: hctx, cancel: cancel,
		halt: make(chan struct{}),
	}, nil
}

func tagConflict(s ConsumerSpec) error {
	return &ConflictError{Entity: s.String(), Field: "Tag", Registered: fmt.Sprintf("%q (another consumer)", s.Tag), Requested: fmt.Sprintf("%q", s.Tag)}
}

// discard drops a consumer that never started.
func (c *Consumer) discard() { c.cancel() }

// start records the consumer and runs its loop on sub; on failure it
// releases sub.
func (c *Consumer) start(sub *subscription) error {
	o := c.ops
	c.cur, c.live = sub, true
	fail := func(err error) error {
		c.releaseCurrent()
		c.discard()
		return err
	}
	if c.restore && !o.reg.putConsumer(c) {
		return fail(tagConflict(c.spec))
	}
	o.mu.Lock()
	if o.closed {
		o.mu.Unlock()
		o.reg.forgetConsumer(c)
		return fail(&OperationError{Op: "consume", Entity: c.spec.String(), Reason: "Ops closed", Err: ErrConsumerStopped})
	}
	o.consumers.push(c)
	o.mu.Unlock()
	if !o.group.GoAs("consumer", c.spec.Tag, func() { c.run(sub) }) {
		o.forget(c)
		o.reg.forgetConsumer(c)
		return fail(&OperationError{Op: "consume", Entity: c.spec.String(), Reason: "Ops closed", Err: ErrConsumerStopped})
	}
	return nil
}

func (r *Registry) consumerWithTag(tag string) (*Consumer, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.consumers.get(tag)
}

// Stop cancels the subscription (no new deliveries), lets the handler
// finish the deliveries in hand (until ctx ends; then its ctx is
// cancelled, and Stop still waits for them, since their settlements need
// the channel), requeues what the broker had already sent but the
// handler never got, releases the consumer's channel (rmqaio's stop_consume
// leaked it) and forgets the consumer. It is the one way a consumer's owner
// stops it (deleting its queue through Ops and closing the Ops stop it
// too). Idempotent. A nil Consumer (a Consume that failed) has nothing to
// stop: an *OperationError.
func (c *Consumer) Stop(ctx context.Context) error {
	if c == nil {
		return &OperationError{Op: "stop", Entity: "consumer", Reason: "nil consumer", Err: topology.ErrInvalidSpec}
	}
	return c.stop(ctx)
}

// queueTrusted reports a queue the registry declared on the current
// connection and that cannot vanish by itself: a consume of it needs no
// check first.
func (c *Consumer) queueTrusted(ctx context.Context) bool {
	s, ok := c.reg.queueSpec(c.spec.Queue)
	return ok && !s.ReadOnly && !s.AutoDelete && c.reg.queueDeclaredNow(ctx, c.spec.Queue)
}

// handOff gives the consumer's loop a subscription made by the restore run,
// replacing an unclaimed older one.
func (c *Consumer) handOff(sub *subscription) {
	c.subMu.Lock()
	defer c.subMu.Unlock()
	c.give(sub)
}

// give puts sub in the handoff slot (under subMu), replacing an unclaimed
// older one, or releases it when the consumer has stopped or ended: a
// restore run that raced Stop must not leave a live basic.consume nobody
// reads (on a single-active-consumer queue it would hold the queue for
// good). Stop and end mark the consumer under mu and drain the slot last,
// so a subscription given before that is drained and one given after is
// released here.
func (c *Consumer) give(sub *subscription) {
	handoff := c.handoffCh(true)
	select {
	case old := <-handoff:
		c.reg.channels.release(old.channel, old.tag)
	default:
	}
	c.mu.Lock()
	if c.stopped || c.paused || c.err != nil {
		c.mu.Unlock()
		c.reg.channels.release(sub.channel, sub.tag)
		return
	}
	handoff <- sub
	c.mu.Unlock()
}

// handoffCh is the handoff slot; nil when none was made and create is false
// (a receive from it in a select with a default finds nothing).
func (c *Consumer) handoffCh(create bool) chan *subscription {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.handoff == nil && create {
		c.handoff = make(chan *subscription, 1)
	}
	return c.handoff
}

// ensureQueue makes sure the queue is there before a basic.consume on a
// shared channel (a 404 there would close the channel of every consumer on
// it). A registered queue declared on this connection is trusted unless
// check; a missing registered queue is declared again from its spec.
func (c *Consumer) ensureQueue(ctx context.Context, check bool) (redeclared bool, err error) {
	q := c.spec.Queue
	// An auto-delete queue can vanish between its declaration and the
	// consume (PITFALLS 10): always checked.
	if !check && c.queueTrusted(ctx) {
		return false, nil
	}
	_, err = c.reg.inspect(ctx, q)
	if err == nil || !errors.Is(err, conn.ErrNotFound) {
		return false, err
	}
	c.reg.queueMissing(q)
	ok, rerr := c.reg.redeclareQueue(ctx, q)
	if !ok {
		return false, err
	}
	return rerr == nil, rerr
}

func (r *Registry) queueDeclaredNow(ctx context.Context, name string) bool {
	gen := connx.GenerationFor(r.conn, ctx)
	r.mu.Lock()
	defer r.mu.Unlock()
	rec, ok := r.queues.get(name)
	return ok && gen != 0 && rec.gen == gen
}

func (c *Consumer) subscribe(ctx context.Context) (*subscription, error) {
	sub, err := c.reg.channels.subscribe(ctx, c.spec)
	if err != nil {
		return nil, channelError("consume", c.spec.String(), err)
	}
	return sub, nil
}

// resubscribe is the consumer's part of a restore run: subscribe on the new
// connection (ctx is bound to it) and hand the subscription over.
func (c *Consumer) resubscribe(ctx context.Context) error {
	if c.isStopped() || c.Paused() {
		return nil
	}
	c.subMu.Lock()
	defer c.subMu.Unlock()
	if _, err := c.ensureQueue(ctx, false); err != nil {
		return err
	}
	sub, err := c.subscribe(ctx)
	if err != nil {
		return err
	}
	c.give(sub)
	return nil
}

func (c *Consumer) run(sub *subscription) {
	defer c.ended.Set()
	defer c.cancel()
	defer c.ops.forget(c)
	for {
		halted := c.dispatch(sub)
		if c.isStopped() {
			return // stop releases the subscription
		}
		if halted { // and not stopped: paused
			// Even when Resume came already: the subscription was
			// cancelled, and what it held goes back first.
			parked, resumed := c.pauseState()
			c.giveBack(sub)
			close(parked)
			if next := c.awaitResume(resumed); next != nil {
				sub = next
				continue
			}
			return
		}
		cause, connLost := interruption(sub)
		c.mu.Lock()
		c.live = false
		c.mu.Unlock()
		c.releaseCurrent()
		since := time.Now()
		c.event(ConsumerEvent{Kind: ConsumerInterrupted, Err: cause})
		if connLost && !c.restore {
			c.end(fmt.Errorf("connection lost and the consumer is not restored: %w", cause))
			return
		}
		next, err := c.recover(connLost, since)
		if errors.Is(err, errPaused) {
			// Paused while it was coming back: it has no subscription to
			// give back; it parks at once.
			parked, resumed := c.pauseState()
			close(parked)
			if next = c.awaitResume(resumed); next == nil {
				return
			}
			sub = next
			continue
		}
		if next == nil {
			c.end(err)
			return
		}
		c.mu.Lock()
		if c.stopped {
			c.mu.Unlock()
			c.reg.channels.release(next.channel, next.tag)
			return
		}
		c.cur, c.live = next, true
		c.mu.Unlock()
		c.event(ConsumerEvent{Kind: ConsumerResumed, Gap: time.Since(since)})
		sub = next
	}
}

// interruption says why a subscription's deliveries ended while nobody
// stopped it.
func interruption(sub *subscription) (error, bool) {
	ch := sub.channel.ch
	switch {
	case connx.ConnectionLost(ch):
		if err := ch.Err(); err != nil {
			return fmt.Errorf("connection lost: %w", err), true
		}
		return errors.New("connection lost"), true
	case !ch.IsOpen():
		<-ch.Done()
		if err := ch.Err(); err != nil {
			return fmt.Errorf("channel closed: %w", err), false
		}
		return errors.New("channel closed"), false
	}
	return errors.New("cancelled by the broker (queue deleted, or its leader moved)"), false
}

// dispatch returns when the subscription's deliveries end or the consumer
// is halted; halted reports the latter (run tells a Stop from a Pause by
// the consumer's state). With Handlers above 1 it returns once every
// reader it started has finished its delivery in hand.
func (c *Consumer) dispatch(sub *subscription) (halted bool) {
	halt := c.haltCh()
	if c.spec.Handlers <= 1 {
		c.take(sub, halt, nil)
	} else {
		r := &readers{limit: int32(c.spec.Handlers)}
		r.running.Store(1) // this goroutine
		c.take(sub, halt, r)
		r.wg.Wait()
	}
	select {
	case <-halt:
		return true // stopping or pausing (a basic.cancel also ends msgs)
	default:
		return false
	}
}

// readers are the goroutines of one subscription that take its deliveries
// and run the handler on them (ConsumerSpec.Handlers above 1): the
// consumer's own and those it started, at most limit in all. They end with
// the subscription; the next one starts its own.
type readers struct {
	limit   int32
	running atomic.Int32 // the consumer's goroutine included
	waiting atomic.Int32 // parked for a delivery
	wg      sync.WaitGroup
}

// more starts another reader, unless limit run already: called by a reader
// that took a delivery while none was parked for the next one.
func (c *Consumer) more(sub *subscription, halt <-chan struct{}, r *readers) {
	for {
		n := r.running.Load()
		if n >= r.limit {
			return
		}
		if r.running.CompareAndSwap(n, n+1) {
			break
		}
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		c.take(sub, halt, r)
	}()
}

// take runs the handler on the subscription's deliveries until they end or
// the consumer is halted: the consumer's loop, and with Handlers above 1
// each reader's (r is nil for the single loop).
func (c *Consumer) take(sub *subscription, halt <-chan struct{}, r *readers) {
	for {
		var (
			d  amqp.Delivery
			ok bool
		)
		// A delivery is most often waiting already (the broker keeps the
		// prefetch window full): take it without the blocking select,
		// which locks and queues a waiter on both channels even when one
		// is ready (selects were the largest part of what a consumed
		// message cost over raw amqp091-go, counted in instructions).
		// Another reader is wanted when this one takes a delivery and
		// none is parked for the next: a delivery that was waiting means
		// every reader is busy (one parked would have been handed it).
		another := false
		select {
		case d, ok = <-sub.msgs:
			another = r != nil && r.waiting.Load() == 0
		default:
			if r != nil {
				r.waiting.Add(1)
			}
			select {
			case d, ok = <-sub.msgs:
			case <-halt:
				if r != nil {
					r.waiting.Add(-1)
				}
				return
			}
			another = r != nil && r.waiting.Add(-1) == 0
		}
		if !ok {
			return // the subscription ended (a basic.cancel of Pause or Stop, or an interruption)
		}
		select {
		case <-halt:
			// Stopping or pausing: never hand out more. Stop requeues
			// it (a Pause also the rest after it, in the order the
			// broker sent them), or, for an ordered hand-over, the
			// closing of the channel returns it (a requeue now would
			// come back to this consumer, still the active one).
			if !c.spec.OrderedHandOver {
				c.requeue(sub, &d)
			}
			return
		default:
		}
		if another {
			c.more(sub, halt, r)
		}
		if c.spec.AutoAck {
			// Its tag is settled already: the channel's other consumers'
			// acks may pass it (see ackBatch).
			sub.channel.acks.sent(d.DeliveryTag)
		}
		c.spec.Handler(c.handlerCtx, &Delivery{Delivery: d, ch: sub.channel.ch, acks: &sub.channel.acks, hold: c.hold, stream: c.stream})
	}
}

// consumerRecoveryBackoff paces a consumer's attempts to come back by
// itself (its queue gone and not yet back, a channel that will not open):
// quickly at first, then every 5s, for as long as it takes.
var consumerRecoveryBackoff = retry.Backoff{InitialInterval: 50 * time.Millisecond, Multiplier: 1.5, RandomizationFactor: 0.5, MaxInterval: 5 * time.Second}

// recover gets the consumer a new subscription after an interruption: from
// the restore run after a reconnect, or by subscribing itself (declaring its
// queue again if it was registered and is gone), with backoff, for as long
// as it takes. nil when the consumer ends instead (stopped: nil error).
func (c *Consumer) recover(connLost bool, since time.Time) (*subscription, error) {
	// The backoff is made at the first failed attempt: after a cut, nearly
	// every consumer is handed its subscription by the restore run, and
	// 10,000 backoffs made for nothing were 1.5% of the client's CPU in a
	// restore (MEASUREMENTS.md, "A twenty-eighth pass").
	var b backoff.BackOff
	nextWait := func() time.Duration {
		if b == nil {
			b = consumerRecoveryBackoff.BackOff()
		}
		return b.NextBackOff()
	}
	wait := time.Duration(0)
	if connLost {
		wait = restoreGrace
	}
	// untilConnected: the connection (and its restore run) is not back yet;
	// the wait is for it, not for a timer. A restore of thousands of
	// consumers outlasts their grace, and each of them polling until it
	// ends cost the client's CPU, which the broker doing the restore
	// needed (issue 33: restore at N=10,000).
	untilConnected := false
	// halt, taken before the first look at Paused: a Pause or Stop after
	// that look closes it and wakes the wait below. One channel for both,
	// as in the loop's wait for a delivery: every consumer waits here after
	// a cut, and each channel a select watches costs it a lock and a waiter
	// (issue 33: restore at N=10,000).
	halt, handoff := c.haltCh(), c.handoffCh(true)
	for attempt := 1; ; attempt++ {
		var timeUp <-chan time.Time
		var connected <-chan struct{}
		stop := func() bool { return false }
		if untilConnected {
			connected = connx.Connected(c.ops.conn)
		} else {
			t := time.NewTimer(wait)
			timeUp, stop = t.C, t.Stop
		}
		if c.Paused() {
			stop()
			return nil, errPaused
		}
		select {
		case s := <-handoff:
			stop()
			return s, nil
		case <-halt:
			stop()
			switch {
			case c.isStopped():
				return nil, nil
			case c.Paused():
				return nil, errPaused
			}
			// Paused and resumed since: watch the new halt.
			halt = c.haltCh()
			continue
		case <-c.ops.conn.Done():
			stop()
			return nil, conn.ErrClosed
		case <-timeUp:
		case <-connected:
		}
		c.mu.Lock()
		deleting := c.deleting
		c.mu.Unlock()
		if deleting {
			// Its queue is being deleted through Ops: its owner is ending
			// it; never declare the queue again meanwhile.
			untilConnected, wait = false, nextWait()
			continue
		}
		if c.ops.conn.Generation() == 0 {
			// The restore run comes first: it hands a subscription over,
			// or its end lets this consumer subscribe by itself.
			untilConnected = true
			continue
		}
		untilConnected = false
		s, redeclared, err := c.selfSubscribe()
		if redeclared {
			c.event(ConsumerEvent{Kind: ConsumerQueueRedeclared, Attempt: attempt, Gap: time.Since(since)})
		}
		if s != nil {
			return s, nil
		}
		if err != nil {
			c.event(ConsumerEvent{Kind: ConsumerWaiting, Err: err, Attempt: attempt, Gap: time.Since(since)})
		}
		wait = nextWait()
	}
}

// selfSubscribe subscribes on the current connection unless the restore run
// already did (its subscription is then waiting in handoff). It returns
// nothing while not connected: the restore run comes first.
func (c *Consumer) selfSubscribe() (*subscription, bool, error) {
	if c.ops.conn.Generation() == 0 {
		return nil, false, nil
	}
	c.subMu.Lock()
	defer c.subMu.Unlock()
	select {
	case s := <-c.handoffCh(false):
		return s, false, nil
	default:
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.ops.cfg.Timeout)
	defer cancel()
	c.mu.Lock()
	if c.stopped {
		c.mu.Unlock()
		return nil, false, nil
	}
	c.subCancel = cancel // Stop ends it
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.subCancel = nil
		c.mu.Unlock()
	}()
	redeclared, err := c.ensureQueue(ctx, true)
	if err != nil {
		return nil, redeclared, err
	}
	sub, err := c.subscribe(ctx)
	return sub, redeclared, err
}

func (c *Consumer) event(e ConsumerEvent) {
	e.Tag, e.Queue = c.spec.Tag, c.spec.Queue
	level, msg := slog.LevelWarn, "broker: consumer not consuming"
	switch e.Kind {
	case ConsumerResumed:
		level, msg = slog.LevelInfo, "broker: consumer resumed"
	case ConsumerEnded:
		msg = "broker: consumer ended"
	}
	// The attributes are made only for a logger that keeps the record: a
	// cut makes every consumer report twice (not consuming, then resumed),
	// and with 10,000 of them, boxing each one's attributes for a silent
	// logger (the default) was 4% of the client's CPU during the restore
	// (MEASUREMENTS.md, "A twenty-seventh pass").
	if ctx := context.Background(); c.log.Enabled(ctx, level) {
		args := []any{"consumer", e.Tag, "queue", e.Queue, "event", e.Kind.String(), "attempt", e.Attempt, "gap", e.Gap}
		if e.Err != nil {
			args = append(args, "error", e.Err)
		}
		c.log.Log(ctx, level, msg, args...)
	}
	if c.spec.OnEvent != nil {
		func() {
			defer func() {
				if p := recover(); p != nil {
					c.log.Error("broker: consumer OnEvent panicked", "consumer", e.Tag, "panic", p)
				}
			}()
			c.spec.OnEvent(e)
		}()
	}
}

func (c *Consumer) isStopped() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stopped
}

func (c *Consumer) markDeleting() {
	c.mu.Lock()
	c.deleting = true
	c.mu.Unlock()
}

func (c *Consumer) unmarkDeleting() {
	c.mu.Lock()
	c.deleting = false
	c.mu.Unlock()
}

// releaseCurrent gives the current subscription's place back.
func (c *Consumer) releaseCurrent() {
	c.mu.Lock()
	sub := c.cur
	c.cur = nil
	c.mu.Unlock()
	if sub != nil {
		c.reg.channels.release(sub.channel, sub.tag)
	}
}

// requeue returns a delivery the handler never got to the queue, on a
// channel other consumers may still use (so it is not requeued by the
// channel closing).
// d is taken by pointer, which does not make it escape (go build
// -gcflags=-m: its content leaks, not d): by value, the loop's frame held
// a 300-byte copy for the call, and an idle consumer parks in that frame.
// With it, the idle stack used just over a quarter of 8 KiB, which the
// runtime's shrinking at each collection leaves at 8 KiB instead of
// halving it: 2.3-2.7 KiB more stack per idle Subscriber (the scale bench's
// RSS row, MEASUREMENTS.md's seventeenth pass).
func (c *Consumer) requeue(sub *subscription, d *amqp.Delivery) {
	if c.spec.AutoAck || !sub.channel.ch.IsOpen() {
		return
	}
	var err error
	if c.stream {
		err = d.Ack(false) // credit only; a stream never requeues (see Delivery)
	} else {
		err = d.Nack(false, true)
	}
	sub.channel.acks.sent(d.DeliveryTag)
	if err != nil {
		c.log.Debug("broker: requeue of an undelivered message failed", "consumer", c.spec.Tag, "tag", d.DeliveryTag, "error", err)
	}
}

// end records why the consumer ended, forgets it and releases a handed-over
// subscription nobody will use. An end with a cause (not a Stop) is told to
// OnEvent.
func (c *Consumer) end(err error) {
	c.mu.Lock()
	if err == nil {
		c.err = ErrConsumerStopped
	} else {
		c.err = fmt.Errorf("%w: %w", ErrConsumerStopped, err)
	}
	cause := c.err
	stopped := c.stopped
	c.mu.Unlock()
	c.reg.forgetConsumer(c)
	c.dropHandoff()
	if err != nil && !stopped {
		c.event(ConsumerEvent{Kind: ConsumerEnded, Err: cause})
	}
}

func (c *Consumer) dropHandoff() {
	handoff := c.handoffCh(false)
	for {
		select {
		case s := <-handoff:
			c.reg.channels.release(s.channel, s.tag)
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
		case <-c.ended.Done():
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	c.stopped = true
	if !c.paused { // a paused consumer's halt is closed already
		close(c.halt)
	}
	sub := c.cur
	if c.subCancel != nil {
		c.subCancel()
	}
	c.mu.Unlock()
	// Hand out nothing more, and ask the broker to send nothing more; the
	// deliveries in hand are finished and settled on their channel before
	// the channel is released. An ordered hand-over sends no basic.cancel: the
	// closing of its channel, below, ends the consumer.
	c.stopping.Set()
	if sub != nil && sub.channel.ch.IsOpen() && !c.spec.OrderedHandOver {
		if err := sub.channel.ch.Cancel(ctx, c.spec.Tag, false); err != nil {
			c.log.Debug("broker: basic.cancel failed", "consumer", c.spec.Tag, "error", err)
		}
	}
	var err error
	select {
	case <-c.ended.Done():
	case <-ctx.Done():
		c.cancel()
		err = ctx.Err()
		<-c.ended.Done()
	}
	c.mu.Lock()
	sub = c.cur
	c.cur = nil
	c.live = false
	if c.err == nil {
		c.err = ErrConsumerStopped
	}
	c.mu.Unlock()
	if sub != nil {
		if !c.spec.OrderedHandOver {
			c.requeueRest(ctx, sub)
		}
		// An ordered hand-over's channel is its own: releasing it closes
		// it, after the settlement of the delivery in hand, and the broker
		// returns what the consumer still held before it activates the
		// next consumer (PITFALLS 33).
		c.reg.channels.release(sub.channel, sub.tag)
	}
	c.reg.forgetConsumer(c)
	c.dropHandoff()
	return err
}

// requeueRest requeues what the broker sent before its cancel-ok and the
// handler never got; amqp091 closes the delivery channel once they are out.
func (c *Consumer) requeueRest(ctx context.Context, sub *subscription) {
	for {
		select {
		case d, ok := <-sub.msgs:
			if !ok {
				return
			}
			c.requeue(sub, &d)
		case <-sub.channel.ch.Done():
			return
		case <-ctx.Done():
			// The cancel never completed: close the channel, the only other
			// way to give the messages back (its other consumers come back).
			connx.Go(c.ops.conn, func() { _ = sub.channel.ch.Close() })
			return
		}
	}
}

// forget drops a finished consumer from its Ops.
func (o *Ops) forget(c *Consumer) {
	o.mu.Lock()
	o.consumers.remove(c)
	o.mu.Unlock()
}

// consumerList is an Ops' consumers, linked through the consumers
// themselves: adding and removing cost no allocation and O(1), however many
// an Ops holds (a Subscriber's usually one, a big Apply's thousands).
type consumerList struct{ head *Consumer }

func (l *consumerList) push(c *Consumer) {
	c.next, c.prev = l.head, nil
	if l.head != nil {
		l.head.prev = c
	}
	l.head = c
	c.listed = true
}

func (l *consumerList) remove(c *Consumer) {
	if !c.listed {
		return
	}
	if c.prev != nil {
		c.prev.next = c.next
	} else {
		l.head = c.next
	}
	if c.next != nil {
		c.next.prev = c.prev
	}
	c.prev, c.next, c.listed = nil, nil, false
}

func (l *consumerList) all() []*Consumer {
	var out []*Consumer
	for c := l.head; c != nil; c = c.next {
		out = append(out, c)
	}
	return out
}

// errPaused ends a recovery that a Pause overtook.
var errPaused = errors.New("broker: consumer paused")

// haltCh is the channel the next Pause or Stop closes.
func (c *Consumer) haltCh() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.halt
}

// pauseState is the current pause's channels: parked, which the loop
// closes once it has parked, and resumed, which Resume closes.
func (c *Consumer) pauseState() (parked, resumed chan struct{}) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.parked, c.resumed
}

// Paused reports whether the consumer is paused (Pause, until Resume).
func (c *Consumer) Paused() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.paused
}

// Pause stops the consumer's deliveries until Resume, without ending it.
// AMQP 0-9-1 cannot pause a consumer, so Pause cancels its subscription
// (basic.cancel), lets the deliveries in hand finish (Pause returns an
// error when ctx ends first; the consumer pauses once they do), gives back
// what the broker had sent and nobody got, in the order it came, and
// releases the subscription's place on its channel. An ordered hand-over
// (single-active consumer) closes its channel instead, so that the broker
// returns what it held, in order, before it activates another consumer.
// While paused the consumer is not restored after a reconnect, and
// Consuming is false. Idempotent; a stopped consumer cannot be paused
// (ErrConsumerStopped).
func (c *Consumer) Pause(ctx context.Context) error {
	if c == nil {
		return &OperationError{Op: "pause", Entity: "consumer", Reason: "nil consumer", Err: topology.ErrInvalidSpec}
	}
	c.mu.Lock()
	if c.stopped || c.err != nil {
		c.mu.Unlock()
		return &OperationError{Op: "pause", Entity: c.spec.String(), Reason: "stopped", Err: ErrConsumerStopped}
	}
	if c.paused {
		c.mu.Unlock()
		return nil
	}
	c.paused = true
	c.parked, c.resumed = make(chan struct{}), make(chan struct{})
	c.consumingAgain = make(chan struct{})
	close(c.halt)
	sub, parked := c.cur, c.parked
	c.pauseDeadline, _ = ctx.Deadline()
	c.mu.Unlock()
	if sub != nil && sub.channel.ch.IsOpen() && !c.spec.OrderedHandOver {
		if err := sub.channel.ch.Cancel(ctx, c.spec.Tag, false); err != nil {
			c.log.Debug("broker: basic.cancel failed", "consumer", c.spec.Tag, "error", err)
		}
	}
	// The loop leaves its subscription (after the deliveries in hand), gives
	// back the rest and parks; a loop that is recovering from an
	// interruption parks at once. When ctx ends first the loop goes on
	// with it.
	select {
	case <-parked:
		return nil
	case <-c.ended.Done():
		return c.Err()
	case <-ctx.Done():
		return fmt.Errorf("broker: pause %s: the messages in hand did not finish in time (the consumer still pauses once they do): %w", c.spec, ctx.Err())
	}
}

// giveBack is the loop's part of a pause, once the deliveries in hand are
// finished: give back what the broker sent and nobody got, in order, and
// release the subscription.
func (c *Consumer) giveBack(sub *subscription) {
	c.mu.Lock()
	deadline := c.pauseDeadline
	c.mu.Unlock()
	ctx, cancel := context.WithCancel(context.Background())
	if !deadline.IsZero() {
		cancel()
		ctx, cancel = context.WithDeadline(context.Background(), deadline)
	}
	defer cancel()
	c.mu.Lock()
	c.cur, c.live = nil, false
	c.mu.Unlock()
	if !c.spec.OrderedHandOver {
		c.requeueRest(ctx, sub)
	}
	c.reg.channels.release(sub.channel, sub.tag)
	if c.spec.OrderedHandOver {
		// Its own channel closes: the broker takes back what it held once
		// the close is done.
		select {
		case <-sub.channel.ch.Done():
		case <-ctx.Done():
		}
	}
	c.dropHandoff()
	c.event(ConsumerEvent{Kind: ConsumerPaused})
}

// Resume consumes again after Pause (subscribing anew, with the backoff
// of any recovery when the queue or the connection is not there yet) and
// returns once it does, or when ctx ends (it goes on trying). A consumer
// that is not paused is left as it is.
func (c *Consumer) Resume(ctx context.Context) error {
	if c == nil {
		return &OperationError{Op: "resume", Entity: "consumer", Reason: "nil consumer", Err: topology.ErrInvalidSpec}
	}
	c.mu.Lock()
	if c.stopped || c.err != nil {
		c.mu.Unlock()
		return &OperationError{Op: "resume", Entity: c.spec.String(), Reason: "stopped", Err: ErrConsumerStopped}
	}
	if !c.paused {
		c.mu.Unlock()
		return nil
	}
	c.paused = false
	c.halt = make(chan struct{})
	resumed, consuming := c.resumed, c.consumingAgain
	c.mu.Unlock()
	close(resumed)
	select {
	case <-consuming:
		return nil
	case <-c.ended.Done():
		return c.Err()
	case <-ctx.Done():
		return ctx.Err()
	}
}

// awaitResume parks the loop of a paused consumer until Resume (a new
// subscription) or Stop (nil).
func (c *Consumer) awaitResume(resumed chan struct{}) *subscription {
	var next *subscription
	var since time.Time
	for next == nil {
		select {
		case <-resumed:
		case <-c.stopping.Done():
			return nil
		case <-c.ops.conn.Done():
			c.end(conn.ErrClosed)
			return nil
		}
		since = time.Now()
		var err error
		next, err = c.recover(false, since)
		if errors.Is(err, errPaused) {
			// Paused again before it consumed: park again.
			parked, again := c.pauseState()
			close(parked)
			resumed = again
			continue
		}
		if next == nil {
			if err != nil {
				c.end(err)
			}
			return nil
		}
	}
	c.mu.Lock()
	if c.stopped {
		c.mu.Unlock()
		c.reg.channels.release(next.channel, next.tag)
		return nil
	}
	c.cur, c.live = next, true
	consuming := c.consumingAgain
	c.mu.Unlock()
	close(consuming)
	c.event(ConsumerEvent{Kind: ConsumerResumed, Gap: time.Since(since)})
	return next
}
