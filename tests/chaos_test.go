package tests

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/warrenmq/warren"
	"github.com/warrenmq/warren/internal/rabbittest"
)

// soak reports whether the long variants run (make soak).
func soak() bool { return os.Getenv("WARREN_SOAK") != "" }

// TestChaos: 8 publishers with confirms while the fault proxy cuts the
// connection every 2s and the broker restarts twice; 4 consumers with manual
// ack and MaxInFlight 8. Every confirmed message is consumed at least once;
// duplicates are counted; memory stays bounded. make test runs 8 x 500
// messages, make soak 8 x 5,000.
func TestChaos(t *testing.T) {
	perPublisher := 500
	if soak() {
		perPublisher = 5000
	}
	const publishers, consumers = 8, 4
	total := publishers * perPublisher
	n := node.Get(t)
	p := rabbittest.NewProxy(t, n.Addr())
	pubConn := openConn(t, p.URL("/"))
	subConn := openConn(t, p.URL("/"))
	m := warren.QueuePerTopic{}
	topic := fmt.Sprintf("chaos-%d", time.Now().UnixNano())
	pub, err := warren.NewPublisher(pubConn, warren.PublisherConfig{Mapping: m, PublishTimeout: 2 * time.Minute, Logger: debugLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	goroutinesBefore := runtime.NumGoroutine()

	var mu sync.Mutex
	received := map[string]int{}
	var subs []*warren.Subscriber
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var consumersWG sync.WaitGroup
	for i := 0; i < consumers; i++ {
		sub, err := warren.NewSubscriber(subConn, warren.SubscriberConfig{Mapping: m, MaxInFlight: 8, CloseTimeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		subs = append(subs, sub)
		out, err := sub.Subscribe(ctx, topic)
		if err != nil {
			t.Fatal(err)
		}
		consumersWG.Add(1)
		go func() {
			defer consumersWG.Done()
			for msg := range out {
				mu.Lock()
				received[msg.UUID]++
				mu.Unlock()
				msg.Ack()
			}
		}()
	}

	var published sync.Map
	var pubWG sync.WaitGroup
	var sent atomic.Int64
	var failures atomic.Int64
	for w := 0; w < publishers; w++ {
		pubWG.Add(1)
		go func() {
			defer pubWG.Done()
			for i := 0; i < perPublisher; i++ {
				id := fmt.Sprintf("p%d-%d", w, i)
				for {
					if err := pub.Publish(topic, message.NewMessage(id, []byte("chaos"))); err == nil {
						break
					}
					failures.Add(1)
				}
				published.Store(id, true)
				sent.Add(1)
				time.Sleep(20 * time.Millisecond) // spread the run over the faults
			}
		}()
	}

	// The chaos, placed by progress rather than by the clock: ten faults
	// spread over the run (at every tenth of the messages sent), the third
	// and the seventh a broker restart, the others a connection cut. A fault
	// waits for the previous one's reconnect, so each one hits a live run.
	chaosDone := make(chan struct{})
	var cuts, restarts int
	var peakHeap uint64
	go func() {
		defer close(chaosDone)
		for k := 1; k <= 10; k++ {
			for sent.Load() < int64(total*k/11) {
				var ms runtime.MemStats
				runtime.ReadMemStats(&ms)
				peakHeap = max(peakHeap, ms.HeapAlloc)
				time.Sleep(10 * time.Millisecond) // poll the progress
			}
			if k == 3 || k == 7 {
				restarts++
				if err := n.Restart(); err != nil {
					t.Errorf("restart: %v", err)
					return
				}
			} else {
				if err := p.Drop(); err != nil {
					t.Errorf("cut: %v", err)
					return
				}
				cuts++
			}
			if err := pubConn.WaitConnected(ctx); err != nil {
				t.Errorf("after fault %d: %v", k, err)
				return
			}
		}
	}()
	pubWG.Wait()
	<-chaosDone

	missing := 0
	rabbittest.Eventually(t, 3*time.Minute, "every confirmed message consumed", func() bool {
		missing = 0
		mu.Lock()
		defer mu.Unlock()
		published.Range(func(k, _ any) bool {
			if received[k.(string)] == 0 {
				missing++
			}
			return true
		})
		return missing == 0
	}, func() string { return fmt.Sprintf("%d of %d never consumed", missing, total) })
	cancel()
	for _, s := range subs {
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	consumersWG.Wait()
	mu.Lock()
	duplicates := 0
	for _, c := range received {
		duplicates += c - 1
	}
	mu.Unlock()
	if restarts < 2 || cuts < 2 {
		t.Fatalf("the run ended before its faults: %d cuts, %d restarts", cuts, restarts)
	}
	if peakHeap > 512<<20 {
		t.Fatalf("heap peaked at %d MiB", peakHeap>>20)
	}
	fmt.Printf("chaos: %d messages from %d publishers, %d cuts, %d broker restarts: all consumed, %d duplicates, %d publish calls retried by the caller, peak heap %d MiB, goroutines %d while running, %d after the subscribers closed (goleak checks the end of the package)\n",
		total, publishers, cuts, restarts, duplicates, failures.Load(), peakHeap>>20, goroutinesBefore, runtime.NumGoroutine())
}

func debugLogger() *slog.Logger {
	if os.Getenv("WARREN_DEBUG") == "" {
		return nil
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}
