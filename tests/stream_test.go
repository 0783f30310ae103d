package tests

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/tests"

	"github.com/warrenmq/warren"
	"github.com/warrenmq/warren/internal/rabbittest"
	"github.com/warrenmq/warren/retry"
)

// TestPubSubStreams runs Watermill's universal suite with the stream preset:
// every subscriber reads the whole stream (RequireSingleInstance: several
// subscribers do not share its messages) and a new subscriber receives what
// was published before it (NewSubscriberReceivesOldMessages: unnamed
// readers, each starting at the first message; TestStreamReaderResumes
// covers named ones).
func TestPubSubStreams(t *testing.T) {
	t.Parallel()
	p := preset{"StreamPerTopic", func(string) warren.Mapping { return warren.StreamPerTopic{} }, false}
	url := func(t *testing.T) string { return rabbittest.SharedURL(sharedVhost(t)) }
	pub, group := constructors(url, p, 1)
	f := features(p, true)
	f.RequireSingleInstance = true
	f.NewSubscriberReceivesOldMessages = true
	tests.TestPubSub(t, f, pub, group)
}

// TestStreamStartOffsets: first reads the history, next only what comes
// after, an offset from there, a timestamp from that second.
func TestStreamStartOffsets(t *testing.T) {
	b := rabbittest.Shared(t)
	c := openConn(t, b.URL)
	topic := b.Name("offsets")
	pub, err := warren.NewPublisher(c, warren.PublisherConfig{Mapping: warren.StreamPerTopic{}})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	for i := 0; i < 5; i++ {
		if err := pub.Publish(topic, message.NewMessage(fmt.Sprintf("old-%d", i), nil)); err != nil {
			t.Fatal(err)
		}
	}
	read := func(start warren.StreamOffset, publishAfter []string, n int) []string {
		t.Helper()
		sub, err := warren.NewSubscriber(c, warren.SubscriberConfig{Mapping: warren.StreamPerTopic{Start: start}, CloseTimeout: 2 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		msgs, err := sub.Subscribe(ctx, topic)
		if err != nil {
			t.Fatal(err)
		}
		for _, id := range publishAfter {
			if err := pub.Publish(topic, message.NewMessage(id, nil)); err != nil {
				t.Fatal(err)
			}
		}
		var got []string
		for len(got) < n {
			select {
			case m := <-msgs:
				got = append(got, m.UUID)
				m.Ack()
			case <-ctx.Done():
				t.Fatalf("start %v: got %v, want %d messages", start, got, n)
			}
		}
		return got
	}
	if got := read(warren.StreamFirst(), nil, 5); fmt.Sprint(got) != "[old-0 old-1 old-2 old-3 old-4]" {
		t.Fatalf("first: %v", got)
	}
	if got := read(warren.StreamNext(), []string{"new-0"}, 1); fmt.Sprint(got) != "[new-0]" {
		t.Fatalf("next: %v", got)
	}
	if got := read(warren.StreamAt(3), nil, 3); fmt.Sprint(got) != "[old-3 old-4 new-0]" {
		t.Fatalf("at 3: %v", got)
	}
	if got := read(warren.StreamSince(time.Now().Add(time.Hour)), []string{"future-0"}, 1); fmt.Sprint(got) != "[future-0]" {
		t.Fatalf("since an hour from now: %v", got)
	}
}

// TestStreamReaderResumes: a named reader resumes after the last message it
// acked, whether a new subscriber takes over or the connection is cut (a
// message acked by its handler counts as read even when its channel went
// before the ack: a stream's position is the reader's); a nacked message is
// handed out again, not lost.
func TestStreamReaderResumes(t *testing.T) {
	b := rabbittest.Shared(t)
	proxy := rabbittest.NewProxy(t, rabbittest.SharedAddr)
	c := openConn(t, proxy.URL(b.Vhost))
	topic := b.Name("resume")
	mapping := warren.StreamPerTopic{Consumer: "billing"}
	b.Name("warren.offset." + topic + ".billing") // deleted with the test
	pub, err := warren.NewPublisher(c, warren.PublisherConfig{Mapping: mapping})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	for i := 0; i < 6; i++ {
		if err := pub.Publish(topic, message.NewMessage(fmt.Sprintf("m-%d", i), nil)); err != nil {
			t.Fatal(err)
		}
	}
	subscribe := func() (*warren.Subscriber, <-chan *message.Message) {
		sub, err := warren.NewSubscriber(c, warren.SubscriberConfig{Mapping: mapping, CloseTimeout: 2 * time.Second,
			Redelivery: warren.RedeliveryConfig{Backoff: retry.Backoff{InitialInterval: time.Millisecond, MaxInterval: 5 * time.Millisecond}}})
		if err != nil {
			t.Fatal(err)
		}
		msgs, err := sub.Subscribe(context.Background(), topic)
		if err != nil {
			t.Fatal(err)
		}
		return sub, msgs
	}
	next := func(msgs <-chan *message.Message) *message.Message {
		t.Helper()
		select {
		case m := <-msgs:
			return m
		case <-time.After(20 * time.Second):
			t.Fatal("no message")
			return nil
		}
	}
	sub, msgs := subscribe()
	next(msgs).Ack() // m-0
	m := next(msgs)  // m-1, nacked: handed out again
	m.Nack()
	if again := next(msgs); again.UUID != "m-1" {
		t.Fatalf("after a nack: %s, want m-1 again", again.UUID)
	} else {
		again.Ack()
	}
	if err := sub.Close(); err != nil {
		t.Fatal(err)
	}
	sub, msgs = subscribe()
	if m := next(msgs); m.UUID != "m-2" {
		t.Fatalf("a new reader of the same name starts at %s, want m-2", m.UUID)
	} else {
		m.Ack()
	}
	held := next(msgs) // m-3, not acked when the connection is cut
	proxy.Cut()
	if err := proxy.Restore(); err != nil {
		t.Fatal(err)
	}
	// The consumer resumes after the last message acked: m-3 again.
	if again := next(msgs); again.UUID != "m-3" {
		t.Fatalf("after a cut: %s, want m-3 again (it was not acked)", again.UUID)
	} else {
		again.Ack()
	}
	held.Ack() // late: its delivery went with the connection
	for _, want := range []string{"m-4", "m-5"} {
		if m := next(msgs); m.UUID != want {
			t.Fatalf("got %s, want %s", m.UUID, want)
		} else {
			m.Ack()
		}
	}
	_ = sub.Close()
}

// A stream subscription that stops with messages in hand (one the handler
// holds unsettled, others waiting to be handed out) gives them up without a
// nack: RabbitMQ 3.10 answers a nack of a stream delivery with 540, which
// closes the whole connection and cuts every publisher and subscriber on
// it (PITFALLS 35; Watermill's TestSubscribeCtx hit it now and then in CI).
func TestStreamStopNeverClosesTheConnection(t *testing.T) {
	b := rabbittest.Shared(t)
	c := openConn(t, b.URL)
	topic := b.Name("stop")
	pub, err := warren.NewPublisher(c, warren.PublisherConfig{Mapping: warren.StreamPerTopic{}})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	for i := 0; i < 5; i++ {
		if err := pub.Publish(topic, message.NewMessage(fmt.Sprintf("m-%d", i), nil)); err != nil {
			t.Fatal(err)
		}
	}
	sub, err := warren.NewSubscriber(c, warren.SubscriberConfig{Mapping: warren.StreamPerTopic{Start: warren.StreamFirst()}, CloseTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	gen := c.Generation()
	ctx, cancel := context.WithCancel(context.Background())
	msgs, err := sub.Subscribe(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	<-msgs // held, never settled: given up when CloseTimeout passes
	cancel()
	for range msgs { // the stop closes the channel; what is waiting is given up
	}
	// The same connection reads the stream again, from the first message.
	ctx2, cancel2 := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel2()
	again, err := sub.Subscribe(ctx2, topic)
	if err != nil {
		t.Fatalf("subscribing again on the same connection: %v", err)
	}
	select {
	case m := <-again:
		if m.UUID != "m-0" {
			t.Fatalf("read again from the first message, got %q", m.UUID)
		}
		m.Ack()
	case <-ctx2.Done():
		t.Fatal("no message on subscribing again")
	}
	if g := c.Generation(); g != gen {
		t.Fatalf("the connection was lost while the stream subscription stopped (generation %d, then %d): a stream delivery was nacked", gen, g)
	}
}
