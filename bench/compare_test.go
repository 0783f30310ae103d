package bench

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
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

// brokerURL is the local broker (scripts/broker.sh); WARREN_BENCH_URL
// overrides it.
func brokerURL() string {
	if u := os.Getenv("WARREN_BENCH_URL"); u != "" {
		return u
	}
	return "amqp://guest:guest@127.0.0.1:5672/"
}

const (
	bodySize = 256
	messages = 20000
	batch    = 100
	workers  = 16
)

var body = []byte(strings.Repeat("x", bodySize))

type row struct {
	group, name string
	dur         time.Duration
	n           int
}

func (r row) rate() float64 { return float64(r.n) / r.dur.Seconds() }

// rounds: every row runs this many times, rows interleaved, and the median
// is reported. The broker's own state (page cache, queue index, fsync
// batching) makes single runs differ by 2-3x whatever the client.
const rounds = 3

// BenchmarkCompare runs every row `rounds` times, interleaved, and prints
// the median msg/s of each and its ratio to raw amqp091-go of the same
// group, all measured in the same run:
//
//	cd bench && go test -run '^$' -bench Compare -benchtime 1x
func BenchmarkCompare(b *testing.B) {
	for i := 0; i < b.N; i++ {
		var all [][]row
		for r := 0; r < rounds; r++ {
			all = append(all, append(publishRows(b), consumeRows(b)...))
		}
		report(b, medians(all))
	}
}

func medians(all [][]row) []row {
	out := make([]row, len(all[0]))
	for i := range out {
		ds := make([]time.Duration, len(all))
		for r := range all {
			ds[r] = all[r][i].dur
		}
		slices.Sort(ds)
		out[i] = all[0][i]
		out[i].dur = ds[len(ds)/2]
	}
	return out
}

func report(b *testing.B, rows []row) {
	base := map[string]float64{}
	for _, r := range rows {
		if strings.HasPrefix(r.name, "raw") {
			base[r.group] = r.rate()
		}
	}
	fmt.Printf("\n%-8s %-42s %12s %10s\n", "group", "row", "msg/s", "x raw")
	for _, r := range rows {
		fmt.Printf("%-8s %-42s %12.0f %10.2f\n", r.group, r.name, r.rate(), r.rate()/base[r.group])
	}
	for _, r := range rows {
		fmt.Printf("BENCH group=%s row=%q msgs=%d seconds=%.3f msg_per_s=%.0f ratio_raw=%.3f\n",
			r.group, r.name, r.n, r.dur.Seconds(), r.rate(), r.rate()/base[r.group])
		b.ReportMetric(r.rate(), strings.ReplaceAll(r.group+"/"+r.name, " ", "_")+"-msg/s")
	}
}

func dial(b *testing.B) *amqp.Connection {
	c, err := amqp.Dial(brokerURL())
	if err != nil {
		b.Fatal(err)
	}
	return c
}

func freshQueue(b *testing.B, name string) {
	c := dial(b)
	defer c.Close()
	ch, _ := c.Channel()
	_, _ = ch.QueueDelete(name, false, false, false)
	if _, err := ch.QueueDeclare(name, true, false, false, false, nil); err != nil {
		b.Fatal(err)
	}
}

func dropQueue(name string) {
	c, err := amqp.Dial(brokerURL())
	if err != nil {
		return
	}
	defer c.Close()
	ch, _ := c.Channel()
	_, _ = ch.QueueDelete(name, false, false, false)
}

func openWarren(b *testing.B) *conn.Conn {
	c, err := conn.New(brokerURL(), conn.Config{})
	if err != nil {
		b.Fatal(err)
	}
	if err := c.Open(context.Background()); err != nil {
		b.Fatal(err)
	}
	return c
}

func timed(f func()) time.Duration {
	start := time.Now()
	f()
	return time.Since(start)
}

// rawPublish publishes n persistent messages on one confirm channel in
// pipelined windows of `window`, waiting for each window's confirms.
func rawPublish(b *testing.B, q string, n, window int) {
	c := dial(b)
	defer c.Close()
	ch, _ := c.Channel()
	if err := ch.Confirm(false); err != nil {
		b.Fatal(err)
	}
	confirms := ch.NotifyPublish(make(chan amqp.Confirmation, window))
	ctx := context.Background()
	for sent := 0; sent < n; {
		w := min(window, n-sent)
		for j := 0; j < w; j++ {
			if err := ch.PublishWithContext(ctx, "", q, false, false, amqp.Publishing{DeliveryMode: amqp.Persistent, Body: body}); err != nil {
				b.Fatal(err)
			}
		}
		for j := 0; j < w; j++ {
			if c := <-confirms; !c.Ack {
				b.Fatal("nack")
			}
		}
		sent += w
	}
}

func publishRows(b *testing.B) []row {
	q := "warren.bench.publish"
	defer dropQueue(q)
	var rows []row

	freshQueue(b, q)
	rows = append(rows, row{"publish", "raw amqp091-go (confirm windows of 100)", timed(func() { rawPublish(b, q, messages, batch) }), messages})

	wc := openWarren(b)
	defer wc.Close(context.Background())
	pub, err := warren.NewPublisher(wc, warren.PublisherConfig{})
	if err != nil {
		b.Fatal(err)
	}
	defer pub.Close()
	_ = pub.Publish(q, message.NewMessage(watermill.NewUUID(), body)) // declare the route outside the timing
	freshQueue(b, q)
	d := timed(func() {
		for sent := 0; sent < messages; sent += batch {
			msgs := make([]*message.Message, batch)
			for j := range msgs {
				msgs[j] = message.NewMessage(watermill.NewUUID(), body)
			}
			if err := pub.Publish(q, msgs...); err != nil {
				b.Fatal(err)
			}
		}
	})
	rows = append(rows, row{"publish", "warren 1 goroutine, batches of 100", d, messages})

	freshQueue(b, q)
	rows = append(rows, row{"publish16", "raw amqp091-go (16 goroutines, deferred confirm each)", timed(func() { rawPublishParallel(b, q) }), messages})

	freshQueue(b, q)
	rows = append(rows, row{"publish16", "warren 16 goroutines, 1 message per call", timed(func() {
		parallel(messages, workers, func() error { return pub.Publish(q, message.NewMessage(watermill.NewUUID(), body)) })
	}), messages})

	wcfg := wamqp.NewDurableQueueConfig(brokerURL())
	wcfg.Publish.ConfirmDelivery = true
	wcfg.Publish.ChannelPoolSize = workers
	wpub, err := wamqp.NewPublisher(wcfg, watermill.NopLogger{})
	if err != nil {
		b.Fatal(err)
	}
	defer wpub.Close()
	_ = wpub.Publish(q, message.NewMessage(watermill.NewUUID(), body))
	freshQueue(b, q)
	rows = append(rows, row{"publish16", "watermill-amqp v3.0.2 (confirms, pool 16, 16 goroutines)", timed(func() {
		parallel(messages, workers, func() error { return wpub.Publish(q, message.NewMessage(watermill.NewUUID(), body)) })
	}), messages})
	return rows
}

// rawPublishParallel: 16 goroutines share one confirm channel, each
// publishing one message and waiting for its confirm, the like-for-like
// baseline of 16 callers publishing one message each.
func rawPublishParallel(b *testing.B, q string) {
	c := dial(b)
	defer c.Close()
	ch, _ := c.Channel()
	if err := ch.Confirm(false); err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	parallel(messages, workers, func() error {
		dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, "", q, false, false, amqp.Publishing{DeliveryMode: amqp.Persistent, Body: body})
		if err != nil {
			return err
		}
		if !dc.Wait() {
			return fmt.Errorf("nack")
		}
		return nil
	})
}

func parallel(n, workers int, f func() error) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(n) {
				if err := f(); err != nil {
					panic(err)
				}
			}
		}()
	}
	wg.Wait()
}

func consumeRows(b *testing.B) []row {
	q := "warren.bench.consume"
	defer dropQueue(q)
	fill := func() {
		freshQueue(b, q)
		rawPublish(b, q, messages, 1000)
	}
	var rows []row

	fill()
	rows = append(rows, row{"consume", "raw amqp091-go (prefetch 256, manual ack)", timed(func() {
		c := dial(b)
		defer c.Close()
		ch, _ := c.Channel()
		_ = ch.Qos(256, 0, false)
		ds, err := ch.Consume(q, "", false, false, false, false, nil)
		if err != nil {
			b.Fatal(err)
		}
		for i := 0; i < messages; i++ {
			d := <-ds
			_ = d.Ack(false)
		}
	}), messages})

	for _, inFlight := range []int{1, 64} {
		fill()
		wc := openWarren(b)
		sub, err := warren.NewSubscriber(wc, warren.SubscriberConfig{MaxInFlight: inFlight, Prefetch: 256})
		if err != nil {
			b.Fatal(err)
		}
		d := timed(func() {
			out, err := sub.Subscribe(context.Background(), q)
			if err != nil {
				b.Fatal(err)
			}
			for i := 0; i < messages; i++ {
				(<-out).Ack()
			}
		})
		rows = append(rows, row{"consume", fmt.Sprintf("warren Subscriber MaxInFlight %d", inFlight), d, messages})
		_ = sub.Close()
		_ = wc.Close(context.Background())
	}

	fill()
	wcfg := wamqp.NewDurableQueueConfig(brokerURL())
	wcfg.Consume.Qos.PrefetchCount = 256
	wsub, err := wamqp.NewSubscriber(wcfg, watermill.NopLogger{})
	if err != nil {
		b.Fatal(err)
	}
	router, err := message.NewRouter(message.RouterConfig{}, watermill.NopLogger{})
	if err != nil {
		b.Fatal(err)
	}
	var got atomic.Int64
	done := make(chan struct{})
	router.AddConsumerHandler("bench", q, wsub, func(*message.Message) error {
		if got.Add(1) == messages {
			close(done)
		}
		return nil
	})
	d := timed(func() {
		go func() { _ = router.Run(context.Background()) }()
		<-done
	})
	rows = append(rows, row{"consume", "watermill-amqp v3.0.2 on a Watermill router", d, messages})
	_ = router.Close()
	return rows
}
