package bench

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/warrenmq/warren"
	"github.com/warrenmq/warren/pg/internal/pgtest"
	"github.com/warrenmq/warren/router"
	"github.com/warrenmq/warren/topology"
	"github.com/warrenmq/warren/warrentest"
)

// BenchmarkBatchRoute prints the throughput of a route that inserts each
// message into PostgreSQL in a transaction of its own (one message per
// call) against a batch route that inserts batches of 100 in one
// transaction each, the same messages on the same broker and database,
// medians of interleaved rounds.
func BenchmarkBatchRoute(b *testing.B) {
	broker := warrentest.New(b)
	pool := pgtest.Pool(b, pgtest.Database(b))
	ctx := context.Background()
	if _, err := pool.Exec(ctx, "CREATE TABLE rows (id text PRIMARY KEY)"); err != nil {
		b.Fatal(err)
	}
	const n = 5000
	var single, batched []float64
	for r := range rounds {
		for _, batch := range []bool{false, true} {
			q := fmt.Sprintf("rows-%d-%v", r, batch)
			var done atomic.Int64
			finished := make(chan struct{})
			count := func(k int) {
				if done.Add(int64(k)) == n {
					close(finished)
				}
			}
			route := router.Route{Name: q, Queue: topology.QueueSpec{Name: q, Durable: true}}
			if batch {
				route.Batch = router.BatchSettings{Size: batchSize, Handler: func(ctx context.Context, msgs []*message.Message) error {
					ids := make([]string, len(msgs))
					for i, m := range msgs {
						ids[i] = m.UUID
					}
					if _, err := pool.Exec(ctx, "INSERT INTO rows (id) SELECT unnest($1::text[])", ids); err != nil {
						return err
					}
					count(len(msgs))
					return nil
				}}
			} else {
				route.Handler = func(m *message.Message) error {
					if _, err := pool.Exec(m.Context(), "INSERT INTO rows (id) VALUES ($1)", m.UUID); err != nil {
						return err
					}
					count(1)
					return nil
				}
			}
			rt := broker.Router(router.Config{Output: warren.PublisherConfig{Mapping: warren.ExistingQueues{}}})
			if err := rt.AddRoute(route); err != nil {
				b.Fatal(err)
			}
			// The queue is filled first, so both measure handling alone.
			if _, err := rt.Ops().DeclareQueue(ctx, topology.QueueSpec{Name: q, Durable: true}); err != nil {
				b.Fatal(err)
			}
			msgs := make([]*message.Message, 0, batchSize)
			for i := range n {
				msgs = append(msgs, message.NewMessage(fmt.Sprintf("%s-%d", q, i), body))
				if len(msgs) == batchSize {
					if err := rt.Publisher().Publish(q, msgs...); err != nil {
						b.Fatal(err)
					}
					msgs = msgs[:0]
				}
			}
			start := time.Now()
			runCtx, stop := context.WithCancel(ctx)
			ran := make(chan error, 1)
			go func() { ran <- rt.Run(runCtx) }()
			select {
			case <-finished:
			case err := <-ran:
				b.Fatalf("Run: %v", err)
			case <-time.After(5 * time.Minute):
				b.Fatal("not every message handled in 5 minutes")
			}
			rate := float64(n) / time.Since(start).Seconds()
			stop()
			if err := <-ran; err != nil {
				b.Fatal(err)
			}
			if batch {
				batched = append(batched, rate)
			} else {
				single = append(single, rate)
			}
		}
	}
	printRow("batch route, PostgreSQL insert, batches of 100 (msg/s) vs 1 per call", median(batched), median(single), "msg/s")
}
