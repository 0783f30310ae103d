package tests

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/warrenmq/warren"
	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/conn"
	"github.com/warrenmq/warren/internal/rabbittest"
	"github.com/warrenmq/warren/topology"
)

// exchangePerTopic publishes each topic to the exchange of that name and
// declares nothing: a topic whose exchange does not exist is refused by the
// broker.
type exchangePerTopic struct{ queue string }

func (m exchangePerTopic) Destination(topic string) (warren.Destination, error) {
	if topic == m.queue {
		return warren.Destination{RoutingKey: topic}, nil
	}
	return warren.Destination{Exchange: topic}, nil
}

func (m exchangePerTopic) Subscription(topic string) (warren.Subscription, error) {
	return warren.QueueSubscription{Queue: topic}, nil
}

// badPublishBound is how long a refused publish may take and still count as
// failing at once: far below the 30 s PublishTimeout a publish that waited
// for its confirm would take, above what a loaded machine adds (one of 215
// took over a second while make test ran six suites side by side).
const badPublishBound = 5 * time.Second

// TestRefusalsCostOtherPublishersNothing: 8 goroutines publish 1,000 good
// messages each through one Publisher while another publishes to a missing
// exchange every 10ms through the same Publisher. Every good message is
// confirmed and consumed; each bad publish fails with the 404 at once (in
// milliseconds idle; badPublishBound allows a loaded machine). The
// duplicate count is printed (PITFALLS 26: before, a few
// hundred good messages arrived hundreds of times each).
func TestRefusalsCostOtherPublishersNothing(t *testing.T) {
	b := rabbittest.Shared(t)
	c := openConn(t, b.URL)
	q := b.Name("good")
	ops, err := broker.NewOps(c, broker.OpsConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ops.Close(context.Background()) })
	if _, err := ops.DeclareQueue(ctxT(t, 10*time.Second), topology.QueueSpec{Name: q, Durable: true}); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	seen := map[string]int{}
	if _, err := ops.Consume(ctxT(t, 10*time.Second), broker.ConsumerSpec{Queue: q, AutoAck: true, PrefetchCount: 500,
		Handler: func(_ context.Context, d *broker.Delivery) {
			mu.Lock()
			seen[d.MessageId]++
			mu.Unlock()
		}}); err != nil {
		t.Fatal(err)
	}
	pub, err := warren.NewPublisher(c, warren.PublisherConfig{Mapping: exchangePerTopic{queue: q}})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()

	const goroutines, each = 8, 1000
	stop := make(chan struct{})
	var bad, badSlow atomic.Int32
	var badErr atomic.Value
	badDone := make(chan struct{})
	go func() {
		defer close(badDone)
		missing := b.Prefix + "missing"
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			start := time.Now()
			err := pub.Publish(missing, message.NewMessage(fmt.Sprint("bad-", i), []byte("x")))
			if time.Since(start) > badPublishBound {
				badSlow.Add(1)
			}
			if !errors.Is(err, conn.ErrNotFound) {
				badErr.Store(fmt.Sprintf("bad publish %d: %v, want the 404", i, err))
			}
			bad.Add(1)
		}
	}()
	var wg sync.WaitGroup
	errs := make(chan error, goroutines)
	for g := 0; g < goroutines; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				if err := pub.Publish(q, message.NewMessage(fmt.Sprintf("g%d-%d", g, i), []byte("good"))); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	<-badDone
	close(errs)
	for err := range errs {
		t.Fatalf("good publish failed: %v", err)
	}
	if v := badErr.Load(); v != nil {
		t.Fatal(v)
	}
	if badSlow.Load() > 0 {
		t.Fatalf("%d of %d bad publishes took over %v", badSlow.Load(), bad.Load(), badPublishBound)
	}
	n := 0
	rabbittest.Eventually(t, 60*time.Second, "every good message consumed", func() bool {
		mu.Lock()
		defer mu.Unlock()
		n = len(seen)
		return n == goroutines*each
	}, func() string { return fmt.Sprintf("%d of %d consumed", n, goroutines*each) })
	b.WaitSettled(t, q, 30*time.Second)
	mu.Lock()
	defer mu.Unlock()
	dups := 0
	for _, n := range seen {
		dups += n - 1
	}
	t.Logf("refusals: %d good messages confirmed and consumed, %d bad publishes refused with the 404, %d duplicates", goroutines*each, bad.Load(), dups)
	if dups > goroutines*each/100 {
		t.Fatalf("%d duplicates, over 1%% of good messages", dups)
	}
}
