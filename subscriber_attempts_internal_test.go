package warren

import (
	"context"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/warrenmq/warren/ack"
	"github.com/warrenmq/warren/conn"
	"github.com/warrenmq/warren/internal/rabbittest"
	"github.com/warrenmq/warren/retry"
)

// TestAttemptCountForgottenOnAck: a message this Subscriber requeued is
// remembered by its id until its redelivery is acked; the ack forgets it
// (only a redelivered message's ack looks the count up: a first delivery
// has none to forget).
func TestAttemptCountForgottenOnAck(t *testing.T) {
	b := rabbittest.Shared(t)
	c := rabbittest.OpenConn(t, b.URL, conn.Config{})
	mapping := QueuePerTopic{Prefix: b.Prefix}
	pub, err := NewPublisher(c, PublisherConfig{Mapping: mapping})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	sub, err := NewSubscriber(c, SubscriberConfig{Mapping: mapping,
		Redelivery: RedeliveryConfig{Backoff: retry.Backoff{InitialInterval: time.Millisecond, MaxInterval: time.Millisecond}}})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := sub.Subscribe(ctx, "attempts")
	if err != nil {
		t.Fatal(err)
	}
	if err := pub.Publish("attempts", message.NewMessage("m-1", []byte("x"))); err != nil {
		t.Fatal(err)
	}
	next := func() *message.Message {
		select {
		case m := <-out:
			return m
		case <-ctx.Done():
			t.Fatal("no delivery")
			return nil
		}
	}
	first := next()
	first.Nack()
	second := next()
	if info, _ := ack.InfoOf(second); !info.Redelivered || info.PreviousAttempts != 1 {
		t.Fatalf("redelivered %v with %d previous attempts, want a redelivery after 1", info.Redelivered, info.PreviousAttempts)
	}
	if n := sub.attempts().Len(); n != 1 {
		t.Fatalf("%d attempt counts remembered while the message is out, want 1", n)
	}
	second.Ack()
	for sub.attempts().Len() != 0 {
		select {
		case <-ctx.Done():
			t.Fatal("the acked message's attempt count is still remembered")
		case <-time.After(5 * time.Millisecond):
		}
	}
}
