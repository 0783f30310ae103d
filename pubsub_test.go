package warren_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren"
	"github.com/warrenmq/warren/ack"
	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/conn"
	"github.com/warrenmq/warren/internal/rabbittest"
	"github.com/warrenmq/warren/topology"
)

func newPubSub(t *testing.T, c *conn.Conn, pcfg warren.PublisherConfig, scfg warren.SubscriberConfig) (*warren.Publisher, *warren.Subscriber) {
	t.Helper()
	pub, err := warren.NewPublisher(c, pcfg)
	if err != nil {
		t.Fatal(err)
	}
	sub, err := warren.NewSubscriber(c, scfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := pub.Close(); err != nil {
			t.Errorf("publisher Close: %v", err)
		}
		if err := sub.Close(); err != nil {
			t.Errorf("subscriber Close: %v", err)
		}
	})
	return pub, sub
}

func receive(t *testing.T, out <-chan *message.Message) *message.Message {
	t.Helper()
	select {
	case m, ok := <-out:
		if !ok {
			t.Fatal("output channel closed")
		}
		return m
	case <-time.After(15 * time.Second):
		t.Fatal("no message")
	}
	return nil
}

func TestPublishSubscribeWithDeliveryInfo(t *testing.T) {
	b := rabbittest.Shared(t)
	c := openConn(t, b.URL)
	m := warren.TopicExchange{Exchange: b.Name("x"), Prefix: b.Prefix}
	pub, sub := newPubSub(t, c, warren.PublisherConfig{Mapping: m}, warren.SubscriberConfig{Mapping: m})
	out, err := sub.Subscribe(ctxT(t, 30*time.Second), "orders.created")
	if err != nil {
		t.Fatal(err)
	}
	msg := message.NewMessage(watermill.NewUUID(), []byte("hello"))
	msg.Metadata.Set("k", "v")
	if err := pub.Publish("orders.created", msg); err != nil {
		t.Fatal(err)
	}
	got := receive(t, out)
	info, ok := ack.InfoOf(got)
	if !ok || info.Exchange != m.Exchange || info.RoutingKey != "orders.created" || info.Queue != b.Prefix+"orders.created" ||
		info.DeliveryTag == 0 || info.ConsumerTag == "" || info.Generation == 0 || info.Headers["k"] != "v" {
		t.Fatalf("delivery info %+v", info)
	}
	if got.UUID != msg.UUID || string(got.Payload) != "hello" || got.Metadata.Get("k") != "v" {
		t.Fatalf("message %+v", got)
	}
	got.Ack()
	select {
	case <-got.Context().Done():
	case <-time.After(5 * time.Second):
		t.Fatal("message context not cancelled after Ack")
	}
}

func TestMandatoryUnroutableIsAnError(t *testing.T) {
	b := rabbittest.Shared(t)
	c := openConn(t, b.URL)
	m := warren.FanoutPerTopic{Prefix: b.Prefix}
	pub, err := warren.NewPublisher(c, warren.PublisherConfig{Mapping: m, Mandatory: true})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	// The topic's exchange exists but no queue is bound: unroutable.
	msgs := []*message.Message{message.NewMessage("m1", nil), message.NewMessage("m2", nil)}
	err = pub.Publish("nobody-listens", msgs...)
	var pe *warren.PublishError
	if !errors.As(err, &pe) || !errors.Is(err, broker.ErrUnroutable) || len(pe.Failed) != 2 || pe.Failed["m1"] == nil {
		t.Fatalf("unroutable publish: %v", err)
	}
	// Bound: the same publisher now delivers.
	sub, err := warren.NewSubscriber(c, warren.SubscriberConfig{Mapping: m})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	if err := sub.SubscribeInitialize("nobody-listens"); err != nil {
		t.Fatal(err)
	}
	if err := pub.Publish("nobody-listens", message.NewMessage("m3", nil)); err != nil {
		t.Fatalf("routable mandatory publish: %v", err)
	}
}

// TestMandatoryReturnsReachTheirOwnMessages: goroutines share the confirm
// channels, half publishing to a topic nobody listens to, half to one that
// is routed; every unroutable message, and only those, fails.
func TestMandatoryReturnsReachTheirOwnMessages(t *testing.T) {
	b := rabbittest.Shared(t)
	c := openConn(t, b.URL)
	m := warren.FanoutPerTopic{Prefix: b.Prefix}
	pub, sub := newPubSub(t, c, warren.PublisherConfig{Mapping: m, Mandatory: true, ConfirmChannels: 2}, warren.SubscriberConfig{Mapping: m})
	if err := sub.SubscribeInitialize("routed"); err != nil {
		t.Fatal(err)
	}
	const goroutines, calls = 8, 40
	var routed atomic.Int64
	var wg sync.WaitGroup
	for g := 0; g < goroutines; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < calls; i++ {
				topic := []string{"routed", "unrouted"}[(g+i)%2]
				msgs := []*message.Message{}
				for j := 0; j <= i%4; j++ {
					msgs = append(msgs, message.NewMessage(watermill.NewUUID(), []byte(topic)))
				}
				err := pub.Publish(topic, msgs...)
				if topic == "routed" {
					if err != nil {
						t.Errorf("routed publish failed: %v", err)
						return
					}
					routed.Add(int64(len(msgs)))
					continue
				}
				var pe *warren.PublishError
				if !errors.As(err, &pe) || len(pe.Failed) != len(msgs) {
					t.Errorf("unroutable publish of %d messages: %v", len(msgs), err)
					return
				}
				for id, e := range pe.Failed {
					if !errors.Is(e, broker.ErrUnroutable) {
						t.Errorf("message %s: %v, want broker.ErrUnroutable", id, e)
					}
				}
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	out, err := sub.Subscribe(ctxT(t, 30*time.Second), "routed")
	if err != nil {
		t.Fatal(err)
	}
	for n := int64(0); n < routed.Load(); n++ {
		msg := receive(t, out)
		if string(msg.Payload) != "routed" {
			t.Fatalf("received %q on the routed topic", msg.Payload)
		}
		msg.Ack()
	}
}

func TestConfirmsLostInADropAreRepublished(t *testing.T) {
	// Both confirm paths: amqp091's deferred confirms alone, and with
	// Mandatory the goroutine that attaches returns to messages.
	for _, mandatory := range []bool{false, true} {
		t.Run(fmt.Sprintf("mandatory=%t", mandatory), func(t *testing.T) {
			testConfirmsLostInADrop(t, mandatory)
		})
	}
}

func testConfirmsLostInADrop(t *testing.T, mandatory bool) {
	b := rabbittest.Shared(t)
	p := rabbittest.NewProxy(t, rabbittest.SharedAddr)
	c := openConn(t, p.URL(b.Vhost))
	m := warren.QueuePerTopic{Prefix: b.Prefix}
	pub, sub := newPubSub(t, c, warren.PublisherConfig{Mapping: m, Mandatory: mandatory}, warren.SubscriberConfig{Mapping: m})
	const topic, batches, perBatch = "drops", 40, 50
	if err := sub.SubscribeInitialize(topic); err != nil {
		t.Fatal(err)
	}
	var sent sync.Map
	var wg sync.WaitGroup
	errs := make(chan error, batches)
	for i := 0; i < batches; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var msgs []*message.Message
			for j := 0; j < perBatch; j++ {
				msg := message.NewMessage(watermill.NewUUID(), []byte("x"))
				msgs = append(msgs, msg)
			}
			if err := pub.Publish(topic, msgs...); err != nil {
				errs <- err
				return
			}
			for _, m := range msgs {
				sent.Store(m.UUID, true)
			}
		}()
		if i%10 == 5 {
			if err := p.Drop(); err != nil { // cut with publishes in flight
				t.Fatal(err)
			}
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("Publish across connection drops: %v", err)
	}
	out, err := sub.Subscribe(ctxT(t, 60*time.Second), topic)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for len(seen) < batches*perBatch {
		msg := receive(t, out)
		seen[msg.UUID] = true
		msg.Ack()
	}
	sent.Range(func(k, _ any) bool {
		if !seen[k.(string)] {
			t.Errorf("confirmed message %s never arrived", k)
		}
		return true
	})
}

func TestPoisonMessageIsDeadLetteredOnce(t *testing.T) {
	b := rabbittest.Shared(t)
	c := openConn(t, b.URL)
	ops, err := broker.NewOps(c, broker.OpsConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer ops.Close(context.Background())
	ctx := ctxT(t, 30*time.Second)
	dlq := b.Name("dlq")
	if _, err := ops.DeclareQueue(ctx, topology.QueueSpec{Name: dlq}); err != nil {
		t.Fatal(err)
	}
	m := warren.QueuePerTopic{Prefix: b.Prefix, QueueArgs: topology.QueueArgs{DeadLetterRoutingKey: dlq}}
	var poisoned atomic.Int32
	pub, sub := newPubSub(t, c, warren.PublisherConfig{Mapping: m}, warren.SubscriberConfig{
		Mapping:   m,
		Marshaler: pickyMarshaler{},
		OnPoison:  func(*warren.PoisonError) error { poisoned.Add(1); return errors.New("to the DLX") },
	})
	out, err := sub.Subscribe(ctx, "poison")
	if err != nil {
		t.Fatal(err)
	}
	if err := pub.Publish("poison", message.NewMessage("bad", []byte("poison")), message.NewMessage("good", []byte("fine"))); err != nil {
		t.Fatal(err)
	}
	got := receive(t, out)
	if got.UUID != "good" {
		t.Fatalf("got %s; the poison message was handed out", got.UUID)
	}
	got.Ack()
	var info broker.QueueInfo
	rabbittest.Eventually(t, 10*time.Second, "the poison message in the dead-letter queue", func() bool {
		var err error
		info, err = ops.Inspect(ctx, dlq)
		return err == nil && info.Messages == 1
	}, func() string { return fmt.Sprintf("it holds %+v", info) })
	// Settled for good: nothing of it is left in the work queue, ready or
	// unacknowledged, so no requeue loop can follow.
	b.WaitSettled(t, b.Prefix+"poison", 10*time.Second)
	if n := poisoned.Load(); n != 1 || sub.Stats().Poison != 1 {
		t.Fatalf("poison reported %d times (stats %+v), want once", n, sub.Stats())
	}
}

type pickyMarshaler struct{ warren.DefaultMarshaler }

func (p pickyMarshaler) Unmarshal(d *amqp.Delivery) (*message.Message, error) {
	if string(d.Body) == "poison" {
		return nil, errors.New("cannot decode")
	}
	return p.DefaultMarshaler.Unmarshal(d)
}

func TestNackDispositionFromAck(t *testing.T) {
	b := rabbittest.Shared(t)
	c := openConn(t, b.URL)
	ops, _ := broker.NewOps(c, broker.OpsConfig{})
	defer ops.Close(context.Background())
	ctx := ctxT(t, 30*time.Second)
	dlq := b.Name("dlq")
	if _, err := ops.DeclareQueue(ctx, topology.QueueSpec{Name: dlq}); err != nil {
		t.Fatal(err)
	}
	m := warren.QueuePerTopic{Prefix: b.Prefix, QueueArgs: topology.QueueArgs{DeadLetterRoutingKey: dlq}}
	pub, sub := newPubSub(t, c, warren.PublisherConfig{Mapping: m}, warren.SubscriberConfig{Mapping: m})
	out, err := sub.Subscribe(ctx, "disp")
	if err != nil {
		t.Fatal(err)
	}
	_ = pub.Publish("disp", message.NewMessage("a", nil))
	got := receive(t, out)
	got.Nack() // default: requeue
	again := receive(t, out)
	if again.UUID != "a" {
		t.Fatal("a plain Nack did not requeue")
	}
	if info, _ := ack.InfoOf(again); !info.Redelivered || ack.Attempt(again) != 2 {
		t.Fatalf("requeued delivery: %+v attempt %d", info, ack.Attempt(again))
	}
	ack.Set(again, ack.Reject, errors.New("bad"))
	again.Nack()
	rabbittest.Eventually(t, 10*time.Second, "the Reject disposition dead-lettering", func() bool {
		info, _ := ops.Inspect(ctx, dlq)
		return info.Messages == 1
	})
}

func TestMaxInFlightHandsOutManyAtOnce(t *testing.T) {
	b := rabbittest.Shared(t)
	c := openConn(t, b.URL)
	m := warren.QueuePerTopic{Prefix: b.Prefix}
	pub, sub := newPubSub(t, c, warren.PublisherConfig{Mapping: m}, warren.SubscriberConfig{Mapping: m, MaxInFlight: 8})
	out, err := sub.Subscribe(ctxT(t, 30*time.Second), "parallel")
	if err != nil {
		t.Fatal(err)
	}
	var msgs []*message.Message
	for i := 0; i < 20; i++ {
		msgs = append(msgs, message.NewMessage(fmt.Sprint(i), nil))
	}
	if err := pub.Publish("parallel", msgs...); err != nil {
		t.Fatal(err)
	}
	var held []*message.Message
	for i := 0; i < 8; i++ {
		held = append(held, receive(t, out)) // none acked yet
	}
	select {
	case m := <-out:
		t.Fatalf("a 9th message %s came with 8 unsettled", m.UUID)
	case <-time.After(300 * time.Millisecond):
	}
	for _, m := range held {
		m.Ack()
	}
	for i := 8; i < 20; i++ {
		receive(t, out).Ack()
	}
}

func TestStaleAcksAreDroppedAndCounted(t *testing.T) {
	b := rabbittest.Shared(t)
	p := rabbittest.NewProxy(t, rabbittest.SharedAddr)
	c := openConn(t, p.URL(b.Vhost))
	m := warren.QueuePerTopic{Prefix: b.Prefix}
	pub, sub := newPubSub(t, c, warren.PublisherConfig{Mapping: m}, warren.SubscriberConfig{Mapping: m, MaxInFlight: 2})
	out, err := sub.Subscribe(ctxT(t, 60*time.Second), "stale")
	if err != nil {
		t.Fatal(err)
	}
	if err := pub.Publish("stale", message.NewMessage("s1", nil)); err != nil {
		t.Fatal(err)
	}
	first := receive(t, out)
	before, _ := ack.InfoOf(first)
	if err := p.Drop(); err != nil {
		t.Fatal(err)
	}
	// The output channel stays open; the same message comes again on the
	// new connection, while the old delivery's ack goes nowhere.
	again := receive(t, out)
	first.Ack()
	after, _ := ack.InfoOf(again)
	if again.UUID != "s1" || after.Generation <= before.Generation {
		t.Fatalf("redelivery %s generation %d (was %d)", again.UUID, after.Generation, before.Generation)
	}
	again.Ack()
	rabbittest.Eventually(t, 5*time.Second, "the stale ack counted", func() bool { return sub.Stats().StaleAcks >= 1 })
}

func TestOutputSurvivesServerCancel(t *testing.T) {
	b := rabbittest.Shared(t)
	c := openConn(t, b.URL)
	m := warren.QueuePerTopic{Prefix: b.Prefix}
	// The subscriber's log, printed if the message never comes: it failed
	// so once in CI, and whether the message then sat unacknowledged (a
	// consumer nobody reads) or never reached the queue is what to know.
	var logMu sync.Mutex
	var logBuf strings.Builder
	logger := slog.New(slog.NewTextHandler(lockedWriter{&logMu, &logBuf}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	pub, sub := newPubSub(t, c, warren.PublisherConfig{Mapping: m}, warren.SubscriberConfig{Mapping: m, Logger: logger})
	out, err := sub.Subscribe(ctxT(t, 60*time.Second), "cancelled")
	if err != nil {
		t.Fatal(err)
	}
	raw := b.Dial()
	ch, _ := raw.Channel()
	q := b.Prefix + "cancelled"
	if _, err := ch.QueueDelete(q, false, false, false); err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare(q, true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	rabbittest.Eventually(t, 10*time.Second, "the consumer back after the server cancelled it", func() bool {
		qi, err := ch.QueueDeclarePassive(q, true, false, false, false, nil)
		return err == nil && qi.Consumers == 1
	})
	if err := pub.Publish("cancelled", message.NewMessage("after-cancel", nil)); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-out:
		if got == nil || got.UUID != "after-cancel" {
			t.Fatalf("got %v", got)
		}
		got.Ack()
	case <-time.After(15 * time.Second):
		ready, unacked, err := b.Messages(q)
		qi, qerr := ch.QueueDeclarePassive(q, true, false, false, false, nil)
		logMu.Lock()
		defer logMu.Unlock()
		t.Fatalf("no message within 15s: the queue holds %d ready, %d unacknowledged (%v), %d consumers (%v); the subscriber's log:\n%s", ready, unacked, err, qi.Consumers, qerr, logBuf.String())
	}
}

// lockedWriter serialises writes to w.
type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func TestCloseIsIdempotentAndFinal(t *testing.T) {
	b := rabbittest.Shared(t)
	c := openConn(t, b.URL)
	m := warren.QueuePerTopic{Prefix: b.Prefix}
	pub, err := warren.NewPublisher(c, warren.PublisherConfig{Mapping: m})
	if err != nil {
		t.Fatal(err)
	}
	sub, err := warren.NewSubscriber(c, warren.SubscriberConfig{Mapping: m})
	if err != nil {
		t.Fatal(err)
	}
	out, err := sub.Subscribe(context.Background(), "closing")
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if err := pub.Close(); err != nil {
			t.Fatal(err)
		}
		if err := sub.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if _, ok := <-out; ok {
		t.Fatal("output channel open after Close")
	}
	if err := pub.Publish("closing", message.NewMessage("x", nil)); !errors.Is(err, conn.ErrClosed) {
		t.Fatalf("Publish after Close: %v", err)
	}
	if _, err := sub.Subscribe(context.Background(), "closing"); !errors.Is(err, conn.ErrClosed) {
		t.Fatalf("Subscribe after Close: %v", err)
	}
}

func TestBlockedBrokerMakesPublishWaitThenFail(t *testing.T) {
	n := node.Get(t)
	c := openConn(t, n.URL())
	m := warren.QueuePerTopic{}
	pub, err := warren.NewPublisher(c, warren.PublisherConfig{Mapping: m, PublishTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	if err := pub.Publish("blocked", message.NewMessage("before", nil)); err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t, 60*time.Second)
	if err := n.RaiseMemoryAlarm(ctx); err != nil {
		t.Fatal(err)
	}
	defer n.ClearMemoryAlarm(context.Background())
	// The first publish during the alarm gets the connection blocked; it
	// is not confirmed and times out. After that, Publish waits before
	// writing and fails with ErrBlocked at its deadline: nothing hangs.
	start := time.Now()
	_ = pub.Publish("blocked", message.NewMessage("during-1", nil))
	rabbittest.Eventually(t, 20*time.Second, "the connection blocked", c.Blocked)
	err = pub.Publish("blocked", message.NewMessage("during-2", nil))
	if !errors.Is(err, conn.ErrBlocked) {
		t.Fatalf("publish while blocked: %v, want ErrBlocked", err)
	}
	if d := time.Since(start); d > 25*time.Second {
		t.Fatalf("blocked publishes took %v", d)
	}
	if err := n.ClearMemoryAlarm(ctx); err != nil {
		t.Fatal(err)
	}
	rabbittest.Eventually(t, 20*time.Second, "publishing resumed after the alarm cleared", func() bool {
		err = pub.Publish("blocked", message.NewMessage("after", nil))
		return err == nil
	}, func() string { return err.Error() })
}
