package bench

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wamqp "github.com/ThreeDotsLabs/watermill-amqp/v3/pkg/amqp"
	"github.com/ThreeDotsLabs/watermill/message"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren"
	"github.com/warrenmq/warren/conn"
)

// The method of ThreeDotsLabs/watermill-benchmark (pkg/publish.go,
// pkg/subscribe.go, pkg/pubsub.go's "amqp"), run for warren and
// watermill-amqp v3 side by side:
//
//   - publish: 64 goroutines take messages (a ULID, a random payload of the
//     size) from one producer and Publish them one by one; the rate is the
//     count over the time until every Publish returned;
//   - subscribe: then a Watermill router consumes the topic through 16
//     subscribers fanned in (the benchmark's multiplier), the handler acks,
//     and the rate is the count over the time until the last message was
//     handled.
//
// Each side runs with its defaults, as the benchmark does:
//   - watermill-amqp: NewDurablePubSubConfig (a fanout exchange and a
//     durable queue per topic), no publisher confirms, a connection per
//     subscriber, prefetch 0 (unlimited);
//   - warren: one connection, NewPublisher and 16 NewSubscriber with their
//     zero configs (QueuePerTopic, every publish confirmed by the broker,
//     prefetch 32 and MaxInFlight 1 per subscriber).
//
// Messages per phase: wmMessages (WARREN_BENCH_WM_MESSAGES to change it;
// the original sends 100,000 for AMQP); rounds interleave the two sides
// and the medians are reported.
const (
	wmPublishers  = 64
	wmSubscribers = 16
	wmRounds      = 3
)

func wmMessages() int {
	if n, err := strconv.Atoi(os.Getenv("WARREN_BENCH_WM_MESSAGES")); err == nil && n > 0 {
		return n
	}
	return 20000
}

// wmSide is one library under the benchmark's method.
type wmSide struct {
	name string
	// open returns a publisher and a subscriber constructor for the
	// benchmark's topic, and what closes what they share.
	open func(b *testing.B, topic string) (message.Publisher, func() (message.Subscriber, error), func())
	// drop removes the topic's broker entities.
	drop func(topic string)
}

// wmResult is one run: each phase's wall and client CPU time.
type wmResult struct{ pubWall, pubCPU, subWall, subCPU time.Duration }

// tracked wraps a subscriber constructor: closeAll closes what it made.
func tracked(newSub func() (message.Subscriber, error)) (made func() (message.Subscriber, error), closeAll func()) {
	var mu sync.Mutex
	var subs []message.Subscriber
	made = func() (message.Subscriber, error) {
		s, err := newSub()
		if err == nil {
			mu.Lock()
			subs = append(subs, s)
			mu.Unlock()
		}
		return s, err
	}
	return made, func() {
		mu.Lock()
		defer mu.Unlock()
		for _, s := range subs {
			_ = s.Close()
		}
	}
}

func wmSides() []wmSide {
	return []wmSide{
		{
			name: "warren",
			open: func(b *testing.B, topic string) (message.Publisher, func() (message.Subscriber, error), func()) {
				c := openWarren(b, conn.Config{})
				pub, err := warren.NewPublisher(c, warren.PublisherConfig{})
				if err != nil {
					b.Fatal(err)
				}
				newSub, closeSubs := tracked(func() (message.Subscriber, error) {
					return warren.NewSubscriber(c, warren.SubscriberConfig{})
				})
				return pub, newSub, func() {
					_ = pub.Close()
					closeSubs()
					_ = c.Close(context.Background())
				}
			},
			drop: dropQueue,
		},
		{
			name: "watermill-amqp v3",
			open: func(b *testing.B, topic string) (message.Publisher, func() (message.Subscriber, error), func()) {
				cfg := wamqp.NewDurablePubSubConfig(brokerURL(), func(topic string) string { return topic })
				pub, err := wamqp.NewPublisher(cfg, watermill.NopLogger{})
				if err != nil {
					b.Fatal(err)
				}
				newSub, closeSubs := tracked(func() (message.Subscriber, error) {
					return wamqp.NewSubscriber(cfg, watermill.NopLogger{})
				})
				return pub, newSub, func() {
					_ = pub.Close()
					closeSubs()
				}
			},
			drop: func(topic string) {
				dropQueue(topic)
				c, err := amqp.Dial(brokerURL())
				if err != nil {
					return
				}
				defer c.Close()
				ch, _ := c.Channel()
				_ = ch.ExchangeDelete(topic, false, false)
			},
		},
	}
}

// wmRun is one run of the method for side with messages of size bytes.
func wmRun(b *testing.B, side wmSide, size, n int) wmResult {
	topic := "wmbench_" + watermill.NewShortUUID()
	defer side.drop(topic)
	payload := make([]byte, size)
	_, _ = rand.Read(payload)

	// initialise: a subscriber subscribes once, so the queue and its
	// binding exist before the first publish.
	pub, newSub, closeAll := side.open(b, topic)
	defer closeAll()
	{
		s, err := newSub()
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		if _, err := s.Subscribe(ctx, topic); err != nil {
			b.Fatal(err)
		}
		cancel()
		_ = s.Close()
	}

	var res wmResult
	res.pubWall, res.pubCPU = measure(func() {
		work := make(chan *message.Message)
		var wg sync.WaitGroup
		for range wmPublishers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for msg := range work {
					if err := pub.Publish(topic, msg); err != nil {
						panic(err)
					}
				}
			}()
		}
		for range n {
			work <- message.NewMessage(watermill.NewULID(), payload)
		}
		close(work)
		wg.Wait()
	})

	router, err := message.NewRouter(message.RouterConfig{}, watermill.NopLogger{})
	if err != nil {
		b.Fatal(err)
	}
	var got atomic.Int64
	done := make(chan struct{})
	router.AddConsumerHandler("benchmark_read", topic, &fanIn{newSub: newSub, count: wmSubscribers}, func(msg *message.Message) error {
		if got.Add(1) == int64(n) {
			close(done)
		}
		msg.Ack()
		return nil
	})
	res.subWall, res.subCPU = measure(func() {
		go func() { _ = router.Run(context.Background()) }()
		select {
		case <-done:
		case <-time.After(5 * time.Minute):
			b.Fatalf("%s: %d of %d consumed", side.name, got.Load(), n)
		}
	})
	_ = router.Close()
	return res
}

// fanIn is watermill-benchmark's multiplier: count subscribers of one
// topic, their messages merged into one channel.
type fanIn struct {
	newSub func() (message.Subscriber, error)
	count  int
	subs   []message.Subscriber
}

func (f *fanIn) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	out := make(chan *message.Message)
	var wg sync.WaitGroup
	for range f.count {
		s, err := f.newSub()
		if err != nil {
			return nil, err
		}
		f.subs = append(f.subs, s)
		msgs, err := s.Subscribe(ctx, topic)
		if err != nil {
			return nil, err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for m := range msgs {
				out <- m
			}
		}()
	}
	go func() {
		wg.Wait()
		close(out)
	}()
	return out, nil
}

func (f *fanIn) Close() error {
	for _, s := range f.subs {
		_ = s.Close()
	}
	return nil
}

// BenchmarkWatermillMethod prints warren and watermill-amqp under
// watermill-benchmark's method, medians of interleaved rounds, and a
// TARGET line per phase and size (warren ahead with its defaults):
//
//	cd bench && go test -run '^$' -bench WatermillMethod -benchtime 1x
func BenchmarkWatermillMethod(b *testing.B) {
	n := wmMessages()
	sides := wmSides()
	sizes := []int{16, 64, 256}
	runs := map[string][]wmResult{}
	key := func(side string, size int) string { return fmt.Sprintf("%s/%d", side, size) }
	for r := range wmRounds {
		for _, size := range sizes {
			order := sides
			if r%2 == 1 {
				order = []wmSide{sides[1], sides[0]}
			}
			for _, side := range order {
				runs[key(side.name, size)] = append(runs[key(side.name, size)], wmRun(b, side, size, n))
			}
		}
	}
	med := func(rs []wmResult, f func(wmResult) time.Duration) time.Duration {
		ds := make([]time.Duration, len(rs))
		for i, r := range rs {
			ds[i] = f(r)
		}
		slices.Sort(ds)
		return ds[len(ds)/2]
	}
	rate := func(d time.Duration) float64 { return float64(n) / d.Seconds() }
	perMsg := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(n) }
	fmt.Printf("\nwatermill-benchmark's method, %d messages per phase, medians of %d interleaved rounds\n", n, wmRounds)
	fmt.Printf("%-18s %6s %12s %12s %13s %13s\n", "pub/sub", "bytes", "publish/s", "subscribe/s", "pub us/msg", "sub us/msg")
	for _, size := range sizes {
		for _, side := range sides {
			rs := runs[key(side.name, size)]
			fmt.Printf("%-18s %6d %12.0f %12.0f %13.1f %13.1f\n", side.name, size,
				rate(med(rs, func(r wmResult) time.Duration { return r.pubWall })),
				rate(med(rs, func(r wmResult) time.Duration { return r.subWall })),
				perMsg(med(rs, func(r wmResult) time.Duration { return r.pubCPU })),
				perMsg(med(rs, func(r wmResult) time.Duration { return r.subCPU })))
		}
	}
	for _, size := range sizes {
		w, a := runs[key(sides[0].name, size)], runs[key(sides[1].name, size)]
		for _, phase := range []struct {
			name string
			wall func(wmResult) time.Duration
		}{
			{"publish", func(r wmResult) time.Duration { return r.pubWall }},
			{"subscribe", func(r wmResult) time.Duration { return r.subWall }},
		} {
			ratio := rate(med(w, phase.wall)) / rate(med(a, phase.wall))
			fmt.Printf("TARGET name=%q value=%.3f want=1.0 met=%t\n",
				fmt.Sprintf("watermill-benchmark %s %dB warren / watermill-amqp", phase.name, size), ratio, ratio > 1)
		}
	}
}
