package inbox_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"

	"github.com/warrenmq/warren"
	"github.com/warrenmq/warren/internal/rabbittest"
	"github.com/warrenmq/warren/middleware"
	"github.com/warrenmq/warren/retry"
	"github.com/warrenmq/warren/router"
	"github.com/warrenmq/warren/topology"
	"github.com/warrenmq/warren/warrentest"
)

// TestBatchInboxOnTheBroker: a batch route on the broker, its inbox one
// transaction per batch in PostgreSQL. 200 messages, 20 of them published
// twice and one UUID twice within a batch: every effect is applied once;
// a message that fails once (its effect in a savepoint, rolled back) is
// retried in a later batch and applied once; the duplicates are counted.
func TestBatchInboxOnTheBroker(t *testing.T) {
	pool, ib := setup(t)
	b := warrentest.New(t)
	r := b.Router(router.Config{Output: warren.PublisherConfig{Mapping: warren.ExistingQueues{}}})
	q := b.Name("billing")
	var mu sync.Mutex
	failedOnce := map[string]bool{}
	var batches int
	if err := r.AddRoute(router.Route{Name: "billing", Queue: topology.QueueSpec{Name: q, Durable: true},
		Retry: router.RetrySettings{RetryConfig: middleware.RetryConfig{MaxAttempts: 3, Backoff: retry.Backoff{InitialInterval: time.Millisecond}}},
		Batch: router.BatchSettings{Size: 50, Wait: 50 * time.Millisecond, Handler: ib.Batch(func(ctx context.Context, tx pgx.Tx, msgs []*message.Message) error {
			mu.Lock()
			batches++
			mu.Unlock()
			errs := make([]error, len(msgs))
			for i, m := range msgs {
				sp, err := tx.Begin(ctx) // a savepoint per message
				if err != nil {
					return err
				}
				if _, err := sp.Exec(ctx, "INSERT INTO effects (id, n) VALUES ($1, 1) ON CONFLICT (id) DO UPDATE SET n = effects.n + 1", m.UUID); err != nil {
					return err
				}
				mu.Lock()
				fail := strings.HasPrefix(m.UUID, "flaky") && !failedOnce[m.UUID]
				failedOnce[m.UUID] = failedOnce[m.UUID] || fail
				mu.Unlock()
				if fail {
					_ = sp.Rollback(ctx)
					errs[i] = errors.New("downstream not ready")
					continue
				}
				if err := sp.Commit(ctx); err != nil {
					return err
				}
			}
			return &router.BatchError{Errs: errs}
		})}}); err != nil {
		t.Fatal(err)
	}
	warrentest.Start(t, r)
	pub := b.Publisher(warren.PublisherConfig{Mapping: warren.ExistingQueues{}})
	var msgs []*message.Message
	for i := range 200 {
		id := fmt.Sprintf("order-%03d", i)
		if i%40 == 5 {
			id = fmt.Sprintf("flaky-%03d", i)
		}
		msgs = append(msgs, message.NewMessage(id, []byte("x")))
	}
	for i := range 20 { // published again: duplicates
		msgs = append(msgs, message.NewMessage(fmt.Sprintf("order-%03d", i*7), []byte("x")))
	}
	if err := pub.Publish(q, msgs...); err != nil {
		t.Fatal(err)
	}
	var applied int
	rabbittest.Eventually(t, 60*time.Second, "200 effects and 20 duplicates", func() bool {
		if err := pool.QueryRow(context.Background(), "SELECT count(*) FROM effects").Scan(&applied); err != nil {
			t.Fatal(err)
		}
		return applied == 200 && ib.Duplicates() == 20
	}, func() string { return fmt.Sprintf("%d effects, %d duplicates", applied, ib.Duplicates()) })
	var twice int
	if err := pool.QueryRow(context.Background(), "SELECT count(*) FROM effects WHERE n != 1").Scan(&twice); err != nil || twice != 0 {
		t.Fatalf("%d effects applied more than once (%v)", twice, err)
	}
	if got := ib.Processed(); got != 200 {
		t.Errorf("%d processed, want 200", got)
	}
	mu.Lock()
	defer mu.Unlock()
	if batches >= 220 {
		t.Errorf("%d calls for 220 messages: not batched", batches)
	}
	t.Logf("%d batch calls", batches)
}
