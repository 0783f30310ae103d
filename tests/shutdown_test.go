package tests

import (
	"context"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"go.uber.org/goleak"

	"github.com/warrenmq/warren"
	"github.com/warrenmq/warren/conn"
	"github.com/warrenmq/warren/internal/rabbittest"
)

// TestShutdownClosesEveryOutputOfEveryKind: for a queue, a stream and a
// partitioned topic alike, Shutdown returns only once the subscription's
// output channel is closed and every goroutine the subscriber started has
// ended (goleak, once the connection is closed too).
func TestShutdownClosesEveryOutputOfEveryKind(t *testing.T) {
	b := rabbittest.Shared(t)
	for name, mapping := range map[string]func(prefix string) warren.Mapping{
		"queue":       func(p string) warren.Mapping { return warren.QueuePerTopic{Prefix: p} },
		"stream":      func(p string) warren.Mapping { return warren.StreamPerTopic{Prefix: p, Consumer: "reader"} },
		"partitioned": func(p string) warren.Mapping { return warren.PartitionedTopic{Prefix: p, Partitions: 2} },
	} {
		t.Run(name, func(t *testing.T) {
			before := goleak.IgnoreCurrent()
			prefix := b.Name(name) + "."
			topic := "t"
			for _, q := range []string{prefix + topic, prefix + topic + ".p0", prefix + topic + ".p1", prefix + topic + ".members",
				prefix + topic + ".p0.owner", prefix + topic + ".p1.owner", "warren.offset." + prefix + topic + ".reader"} {
				b.Name(q[len(b.Prefix):]) // deleted with the test
			}
			c, err := conn.New(b.URL, conn.Config{})
			if err != nil {
				t.Fatal(err)
			}
			if err := c.Open(ctxT(t, 20*time.Second)); err != nil {
				t.Fatal(err)
			}
			m := mapping(prefix)
			sub, err := warren.NewSubscriber(c, warren.SubscriberConfig{Mapping: m})
			if err != nil {
				t.Fatal(err)
			}
			pub, err := warren.NewPublisher(c, warren.PublisherConfig{Mapping: m})
			if err != nil {
				t.Fatal(err)
			}
			out, err := sub.Subscribe(context.Background(), topic)
			if err != nil {
				t.Fatal(err)
			}
			if err := pub.Publish(topic, message.NewMessage("one", []byte("x"))); err != nil {
				t.Fatal(err)
			}
			select {
			case msg := <-out:
				msg.Ack()
			case <-ctxT(t, 30*time.Second).Done():
				t.Fatal("no message")
			}
			if err := sub.Shutdown(ctxT(t, 20*time.Second)); err != nil {
				t.Fatalf("Shutdown: %v", err)
			}
			select {
			case _, open := <-out:
				if open {
					t.Fatal("a message came after Shutdown returned")
				}
			default:
				t.Fatal("Shutdown returned with the output channel still open")
			}
			if err := pub.Close(); err != nil {
				t.Fatal(err)
			}
			if err := c.Close(ctxT(t, 20*time.Second)); err != nil {
				t.Fatal(err)
			}
			goleak.VerifyNone(t, append(rabbittest.LeakOptions(), before)...)
		})
	}
}
