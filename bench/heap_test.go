package bench

import (
	"context"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"testing"

	"github.com/warrenmq/warren"
	"github.com/warrenmq/warren/broker"
)

// BenchmarkSubscriberHeap writes a heap profile of 1,000 idle
// subscriptions to heap.out, for finding what a Subscriber holds:
//
//	go test -run '^$' -bench SubscriberHeap -benchtime 1x && go tool pprof -sample_index=inuse_space heap.out
func BenchmarkSubscriberHeap(b *testing.B) {
	url, remove := vhost(b)
	defer remove()
	const n = 1000
	declareQueues(b, url, n)
	c := openWarrenAt(b, url)
	ctx := context.Background()
	defer c.Close(ctx)
	broker.RegistryOf(c)
	runtime.MemProfileRate = 1
	subs := make([]*warren.Subscriber, n)
	for i := range subs {
		s, err := warren.NewSubscriber(c, warren.SubscriberConfig{Mapping: warren.ExistingQueues{}})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := s.Subscribe(ctx, "sub.q."+strconv.Itoa(i)); err != nil {
			b.Fatal(err)
		}
		subs[i] = s
	}
	runtime.GC()
	f, _ := os.Create("heap.out")
	_ = pprof.WriteHeapProfile(f)
	f.Close()
	for _, s := range subs {
		_ = s.Close()
	}
}
