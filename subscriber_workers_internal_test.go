package warren

import (
	"bytes"
	"context"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/warrenmq/warren/conn"
	"github.com/warrenmq/warren/internal/rabbittest"
)

// goroutineID is the id runtime.Stack prints for the calling goroutine.
func goroutineID() string {
	buf := make([]byte, 64)
	buf = buf[:runtime.Stack(buf, false)]
	buf = bytes.TrimPrefix(buf, []byte("goroutine "))
	return string(buf[:bytes.IndexByte(buf, ' ')])
}

// TestIdleWorkerLastIdleFirst: with MaxInFlight 8 and all eight workers
// started by a burst, messages that then come one at a time go to the
// worker that came idle last, not in turn through all eight (a worker left
// parked keeps the stack the garbage collector shrank; one that takes the
// next message after it grows it back by copying it).
func TestIdleWorkerLastIdleFirst(t *testing.T) {
	const inFlight, oneByOne = 8, 24
	b := rabbittest.Shared(t)
	c := rabbittest.OpenConn(t, b.URL, conn.Config{})
	mapping := QueuePerTopic{Prefix: b.Prefix}
	pub, err := NewPublisher(c, PublisherConfig{Mapping: mapping})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	sub, err := NewSubscriber(c, SubscriberConfig{Mapping: mapping, MaxInFlight: inFlight, Prefetch: inFlight})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	var burst sync.WaitGroup
	burst.Add(inFlight)
	release := make(chan struct{})
	ran := make(chan string) // the goroutine each message after the burst ran on
	if err := sub.SubscribeFunc(ctx, "workers", func(m *message.Message) error {
		if m.Metadata.Get("phase") == "burst" {
			burst.Done()
			<-release // until all eight hold one: eight workers
			return nil
		}
		ran <- goroutineID()
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	publish := func(phase string, i int) {
		m := message.NewMessage(phase+strconv.Itoa(i), []byte("x"))
		m.Metadata.Set("phase", phase)
		if err := pub.Publish("workers", m); err != nil {
			t.Fatal(err)
		}
	}
	for i := range inFlight {
		publish("burst", i)
	}
	burst.Wait()
	close(release)
	used := map[string]bool{}
	for i := range oneByOne {
		publish("one", i)
		select {
		case id := <-ran:
			used[id] = true
		case <-ctx.Done():
			t.Fatalf("message %d of %d never ran", i+1, oneByOne)
		}
	}
	// The worker that ran a message may not be idle yet when the next
	// one comes (it still settles the last), so two may alternate; handed
	// out in turn, the messages went through all eight.
	if len(used) > inFlight/2 {
		t.Fatalf("%d messages one at a time ran on %d of the %d workers, want the last idle reused", oneByOne, len(used), inFlight)
	}
}
