package warren_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/warrenmq/warren"
	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/internal/rabbittest"
	"github.com/warrenmq/warren/topology"
)

type ctxKey struct{}

// Watermill's contract (message/pubsub.go), both ways: Publish is bounded by
// each message's Context(), and a delivered message's context carries
// Subscribe's ctx.
func TestWatermillContextContract(t *testing.T) {
	b := rabbittest.Shared(t)
	c := openConn(t, b.URL)
	m := warren.QueuePerTopic{Prefix: b.Prefix}
	pub, sub := newPubSub(t, c, warren.PublisherConfig{Mapping: m}, warren.SubscriberConfig{Mapping: m, CloseTimeout: 5 * time.Second})
	subCtx, cancelSub := context.WithCancel(context.WithValue(context.Background(), ctxKey{}, "from Subscribe"))
	defer cancelSub()
	out, err := sub.Subscribe(subCtx, "contract")
	if err != nil {
		t.Fatal(err)
	}
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	gone := message.NewMessage("cancelled", []byte("x"))
	gone.SetContext(cancelled)
	err = pub.Publish("contract", message.NewMessage("first", []byte("1")), gone, message.NewMessage("last", []byte("3")))
	var pe *warren.PublishError
	if !errors.As(err, &pe) || len(pe.Failed) != 1 || !errors.Is(pe.Failed["cancelled"], context.Canceled) {
		t.Fatalf("Publish with one cancelled message: %v, want that one alone failing with its ctx error", err)
	}
	for _, want := range []string{"first", "last"} {
		got := receive(t, out)
		if got.UUID != want {
			t.Fatalf("received %s, want %s", got.UUID, want)
		}
		if v := got.Context().Value(ctxKey{}); v != "from Subscribe" {
			t.Fatalf("message context lacks Subscribe's ctx value: %v", v)
		}
		if want == "last" {
			// Subscribe's ctx ends with a message in hand: its context
			// stays live until it is settled (a graceful end).
			cancelSub()
			select {
			case <-got.Context().Done():
				t.Fatal("the message in hand was cancelled with Subscribe's ctx")
			default:
			}
		}
		got.Ack()
		select {
		case <-got.Context().Done():
		case <-time.After(5 * time.Second):
			t.Fatal("message context not cancelled after Ack")
		}
	}
	select {
	case _, ok := <-out:
		if ok {
			t.Fatal("a message after Subscribe's ctx ended")
		}
	case <-time.After(15 * time.Second):
		t.Fatal("output not closed after Subscribe's ctx ended")
	}
}

// Internal headers never reach metadata: a mandatory publish carries one
// on the wire.
func TestInternalHeadersStayInternal(t *testing.T) {
	b := rabbittest.Shared(t)
	c := openConn(t, b.URL)
	m := warren.QueuePerTopic{Prefix: b.Prefix}
	pub, sub := newPubSub(t, c, warren.PublisherConfig{Mapping: m, Mandatory: true}, warren.SubscriberConfig{Mapping: m})
	out, err := sub.Subscribe(ctxT(t, 30*time.Second), "internal")
	if err != nil {
		t.Fatal(err)
	}
	msg := message.NewMessage("m", []byte("x"))
	msg.Metadata.Set("mine", "kept")
	if err := pub.Publish("internal", msg); err != nil {
		t.Fatal(err)
	}
	got := receive(t, out)
	got.Ack()
	if got.Metadata.Get("mine") != "kept" {
		t.Fatalf("user metadata lost: %v", got.Metadata)
	}
	for k := range got.Metadata {
		if k == "warren-publish-seq" {
			t.Fatalf("internal header %q in metadata", k)
		}
	}
}

// A nil message or an invalid topic is refused before anything is declared.
func TestPublishRefusesBadArgumentsBeforeTheBroker(t *testing.T) {
	b := rabbittest.Shared(t)
	c := openConn(t, b.URL)
	pub, sub := newPubSub(t, c, warren.PublisherConfig{}, warren.SubscriberConfig{})
	if err := pub.Publish("t", message.NewMessage("1", nil), nil); !errors.Is(err, warren.ErrInvalidMessage) {
		t.Fatalf("nil message: %v", err)
	}
	if err := pub.Publish("", message.NewMessage("1", nil)); !errors.Is(err, warren.ErrInvalidTopic) {
		t.Fatalf("empty topic: %v", err)
	}
	if _, err := sub.Subscribe(ctxT(t, 5*time.Second), ""); !errors.Is(err, warren.ErrInvalidTopic) {
		t.Fatalf("subscribe to an empty topic: %v", err)
	}
	if n := len(broker.RegistryOf(c).Snapshot().Queues); n != 0 {
		t.Fatalf("%d queue(s) declared for bad input", n)
	}
}

// Publishing to a queue that the registry holds with other arguments (a
// route's queue with dead-letter arguments) uses the registered spec: no
// 406 from a different declaration.
func TestPublisherUsesTheRegisteredSpec(t *testing.T) {
	b := rabbittest.Shared(t)
	c := openConn(t, b.URL)
	ops, err := broker.NewOps(c, broker.OpsConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ops.Close(context.Background()) })
	q := b.Name("routed")
	if _, err := ops.DeclareQueue(ctxT(t, 10*time.Second), topology.QueueSpec{Name: q, Durable: true, Args: topology.QueueArgs{DeadLetterRoutingKey: q + ".dlq"}}); err != nil {
		t.Fatal(err)
	}
	pub, err := warren.NewPublisher(c, warren.PublisherConfig{}) // QueuePerTopic: a plain durable queue
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	if err := pub.Publish(q, message.NewMessage("1", []byte("x"))); err != nil {
		t.Fatalf("publish to a registered queue: %v", err)
	}
	if info, err := ops.Inspect(ctxT(t, 10*time.Second), q); err != nil || info.Messages != 1 {
		t.Fatalf("queue %+v %v", info, err)
	}
}
