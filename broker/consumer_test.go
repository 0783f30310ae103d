package broker_test

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/conn"
	"github.com/warrenmq/warren/internal/rabbittest"
	"github.com/warrenmq/warren/retry"
	"github.com/warrenmq/warren/topology"
)

// events records a consumer's events.
type events struct {
	mu  sync.Mutex
	all []broker.ConsumerEvent
}

func (e *events) on(ev broker.ConsumerEvent) {
	e.mu.Lock()
	e.all = append(e.all, ev)
	e.mu.Unlock()
}

// count is how many events of kind came so far.
func (e *events) count(kind broker.ConsumerEventKind) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for _, ev := range e.all {
		if ev.Kind == kind {
			n++
		}
	}
	return n
}

func (e *events) waitFor(t *testing.T, kind broker.ConsumerEventKind) broker.ConsumerEvent {
	t.Helper()
	var found broker.ConsumerEvent
	rabbittest.Eventually(t, 20*time.Second, "a "+kind.String()+" event", func() bool {
		e.mu.Lock()
		defer e.mu.Unlock()
		for _, ev := range e.all {
			if ev.Kind == kind {
				found = ev
				return true
			}
		}
		return false
	}, func() string { e.mu.Lock(); defer e.mu.Unlock(); return fmt.Sprintf("saw %+v", e.all) })
	return found
}

// consumeTheirQueue declares a queue with a raw client, as another
// service would, and consumes it with warren: the consumer forwards the
// bodies to got and its events to ev.
func consumeTheirQueue(t *testing.T, ctx context.Context, b *rabbittest.Broker, ops *broker.Ops) (q string, raw *amqp.Channel, c *broker.Consumer, got chan string, ev *events) {
	t.Helper()
	q = b.Name("theirs")
	raw = rawChannel(t, b.URL)
	if _, err := raw.QueueDeclare(q, false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	got, ev = make(chan string, 10), &events{}
	c, err := ops.Consume(ctx, broker.ConsumerSpec{Queue: q, Handler: receiver(got), OnEvent: ev.on})
	if err != nil {
		t.Fatal(err)
	}
	return q, raw, c, got, ev
}

// A queue warren did not declare, deleted under its consumer: the consumer
// reports the gap and waits with backoff until the queue exists again,
// then consumes it. It never ends on its own. Each event is logged too,
// with the consumer and its queue (Warn while it is not consuming, Info
// once it resumes).
func TestConsumerWaitsForAQueueItDidNotDeclare(t *testing.T) {
	b := rabbittest.Shared(t)
	log, logged := textLog()
	_, ops := setup(t, b.URL, broker.OpsConfig{Logger: log})
	ctx := ctxT(t, 60*time.Second)
	q, raw, c, got, ev := consumeTheirQueue(t, ctx, b, ops)
	if !c.Consuming() {
		t.Fatal("not consuming after Consume")
	}
	if _, err := raw.QueueDelete(q, false, false, false); err != nil {
		t.Fatal(err)
	}
	ev.waitFor(t, broker.ConsumerInterrupted)
	w := ev.waitFor(t, broker.ConsumerWaiting)
	if w.Err == nil || c.Consuming() {
		t.Fatalf("waiting event %+v, consuming %v", w, c.Consuming())
	}
	if ok, _ := ops.QueueExists(ctx, q); ok {
		t.Fatal("warren declared a queue it does not own")
	}
	if _, err := raw.QueueDeclare(q, false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	r := ev.waitFor(t, broker.ConsumerResumed)
	if r.Gap <= 0 || !c.Consuming() {
		t.Fatalf("resumed %+v, consuming %v", r, c.Consuming())
	}
	if err := ops.Publish(ctx, "", q, msg("back"), broker.PublishOptions{}); err != nil {
		t.Fatal(err)
	}
	expect(t, got, "back")
	if _, err := raw.QueueDelete(q, false, false, false); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`level=WARN msg="broker: consumer not consuming" consumer=` + c.Tag() + ` queue=` + q + ` event=interrupted`,
		`level=WARN msg="broker: consumer not consuming" consumer=` + c.Tag() + ` queue=` + q + ` event=waiting attempt=`,
		`level=INFO msg="broker: consumer resumed" consumer=` + c.Tag() + ` queue=` + q + ` event=resumed`,
	} {
		if !strings.Contains(logged(), want) {
			t.Errorf("no log line with %q in:\n%s", want, logged())
		}
	}
}

// A registered queue deleted under its consumer is declared again from its
// spec, with its bindings.
func TestConsumerRedeclaresItsRegisteredQueue(t *testing.T) {
	b := rabbittest.Shared(t)
	_, ops := setup(t, b.URL, broker.OpsConfig{})
	ctx := ctxT(t, 60*time.Second)
	q, x := b.Name("mine"), b.Name("src")
	if err := ops.Apply(ctx, topology.Topology{
		Exchanges: []topology.ExchangeSpec{{Name: x, Type: topology.Topic}},
		Queues:    []topology.QueueSpec{{Name: q, Args: topology.QueueArgs{MaxLength: 100}}},
		Bindings:  []topology.BindSpec{{Source: x, Destination: q, RoutingKey: "k.#"}},
	}); err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 10)
	var ev events
	if _, err := ops.Consume(ctx, broker.ConsumerSpec{Queue: q, Handler: receiver(got), OnEvent: ev.on}); err != nil {
		t.Fatal(err)
	}
	if _, err := rawChannel(t, b.URL).QueueDelete(q, false, false, false); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	ev.waitFor(t, broker.ConsumerQueueRedeclared)
	ev.waitFor(t, broker.ConsumerResumed)
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("consuming again after %v", d)
	}
	// Its binding came back with it, and its arguments.
	if err := ops.Publish(ctx, x, "k.1", msg("via binding"), broker.PublishOptions{Mandatory: true}); err != nil {
		t.Fatal(err)
	}
	expect(t, got, "via binding")
	if _, err := rawChannel(t, b.URL).QueueDeclare(q, false, false, false, false, nil); !isCode(err, 406) {
		t.Fatalf("queue declared again without its arguments: %v", err)
	}
}

// Consumers share channels, so a stopped consumer's prefetched messages
// must be given back explicitly (a channel that stays open for the other
// consumers would hold them forever).
func TestStopRequeuesWhatTheHandlerNeverGot(t *testing.T) {
	b := rabbittest.Shared(t)
	_, ops := setup(t, b.URL, broker.OpsConfig{})
	ctx := ctxT(t, 60*time.Second)
	qa, _ := ops.DeclareQueue(ctx, topology.QueueSpec{Name: b.Name("a")})
	qb, _ := ops.DeclareQueue(ctx, topology.QueueSpec{Name: b.Name("b")})
	other := make(chan string, 10)
	if _, err := ops.Consume(ctx, broker.ConsumerSpec{Queue: qb.Name, Handler: receiver(other)}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		if err := ops.Publish(ctx, "", qa.Name, msg("m"), broker.PublishOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// The first message is held in the handler (whenever the test gets to
	// wait for it: a non-blocking send here let it through under load).
	inHand := make(chan struct{}, 1)
	release := make(chan struct{})
	var first atomic.Bool
	c, err := ops.Consume(ctx, broker.ConsumerSpec{Queue: qa.Name, PrefetchCount: 10, Handler: func(_ context.Context, d *broker.Delivery) {
		if first.CompareAndSwap(false, true) {
			inHand <- struct{}{}
			<-release
		}
		_ = d.Ack()
	}})
	if err != nil {
		t.Fatal(err)
	}
	<-inHand
	stopped := make(chan error, 1)
	go func() { stopped <- c.Stop(ctx) }()
	// Once the broker has no consumer, Stop has begun: nothing more is
	// handed out.
	rabbittest.Eventually(t, 10*time.Second, "the consumer cancelled", func() bool {
		info, err := ops.Inspect(ctx, qa.Name)
		return err == nil && info.Consumers == 0
	})
	close(release)
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
	// One acked in hand; four prefetched, given back while the shared
	// channel stays open for the other consumer.
	var info broker.QueueInfo
	rabbittest.Eventually(t, 10*time.Second, "the 4 messages never handled back in the queue", func() bool {
		var err error
		info, err = ops.Inspect(ctx, qa.Name)
		return err == nil && info.Messages == 4
	}, func() string { return fmt.Sprintf("it holds %+v", info) })
	if err := ops.Publish(ctx, "", qb.Name, msg("other"), broker.PublishOptions{}); err != nil {
		t.Fatal(err)
	}
	expect(t, other, "other")
}

// TestOrderedHandOverKeepsTheQueueOrder: two consumers of a single-active-
// consumer quorum queue; the active one is stopped with a message in its
// handler and 20 prefetched. With OrderedHandOver the next consumer starts
// exactly after the last message the first one handled, and the queue is
// handled in order from end to end. (With a basic.cancel the broker would
// activate the second at once, while the first still held its messages:
// PITFALLS 33, shown by TestPitfallSingleActiveConsumerSwitchesAtCancel.)
func TestOrderedHandOverKeepsTheQueueOrder(t *testing.T) {
	b := rabbittest.Shared(t)
	_, ops := setup(t, b.URL, broker.OpsConfig{})
	ctx := ctxT(t, 60*time.Second)
	q, err := ops.DeclareQueue(ctx, topology.QueueSpec{Name: b.Name("ordered"), Durable: true,
		Args: topology.QueueArgs{Type: topology.Quorum, SingleActiveConsumer: true}})
	if err != nil {
		t.Fatal(err)
	}
	const total = 100
	for i := 1; i <= total; i++ {
		if err := ops.Publish(ctx, "", q.Name, msg(strconv.Itoa(i)), broker.PublishOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	var handled []int
	bFirst := 0
	bGot := make(chan struct{})
	record := func(d *broker.Delivery) int {
		n, _ := strconv.Atoi(string(d.Body))
		mu.Lock()
		defer mu.Unlock()
		handled = append(handled, n)
		return n
	}
	inHand := make(chan struct{})
	a, err := ops.Consume(ctx, broker.ConsumerSpec{Queue: q.Name, PrefetchCount: 20, OrderedHandOver: true,
		Handler: func(hctx context.Context, d *broker.Delivery) {
			if record(d) == 10 {
				close(inHand)
				// Held until the second consumer gets a message (the
				// broker switched while this one was busy) or Stop's
				// deadline cancels the handler's context.
				select {
				case <-bGot:
				case <-hctx.Done():
				}
			}
			_ = d.Ack()
		}})
	if err != nil {
		t.Fatal(err)
	}
	<-inHand
	var once sync.Once
	if _, err := ops.Consume(ctx, broker.ConsumerSpec{Queue: q.Name, PrefetchCount: 20, OrderedHandOver: true,
		Handler: func(_ context.Context, d *broker.Delivery) {
			n := record(d)
			once.Do(func() {
				bFirst = n
				close(bGot)
			})
			_ = d.Ack()
		}}); err != nil {
		t.Fatal(err)
	}
	// Consume returned at consume-ok: the second consumer waits its turn.
	stopCtx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	_ = a.Stop(stopCtx) // its deadline ends the handler's wait
	rabbittest.Eventually(t, 20*time.Second, "every message handled", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(handled) >= total
	})
	mu.Lock()
	defer mu.Unlock()
	for i, n := range handled {
		if n != i+1 {
			t.Fatalf("handled out of order at %d: %v", i, handled)
		}
	}
	if bFirst != 11 {
		t.Fatalf("the second consumer started at %d, want 11", bFirst)
	}
}

// TestPauseGivesBackInOrderAndResumes: a consumer with 20 prefetched is
// paused with a message in its handler. Pause returns once that message is
// settled and the 19 it never got are back in the queue, in order: the
// broker has no consumer and holds the rest ready, none unacked. A
// reconnect while paused does not bring the consumer back. Resume consumes
// again, and the queue is handled once each, in order, from end to end.
func TestPauseGivesBackInOrderAndResumes(t *testing.T) {
	b := rabbittest.Shared(t)
	p := rabbittest.NewProxy(t, rabbittest.SharedAddr)
	c, ops := setup(t, p.URL(b.Vhost), broker.OpsConfig{})
	ctx := ctxT(t, 60*time.Second)
	q, err := ops.DeclareQueue(ctx, topology.QueueSpec{Name: b.Name("paused"), Durable: true})
	if err != nil {
		t.Fatal(err)
	}
	const total = 100
	for i := 1; i <= total; i++ {
		if err := ops.Publish(ctx, "", q.Name, msg(strconv.Itoa(i)), broker.PublishOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	var handled []int
	inHand, release := make(chan struct{}), make(chan struct{})
	var events []broker.ConsumerEventKind
	cons, err := ops.Consume(ctx, broker.ConsumerSpec{Queue: q.Name, PrefetchCount: 20,
		OnEvent: func(e broker.ConsumerEvent) {
			mu.Lock()
			events = append(events, e.Kind)
			mu.Unlock()
		},
		Handler: func(_ context.Context, d *broker.Delivery) {
			n, _ := strconv.Atoi(string(d.Body))
			if n == 10 {
				close(inHand)
				<-release
			}
			mu.Lock()
			handled = append(handled, n)
			mu.Unlock()
			_ = d.Ack()
		}})
	if err != nil {
		t.Fatal(err)
	}
	<-inHand
	paused := make(chan error, 1)
	go func() { paused <- cons.Pause(ctx) }()
	rabbittest.Eventually(t, 10*time.Second, "the consumer cancelled", func() bool {
		info, err := ops.Inspect(ctx, q.Name)
		return err == nil && info.Consumers == 0
	})
	close(release)
	if err := <-paused; err != nil {
		t.Fatal(err)
	}
	if !cons.Paused() || cons.Consuming() {
		t.Fatalf("after Pause: paused %v, consuming %v", cons.Paused(), cons.Consuming())
	}
	ready, unacked, err := b.Messages(q.Name)
	if err != nil || ready != total-10 || unacked != 0 {
		t.Fatalf("after Pause the queue holds %d ready, %d unacked (%v); want %d and 0", ready, unacked, err, total-10)
	}
	// A reconnect while paused restores the topology, not the consumer.
	restored := make(chan struct{}, 1)
	remove := broker.RegistryOf(c).OnRestored(func(broker.RestoreReport) {
		select {
		case restored <- struct{}{}:
		default:
		}
	})
	defer remove()
	if err := p.Drop(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-restored:
	case <-ctx.Done():
		t.Fatal("no restore after the cut")
	}
	if info, err := ops.Inspect(ctx, q.Name); err != nil || info.Consumers != 0 || info.Messages != total-10 {
		t.Fatalf("after a reconnect while paused: %+v %v", info, err)
	}
	if err := cons.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	rabbittest.Eventually(t, 20*time.Second, "every message handled", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(handled) >= total
	})
	mu.Lock()
	defer mu.Unlock()
	for i, n := range handled {
		if n != i+1 {
			t.Fatalf("handled out of order or twice at %d: %v", i, handled)
		}
	}
	if !slices.Contains(events, broker.ConsumerPaused) || events[len(events)-1] != broker.ConsumerResumed {
		t.Fatalf("events %v: want paused, then resumed last", events)
	}
}

// A restore run that outlasts the consumers' grace (a broker back after an
// outage with thousands of entities to declare): every consumer waits for
// the connection and its restore run rather than polling, then comes back
// once, on its own queue, with what was published meanwhile.
func TestConsumersWaitForARestoreLongerThanTheirGrace(t *testing.T) {
	broker.SetRestoreGrace(t, 0) // the grace is over before the restore runs
	b := rabbittest.Shared(t)
	p := rabbittest.NewProxy(t, rabbittest.SharedAddr)
	ctx := ctxT(t, 60*time.Second)
	// Registered before the registry's own hook, so it runs first on the
	// next connection and holds the restore run back until released.
	entered, release := make(chan struct{}, 1), make(chan struct{})
	_, ops := setupWith(t, p.URL(b.Vhost), broker.OpsConfig{}, func(c *conn.Conn) {
		c.OnRestore(func(hctx context.Context) error {
			select {
			case entered <- struct{}{}:
			default:
			}
			select {
			case <-release:
				return nil
			case <-hctx.Done():
				return hctx.Err()
			}
		})
	})
	const n = 3
	var queues []string
	var topo topology.Topology
	for i := range n {
		q := b.Name("grace" + strconv.Itoa(i))
		queues = append(queues, q)
		topo.Queues = append(topo.Queues, topology.QueueSpec{Name: q})
	}
	if err := ops.Apply(ctx, topo); err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 10)
	evs := make([]*events, n)
	for i, q := range queues {
		evs[i] = &events{}
		if _, err := ops.Consume(ctx, broker.ConsumerSpec{Queue: q, Handler: receiver(got), OnEvent: evs[i].on}); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Drop(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-entered:
	case <-ctx.Done():
		t.Fatal("no reconnect after the cut")
	}
	for i := range n {
		evs[i].waitFor(t, broker.ConsumerInterrupted)
	}
	raw := rawChannel(t, b.URL)
	for _, q := range queues {
		if err := raw.PublishWithContext(ctx, "", q, false, false, msg("while restoring "+q)); err != nil {
			t.Fatal(err)
		}
	}
	close(release)
	want := map[string]bool{}
	for _, q := range queues {
		want["while restoring "+q] = true
	}
	for range n {
		select {
		case body := <-got:
			if !want[body] {
				t.Fatalf("unexpected or repeated message %q", body)
			}
			delete(want, body)
		case <-ctx.Done():
			t.Fatalf("still waiting for %v", want)
		}
	}
	for i, q := range queues {
		evs[i].waitFor(t, broker.ConsumerResumed)
		info, err := ops.Inspect(ctx, q)
		if err != nil || info.Consumers != 1 {
			t.Fatalf("queue %s after the restore: %+v, %v; want one consumer", q, info, err)
		}
		if resumed := evs[i].count(broker.ConsumerResumed); resumed != 1 {
			t.Fatalf("consumer of %s resumed %d times", q, resumed)
		}
	}
}

// A consumer waiting with backoff for a queue it did not declare is woken
// by Pause and by Stop: neither waits for its next attempt, here a minute
// away.
func TestPauseAndStopReachAConsumerWaitingForItsQueue(t *testing.T) {
	broker.SetConsumerRecoveryBackoff(t, retry.Backoff{InitialInterval: time.Minute, Multiplier: 1, MaxInterval: time.Minute})
	b := rabbittest.Shared(t)
	_, ops := setup(t, b.URL, broker.OpsConfig{})
	ctx := ctxT(t, 60*time.Second)
	q, raw, c, got, ev := consumeTheirQueue(t, ctx, b, ops)
	if _, err := raw.QueueDelete(q, false, false, false); err != nil {
		t.Fatal(err)
	}
	ev.waitFor(t, broker.ConsumerWaiting)
	// Its next attempt is a minute away; Pause returns once it parked.
	if err := c.Pause(ctxT(t, 20*time.Second)); err != nil {
		t.Fatalf("pause of a waiting consumer: %v", err)
	}
	if _, err := raw.QueueDeclare(q, false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Resume(ctxT(t, 20*time.Second)); err != nil {
		t.Fatalf("resume: %v", err)
	}
	if err := ops.Publish(ctx, "", q, msg("after the pause"), broker.PublishOptions{}); err != nil {
		t.Fatal(err)
	}
	expect(t, got, "after the pause")
	waiting := ev.count(broker.ConsumerWaiting)
	if _, err := raw.QueueDelete(q, false, false, false); err != nil {
		t.Fatal(err)
	}
	rabbittest.Eventually(t, 20*time.Second, "a second waiting event", func() bool { return ev.count(broker.ConsumerWaiting) > waiting })
	if err := c.Stop(ctxT(t, 20*time.Second)); err != nil {
		t.Fatalf("stop of a waiting consumer: %v", err)
	}
	select {
	case <-c.Done():
	default:
		t.Fatal("Stop returned before the consumer ended")
	}
}
