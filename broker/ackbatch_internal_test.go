package broker

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren/conn"
	"github.com/warrenmq/warren/internal/rabbittest"
	"github.com/warrenmq/warren/topology"
)

// channelModel is a channel's unacknowledged deliveries as RabbitMQ keeps
// them (rabbit_channel's unacked queue): a settlement of a tag not
// outstanding closes the channel (406 unknown delivery tag), a multiple ack
// settles every outstanding tag up to its own. It records what a
// settlement would do to a message the client never settled: lose it.
type channelModel struct {
	mu          sync.Mutex
	outstanding map[uint64]bool
	settled     map[uint64]bool // by the client (its call made)
	acked       map[uint64]bool // by the broker
	frames      int
	err         error
}

func newChannelModel(n int) *channelModel {
	m := &channelModel{outstanding: map[uint64]bool{}, settled: map[uint64]bool{}, acked: map[uint64]bool{}}
	for t := 1; t <= n; t++ {
		m.outstanding[uint64(t)] = true
	}
	return m
}

func (m *channelModel) fail(format string, args ...any) {
	if m.err == nil {
		m.err = fmt.Errorf(format, args...)
	}
}

func (m *channelModel) Ack(tag uint64, multiple bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.frames++
	if !m.outstanding[tag] {
		m.fail("406 unknown delivery tag %d (multiple %t)", tag, multiple)
		return nil
	}
	settle := func(t uint64) {
		if !m.settled[t] {
			m.fail("ack %d (multiple %t) acked %d, which the client never settled: lost", tag, multiple, t)
		}
		delete(m.outstanding, t)
		m.acked[t] = true
	}
	if !multiple {
		settle(tag)
		return nil
	}
	for t := range m.outstanding {
		if t <= tag {
			settle(t)
		}
	}
	return nil
}

func (m *channelModel) Nack(tag uint64, multiple, requeue bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.frames++
	if multiple {
		m.fail("a nack with multiple")
	}
	if !m.outstanding[tag] {
		m.fail("406 unknown delivery tag %d (nack)", tag)
	}
	delete(m.outstanding, tag)
	return nil
}

func (m *channelModel) Reject(tag uint64, requeue bool) error { return m.Nack(tag, false, requeue) }

// settle records the client's decision before its call, as a Delivery's
// settled flag does.
func (m *channelModel) settle(tag uint64) {
	m.mu.Lock()
	m.settled[tag] = true
	m.mu.Unlock()
}

// TestAckBatchNeverAcksWhatNobodySettled settles deliveries of a channel
// in random orders, from several goroutines, with nacks among the acks and
// deliveries nobody settles, against the broker's rules: no ack names a tag
// that is not outstanding, none settles a delivery the client did not
// settle, and once flushed every ack the client made has reached the
// broker. It counts the frames, which must be fewer than the acks.
func TestAckBatchNeverAcksWhatNobodySettled(t *testing.T) {
	old := ackDelay
	ackDelay = 50 * time.Microsecond // the delay's flushes race the settlements too
	t.Cleanup(func() { ackDelay = old })
	for seed := range uint64(200) {
		rnd := rand.New(rand.NewPCG(seed, 1))
		n := 50 + rnd.IntN(400)
		limit := []int{0, 1, 2, 8, 32}[rnd.IntN(5)]
		m := newChannelModel(n)
		b := &ackBatch{}
		tags := rnd.Perm(n)
		workers := 1 + rnd.IntN(6)
		kept := map[uint64]bool{} // never settled: a handler that holds it
		for range rnd.IntN(3) {
			kept[uint64(1+rnd.IntN(n))] = true
		}
		var wg sync.WaitGroup
		for w := range workers {
			wg.Go(func() {
				for i := w; i < n; i += workers {
					tag := uint64(tags[i] + 1)
					if kept[tag] {
						continue
					}
					d := &amqp.Delivery{Acknowledger: m, DeliveryTag: tag}
					m.settle(tag)
					switch kind := tag * 2654435761 % 10; {
					case kind == 0:
						_ = d.Nack(false, true)
						b.sent(tag)
					case kind == 1:
						_ = d.Reject(false)
						b.sent(tag)
					case kind == 2:
						_ = b.ackNow(d)
					default:
						_ = b.ack(d, limit)
					}
				}
			})
		}
		wg.Wait()
		b.close()
		m.mu.Lock()
		if m.err != nil {
			t.Fatalf("seed %d (n %d, limit %d, workers %d): %v", seed, n, limit, workers, m.err)
		}
		for tag := range m.settled {
			if m.outstanding[tag] {
				t.Fatalf("seed %d: tag %d settled by the client and still outstanding after close", seed, tag)
			}
		}
		for tag := range kept {
			if !m.outstanding[tag] {
				t.Fatalf("seed %d: tag %d, never settled, is not outstanding", seed, tag)
			}
		}
		m.mu.Unlock()
	}
}

// TestAckBatchSendsARunAsOneAck: acks in order, with limit 8, leave as one
// multiple ack each eighth; a settlement sent alone in the run is passed
// over, not named.
func TestAckBatchSendsARunAsOneAck(t *testing.T) {
	holdAcksFor(t, time.Hour)
	m := newChannelModel(64)
	b := &ackBatch{}
	for tag := uint64(1); tag <= 64; tag++ {
		m.settle(tag)
		d := &amqp.Delivery{Acknowledger: m, DeliveryTag: tag}
		if tag == 20 {
			_ = d.Nack(false, true)
			b.sent(tag)
			continue
		}
		if err := b.ack(d, 8); err != nil {
			t.Fatal(err)
		}
	}
	b.close()
	if m.err != nil {
		t.Fatal(m.err)
	}
	if len(m.outstanding) != 0 {
		t.Fatalf("%d tags outstanding after close", len(m.outstanding))
	}
	// 63 acks: seven runs of 8 and one of 7 at close, and the nack.
	if m.frames != 9 {
		t.Fatalf("%d frames, want 9", m.frames)
	}
}

// TestAckBatchGivesUpBehindAStoppedFrontier: a delivery nobody settles
// stops the frontier for good; past maxSpan the batch sends every ack at
// once and holds nothing more, instead of growing a byte a delivery.
func TestAckBatchGivesUpBehindAStoppedFrontier(t *testing.T) {
	n := maxSpan + 100
	m := newChannelModel(n)
	b := &ackBatch{}
	for tag := uint64(2); tag <= uint64(n); tag++ {
		m.settle(tag)
		if err := b.ack(&amqp.Delivery{Acknowledger: m, DeliveryTag: tag}, maxHeld); err != nil {
			t.Fatal(err)
		}
	}
	if !b.closed || b.ring != nil {
		t.Fatalf("closed %t, ring of %d: still holding behind a stopped frontier", b.closed, len(b.ring))
	}
	if m.err != nil {
		t.Fatal(m.err)
	}
	if len(m.outstanding) != 1 || !m.outstanding[1] {
		t.Fatalf("outstanding %d tags, want only tag 1", len(m.outstanding))
	}
}

// holdAcksFor keeps held acks back for d (their delay) until t ends: with
// an hour, an ack goes out only at its limit or when a consumer leaves.
func holdAcksFor(t *testing.T, d time.Duration) {
	old := ackDelay
	ackDelay = d
	t.Cleanup(func() { ackDelay = old })
}

// ackTestSetup is the shared broker, a connection to it and Ops on it,
// with a context for the test's calls.
func ackTestSetup(t *testing.T) (*rabbittest.Broker, *conn.Conn, *Ops, context.Context) {
	t.Helper()
	b := rabbittest.Shared(t)
	c := rabbittest.OpenConn(t, b.URL, conn.Config{})
	ops, err := NewOps(c, OpsConfig{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return b, c, ops, ctx
}

// ackTestQueue declares a durable queue that outlives the connection (its
// count after a cut is the check) and publishes n messages to it.
func ackTestQueue(t *testing.T, ctx context.Context, b *rabbittest.Broker, ops *Ops, name string, n int) string {
	t.Helper()
	q := b.Name(name)
	if _, err := ops.DeclareQueue(ctx, topology.QueueSpec{Name: q, Durable: true}); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if err := ops.Publish(ctx, "", q, amqp.Publishing{Body: []byte(fmt.Sprint(i))}, PublishOptions{Mandatory: true}); err != nil {
			t.Fatal(err)
		}
	}
	return q
}

// readyAfterCut is how many messages each queue holds once the connection
// is gone: every delivery it did not ack is back.
func readyAfterCut(t *testing.T, b *rabbittest.Broker, queues ...string) []int {
	t.Helper()
	ch := rabbittest.RawChannel(t, b.URL)
	counts := make([]int, len(queues))
	for i, q := range queues {
		st, err := ch.QueueDeclarePassive(q, true, false, false, false, nil)
		if err != nil {
			t.Fatal(err)
		}
		if st.Consumers != 0 {
			t.Fatalf("queue %s still has %d consumers", q, st.Consumers)
		}
		counts[i] = st.Messages
	}
	return counts
}

// channelOf is the shared channel a consumer is on now.
func channelOf(c *Consumer) *sharedChannel {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cur == nil {
		return nil
	}
	return c.cur.channel
}

// receive takes n deliveries a consumer's handler passed on.
func receive(t *testing.T, ctx context.Context, got <-chan *Delivery, n int) []*Delivery {
	t.Helper()
	var ds []*Delivery
	for len(ds) < n {
		select {
		case d := <-got:
			ds = append(ds, d)
		case <-ctx.Done():
			t.Fatalf("%d of %d deliveries", len(ds), n)
		}
	}
	return ds
}

// passOn is a handler that settles nothing itself: the test settles each
// delivery off the consumer's goroutine, as a service that hands its
// messages to workers does. The consumer's reader has then parked by the
// time the acks come, so what is held stays held until its delay, its
// limit, a consumer leaving or the connection's close, whichever the test
// is about.
func passOn(got chan<- *Delivery) Handler {
	return func(_ context.Context, d *Delivery) { got <- d }
}

// consumerPair is two consumers on one channel: A holds the channel's
// first delivery (tag 1) unsettled, B has received 20 after it, none
// settled.
type consumerPair struct {
	a, b   *Consumer
	qa, qb string
	first  *Delivery
	held   chan *Delivery // A's: a second delivery there means the channel closed
	later  []*Delivery    // B's
}

// twoConsumers makes a consumerPair with prefetch on both consumers.
func twoConsumers(t *testing.T, ctx context.Context, b *rabbittest.Broker, ops *Ops, prefetch int) consumerPair {
	t.Helper()
	p := consumerPair{qa: ackTestQueue(t, ctx, b, ops, "a", 1), qb: ackTestQueue(t, ctx, b, ops, "b", 0), held: make(chan *Delivery, 2)}
	var err error
	if p.a, err = ops.Consume(ctx, ConsumerSpec{Queue: p.qa, PrefetchCount: prefetch, Handler: passOn(p.held)}); err != nil {
		t.Fatal(err)
	}
	p.first = receive(t, ctx, p.held, 1)[0]
	const n = 20
	got := make(chan *Delivery, n)
	if p.b, err = ops.Consume(ctx, ConsumerSpec{Queue: p.qb, PrefetchCount: prefetch, Handler: passOn(got)}); err != nil {
		t.Fatal(err)
	}
	if channelOf(p.a) != channelOf(p.b) || channelOf(p.a) == nil {
		t.Fatal("A and B are not on one channel")
	}
	for range n {
		if err := ops.Publish(ctx, "", p.qb, amqp.Publishing{Body: []byte("b")}, PublishOptions{Mandatory: true}); err != nil {
			t.Fatal(err)
		}
	}
	p.later = receive(t, ctx, got, n)
	return p
}

// TestHeldAcksNeverSettleAnotherConsumersDelivery: consumer A holds a
// delivery unsettled while consumer B, on the same channel, acks and
// rejects every later one. No ack of B's may settle A's delivery (a
// multiple ack past it would: PITFALLS 60), B's acks held behind it go out
// when B stops, and when the connection is cut A's message is the one that
// comes back.
func TestHeldAcksNeverSettleAnotherConsumersDelivery(t *testing.T) {
	holdAcksFor(t, time.Hour)
	b, c, ops, ctx := ackTestSetup(t)
	ab := twoConsumers(t, ctx, b, ops, 32)
	a, bc, first, held, qa, qb := ab.a, ab.b, ab.first, ab.held, ab.qa, ab.qb
	var err error
	for _, d := range ab.later {
		if d.DeliveryTag%3 == 0 {
			err = d.Reject(false)
		} else {
			err = d.Ack()
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	h := channelOf(a)
	h.acks.mu.Lock()
	front, beyond := h.acks.front, h.acks.beyond
	h.acks.mu.Unlock()
	if front != 0 || beyond == 0 {
		t.Fatalf("frontier %d with %d acks held past it; want 0 (A's tag 1 unsettled) and some held", front, beyond)
	}
	if err := bc.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	h.acks.mu.Lock()
	last, beyond := h.acks.last, h.acks.beyond
	h.acks.mu.Unlock()
	if last != 0 || beyond != 0 {
		t.Fatalf("after B's Stop: %d acks still held past the frontier (last %d)", beyond, last)
	}
	select {
	case d := <-held:
		t.Fatalf("A got a second delivery (tag %d, redelivered %t): the channel closed under it", d.DeliveryTag, d.Redelivered)
	default:
	}
	if first.DeliveryTag != 1 {
		t.Fatalf("A's delivery has tag %d, want 1", first.DeliveryTag)
	}
	if err := c.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if got := readyAfterCut(t, b, qa, qb); got[0] != 1 || got[1] != 0 {
		t.Fatalf("after the cut: %d in A's queue (want its 1 back), %d in B's (want 0: every ack and reject sent)", got[0], got[1])
	}
}

// TestHeldAcksGoOutAsOneOnceTheFrontierPasses: once the delivery that held
// the frontier is acked, every ack held behind it is covered by one
// multiple ack, which the broker takes (a multiple ack naming a tag no
// longer outstanding would close the channel instead).
func TestHeldAcksGoOutAsOneOnceTheFrontierPasses(t *testing.T) {
	holdAcksFor(t, time.Hour)
	b, c, ops, ctx := ackTestSetup(t)
	ab := twoConsumers(t, ctx, b, ops, 128)
	a, bc, first, held, qa, qb := ab.a, ab.b, ab.first, ab.held, ab.qa, ab.qb
	const n = 20
	for _, d := range ab.later {
		if err := d.Ack(); err != nil {
			t.Fatal(err)
		}
	}
	if err := first.Ack(); err != nil {
		t.Fatal(err)
	}
	h := channelOf(a)
	h.acks.mu.Lock()
	last, prefix, beyond := h.acks.last, h.acks.prefix, h.acks.beyond
	h.acks.mu.Unlock()
	if last != n+1 || prefix != n+1 || beyond != 0 {
		t.Fatalf("held: last %d, %d at or below the frontier, %d past it; want one run of %d", last, prefix, beyond, n+1)
	}
	if err := a.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := bc.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case d := <-held:
		t.Fatalf("A got a second delivery (tag %d): the channel closed under it", d.DeliveryTag)
	default:
	}
	if err := c.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if got := readyAfterCut(t, b, qa, qb); got[0] != 0 || got[1] != 0 {
		t.Fatalf("after the cut: %d in A's queue, %d in B's; want 0 and 0 (one multiple ack settled all)", got[0], got[1])
	}
}

// TestHeldAcksKeepThePrefetchWindowOpen: with acks held for an hour and
// made off the consumer's goroutine (which has parked, waiting for the
// broker), a consumer with a prefetch of 8 still takes every message: its
// acks go out each time two are held, so the broker never waits on a
// window full of deliveries already handled.
func TestHeldAcksKeepThePrefetchWindowOpen(t *testing.T) {
	holdAcksFor(t, time.Hour)
	b, c, ops, ctx := ackTestSetup(t)
	const n = 40
	q := ackTestQueue(t, ctx, b, ops, "window", n)
	got := make(chan *Delivery, n)
	consumer, err := ops.Consume(ctx, ConsumerSpec{Queue: q, PrefetchCount: 8, Handler: passOn(got)})
	if err != nil {
		t.Fatal(err)
	}
	// The window full first: the reader has parked with nothing held,
	// and no delivery will wake it until acks leave.
	pending := receive(t, ctx, got, 8)
	for i := range n {
		if len(pending) == 0 {
			pending = receive(t, ctx, got, 1)
		}
		if err := pending[0].Ack(); err != nil {
			t.Fatalf("ack %d: %v", i, err)
		}
		pending = pending[1:]
	}
	if err := consumer.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if got := readyAfterCut(t, b, q); got[0] != 0 {
		t.Fatalf("%d messages back after the cut, want 0", got[0])
	}
}

// acksOutstanding polls the broker's own count of q's unacknowledged
// messages until it reads 0 (and none ready).
func acksOutstanding(t *testing.T, ctx context.Context, b *rabbittest.Broker, q string) {
	t.Helper()
	var (
		out string
		err error
	)
	rabbittest.Eventually(t, 20*time.Second, "the broker counting the message acked", func() bool {
		out, err = rabbittest.Ctl(ctx, "", "list_queues", "-p", b.Vhost, "--no-table-headers", "name", "messages_ready", "messages_unacknowledged")
		return err == nil && strings.Contains(out, q+"\t0\t0")
	}, func() string { return fmt.Sprintf("%q, %v", out, err) })
}

// TestHeldAckGoesOutAtItsDelay: one message acked off the consumer's
// goroutine, and nothing after it: its ack leaves at the delay, with no
// other ack, reader or Stop to carry it.
func TestHeldAckGoesOutAtItsDelay(t *testing.T) {
	b, _, ops, ctx := ackTestSetup(t)
	q := ackTestQueue(t, ctx, b, ops, "alone", 1)
	got := make(chan *Delivery, 1)
	consumer, err := ops.Consume(ctx, ConsumerSpec{Queue: q, PrefetchCount: 32, Handler: passOn(got)})
	if err != nil {
		t.Fatal(err)
	}
	if err := receive(t, ctx, got, 1)[0].Ack(); err != nil {
		t.Fatal(err)
	}
	acksOutstanding(t, ctx, b, q)
	if !consumer.Consuming() {
		t.Fatal("the consumer stopped")
	}
}

// TestHeldAcksLeaveBeforeTheConnectionCloses: a service that closes its
// connection without stopping its consumers first (Close of the
// connection ends them), or refreshes it, loses no held ack: the acks go
// out before the connection closes, so nothing it acked comes back.
func TestHeldAcksLeaveBeforeTheConnectionCloses(t *testing.T) {
	for _, how := range []string{"Close", "Refresh"} {
		t.Run(how, func(t *testing.T) {
			holdAcksFor(t, time.Hour)
			b, c, ops, ctx := ackTestSetup(t)
			const n = 5
			q := ackTestQueue(t, ctx, b, ops, "closing", n)
			got := make(chan *Delivery, 2*n)
			consumer, err := ops.Consume(ctx, ConsumerSpec{Queue: q, PrefetchCount: 64, Handler: passOn(got)})
			if err != nil {
				t.Fatal(err)
			}
			for _, d := range receive(t, ctx, got, n) {
				if err := d.Ack(); err != nil {
					t.Fatal(err)
				}
			}
			if how == "Refresh" {
				if err := c.Refresh(ctx); err != nil {
					t.Fatal(err)
				}
				rabbittest.Eventually(t, 20*time.Second, "the consumer back", consumer.Consuming)
				if err := consumer.Stop(ctx); err != nil {
					t.Fatal(err)
				}
			}
			if err := c.Close(ctx); err != nil {
				t.Fatal(err)
			}
			if back := readyAfterCut(t, b, q); back[0] != 0 || len(got) != 0 {
				t.Fatalf("%d of %d acked messages back after %s, %d delivered again", back[0], n, how, len(got))
			}
		})
	}
}
