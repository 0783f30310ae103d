package bench

import (
	"context"
	"testing"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/warrenmq/warren"
)

// BenchmarkWarrenConsume is the consume row alone, for profiling:
//
//	go test -run '^$' -bench WarrenConsume -benchtime 1x -cpuprofile cpu.out
func BenchmarkWarrenConsume(b *testing.B) {
	q := "warren.bench.profile"
	defer dropQueue(q)
	freshQueue(b, q)
	rawPublish(b, q, messages, 1000)
	wc := openWarren(b)
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
	wc := openWarren(b)
	defer wc.Close(context.Background())
	pub, err := warren.NewPublisher(wc, warren.PublisherConfig{})
	if err != nil {
		b.Fatal(err)
	}
	defer pub.Close()
	_ = pub.Publish(q, message.NewMessage(watermill.NewUUID(), body))
	freshQueue(b, q)
	b.ResetTimer()
	parallel(messages, workers, func() error { return pub.Publish(q, message.NewMessage(watermill.NewUUID(), body)) })
}
