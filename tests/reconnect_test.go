package tests

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/warrenmq/warren"
)

// TestReconnect is Watermill's TestReconnect (10,000 messages from 100
// publishers while the broker restarts at 1/3 and 1/2 of them) on a
// disposable node. Watermill's own version of the test reads the list of
// published messages while its publishers still append to it (a data race
// that -race reports, and that makes it miss the last message); this one
// has the same shape, synchronised, and checks that every confirmed message
// arrives. It runs for a queue per consumer group and for a stream (whose
// reader resumes after the last offset it acked).
func TestReconnect(t *testing.T) {
	t.Run("FanoutPerTopic", func(t *testing.T) {
		testReconnect(t, warren.FanoutPerTopic{ConsumerGroup: "reconnect"}, 8)
	})
	t.Run("StreamPerTopic", func(t *testing.T) {
		testReconnect(t, warren.StreamPerTopic{}, 1)
	})
}

func testReconnect(t *testing.T, m warren.Mapping, inFlight int) {
	const messages, publishers = 10000, 100
	n := node.Get(t)
	c := openConn(t, n.URL())
	pub, err := warren.NewPublisher(c, warren.PublisherConfig{Mapping: m, PublishTimeout: 60 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	sub, err := warren.NewSubscriber(c, warren.SubscriberConfig{Mapping: m, MaxInFlight: inFlight})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	topic := "reconnect-" + watermill.NewShortUUID()
	if err := sub.SubscribeInitialize(topic); err != nil {
		t.Fatal(err)
	}
	out, err := sub.Subscribe(context.Background(), topic)
	if err != nil {
		t.Fatal(err)
	}

	var mu sync.Mutex
	published := map[string]bool{}
	work := make(chan int)
	restarts := make(chan error, 2)
	go func() {
		defer close(work)
		for i := 0; i < messages; i++ {
			if i == messages/3 || i == messages/2 {
				go func() { restarts <- n.Restart() }()
			}
			work <- i
		}
	}()
	var wg sync.WaitGroup
	var publishErrors int
	for p := 0; p < publishers; p++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range work {
				msg := message.NewMessage(watermill.NewUUID(), []byte("x"))
				for {
					if err := pub.Publish(topic, msg); err == nil {
						break
					}
					mu.Lock()
					publishErrors++
					mu.Unlock()
				}
				mu.Lock()
				published[msg.UUID] = true
				mu.Unlock()
			}
		}()
	}

	received := map[string]bool{}
	duplicates := 0
	deadline := time.After(3 * time.Minute)
	publishDone := make(chan struct{})
	go func() { wg.Wait(); close(publishDone) }()
	for {
		select {
		case msg := <-out:
			if received[msg.UUID] {
				duplicates++
			}
			received[msg.UUID] = true
			msg.Ack()
		case <-deadline:
			mu.Lock()
			t.Fatalf("received %d distinct of %d published", len(received), len(published))
		}
		select {
		case <-publishDone:
		default:
			continue
		}
		mu.Lock()
		missing := 0
		for id := range published {
			if !received[id] {
				missing++
			}
		}
		mu.Unlock()
		if missing == 0 {
			break
		}
	}
	for i := 0; i < 2; i++ {
		if err := <-restarts; err != nil {
			t.Fatalf("restart: %v", err)
		}
	}
	t.Logf("reconnect: %d messages published by %d publishers across 2 broker restarts, all received; %d duplicates, %d publish calls retried", messages, publishers, duplicates, publishErrors)
	if len(published) != messages {
		t.Fatalf("published %d, want %d", len(published), messages)
	}
}
