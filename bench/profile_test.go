package bench

import (
	"context"
	"testing"

	"github.com/warrenmq/warren"
	"github.com/warrenmq/warren/conn"
)

// BenchmarkWarrenConsume is the consume row alone, for profiling:
//
//	go test -run '^$' -bench WarrenConsume -benchtime 1x -cpuprofile cpu.out
func BenchmarkWarrenConsume(b *testing.B) {
	q := "warren.bench.profile"
	defer dropQueue(q)
	freshQueue(b, q)
	rawPublish(b, q, messages, 1000)
	wc := openWarren(b, conn.Config{})
	defer wc.Close(context.Background())
	sub, err := warren.NewSubscriber(wc, warren.SubscriberConfig{Prefetch: 256})
	if err != nil {
		b.Fatal(err)
	}
	defer sub.Close()
	b.ResetTimer()
	out, err := sub.Subscribe(context.Background(), q)
	if err != nil {
		b.Fatal(err)
	}
	for i := 0; i < messages; i++ {
		(<-out).Ack()
	}
}

// BenchmarkWarrenPublish16 is the 16-goroutine publish row alone, for
// profiling:
//
//	go test -run '^$' -bench WarrenPublish16 -benchtime 1x -cpuprofile cpu.out
func BenchmarkWarrenPublish16(b *testing.B) {
	q := "warren.bench.profile"
	defer dropQueue(q)
	pub, closePub := warrenPublisher(b, q, conn.Config{})
	defer closePub()
	freshQueue(b, q)
	b.ResetTimer()
	parallel(messages, workers, publishOne(pub, q))
}

// BenchmarkRouterConsume is the router CPU row alone, for profiling:
//
//	go test -run '^$' -bench RouterConsume -benchtime 1x -cpuprofile cpu.out
func BenchmarkRouterConsume(b *testing.B) {
	url, remove := vhost(b)
	defer remove()
	fillQueue(b, url, "cpu.q", routerMessages)
	b.ResetTimer()
	cpu := routerConsumeCPU(b, url, "cpu.q", routerMessages, 256)
	b.ReportMetric(float64(cpu.Microseconds())/routerMessages, "cpu-us/msg")
}

// BenchmarkSubscriberConsume is the router CPU row's queue consumed by a
// bare Subscriber (no router, no middleware): the floor under the router.
func BenchmarkSubscriberConsume(b *testing.B) {
	url, remove := vhost(b)
	defer remove()
	fillQueue(b, url, "cpu.q", routerMessages)
	c := openWarrenAt(b, url)
	ctx := context.Background()
	defer c.Close(ctx)
	sub, err := warren.NewSubscriber(c, warren.SubscriberConfig{Mapping: warren.ExistingQueues{}, Prefetch: 32})
	if err != nil {
		b.Fatal(err)
	}
	defer sub.Close()
	b.ResetTimer()
	_, cpu := measure(func() {
		out, err := sub.Subscribe(ctx, "cpu.q")
		if err != nil {
			b.Fatal(err)
		}
		for i := 0; i < routerMessages; i++ {
			(<-out).Ack()
		}
	})
	b.ReportMetric(float64(cpu.Microseconds())/routerMessages, "cpu-us/msg")
}

// BenchmarkRawConsume is the raw baseline of the router CPU row alone.
func BenchmarkRawConsume(b *testing.B) {
	url, remove := vhost(b)
	defer remove()
	fillQueue(b, url, "cpu.q", routerMessages)
	b.ResetTimer()
	cpu := rawConsumeCPU(b, url, "cpu.q", routerMessages, 32)
	b.ReportMetric(float64(cpu.Microseconds())/routerMessages, "cpu-us/msg")
}
