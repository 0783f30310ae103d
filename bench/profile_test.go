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
