package inbox_test

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/warrenmq/warren/ack"
	"github.com/warrenmq/warren/pg/inbox"
	"github.com/warrenmq/warren/pg/internal/pgtest"
	"github.com/warrenmq/warren/warrentest"
)

func setup(t *testing.T) (*pgxpool.Pool, *inbox.Inbox) {
	t.Helper()
	pool := pgtest.Pool(t, pgtest.Database(t))
	ctx := context.Background()
	if _, err := pool.Exec(ctx, "CREATE TABLE effects (id text PRIMARY KEY, n int NOT NULL)"); err != nil {
		t.Fatal(err)
	}
	ib, err := inbox.New(inbox.Config{Pool: pool, Consumer: "billing"})
	if err != nil {
		t.Fatal(err)
	}
	if err := ib.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	return pool, ib
}

// apply is a handler whose effect is a row in the inbox's transaction.
func apply(fail *bool) message.HandlerFunc {
	return func(m *message.Message) ([]*message.Message, error) {
		tx := inbox.Tx(m.Context())
		if tx == nil {
			return nil, errors.New("no transaction in the message's context")
		}
		if _, err := tx.Exec(m.Context(), "INSERT INTO effects (id, n) VALUES ($1, 1) ON CONFLICT (id) DO UPDATE SET n = effects.n + 1", m.UUID); err != nil {
			return nil, err
		}
		if fail != nil && *fail {
			return nil, errors.New("handler failed after writing")
		}
		return nil, nil
	}
}

func effect(t *testing.T, pool *pgxpool.Pool, id string) int {
	t.Helper()
	var n int
	err := pool.QueryRow(context.Background(), "SELECT n FROM effects WHERE id = $1", id).Scan(&n)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		t.Fatal(err)
	}
	return n
}

// TestDuplicateAppliedOnce: the second delivery of a message is acked
// without running the handler; a failed attempt records nothing and
// applies nothing, so the next attempt runs.
func TestDuplicateAppliedOnce(t *testing.T) {
	pool, ib := setup(t)
	fail := true
	h := ib.Middleware(apply(&fail))
	if _, err := h(message.NewMessage("order-1", nil)); err == nil {
		t.Fatal("failing handler: no error")
	}
	if effect(t, pool, "order-1") != 0 {
		t.Fatal("a failed attempt's effect was committed")
	}
	fail = false
	for range 3 {
		if _, err := h(message.NewMessage("order-1", nil)); err != nil {
			t.Fatal(err)
		}
	}
	if n := effect(t, pool, "order-1"); n != 1 || ib.Duplicates() != 2 || ib.Processed() != 1 {
		t.Fatalf("effect applied %d times, %d duplicates, %d processed", n, ib.Duplicates(), ib.Processed())
	}
}

// TestConcurrentCopiesApplyOnce: copies of one message handled at the same
// time: one applies, the others wait for it and are duplicates.
func TestConcurrentCopiesApplyOnce(t *testing.T) {
	pool, ib := setup(t)
	h := ib.Middleware(apply(nil))
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := h(message.NewMessage("order-2", nil)); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if n := effect(t, pool, "order-2"); n != 1 || ib.Duplicates() != 7 {
		t.Fatalf("effect applied %d times, %d duplicates", n, ib.Duplicates())
	}
}

// TestConsumersAreApart: the same message is processed once per consumer.
func TestConsumersAreApart(t *testing.T) {
	pool, ib := setup(t)
	other, err := inbox.New(inbox.Config{Pool: pool, Consumer: "shipping"})
	if err != nil {
		t.Fatal(err)
	}
	_, _ = ib.Middleware(apply(nil))(message.NewMessage("order-3", nil))
	_, _ = other.Middleware(apply(nil))(message.NewMessage("order-3", nil))
	if n := effect(t, pool, "order-3"); n != 2 {
		t.Fatalf("two consumers applied %d effects, want 2", n)
	}
}

// TestCleanupAndBadInput: records past Retention go; a message without a
// UUID is refused for good; a config without a pool or name is refused.
func TestCleanupAndBadInput(t *testing.T) {
	pool, ib := setup(t)
	ctx := context.Background()
	_, _ = ib.Middleware(apply(nil))(message.NewMessage("old", nil))
	_, _ = ib.Middleware(apply(nil))(message.NewMessage("new", nil))
	if _, err := pool.Exec(ctx, "UPDATE warren_inbox SET processed_at = now() - interval '8 days' WHERE message_id = 'old'"); err != nil {
		t.Fatal(err)
	}
	if n, err := ib.Cleanup(ctx); err != nil || n != 1 {
		t.Fatalf("cleanup deleted %d (%v), want 1", n, err)
	}
	if _, err := ib.Middleware(apply(nil))(message.NewMessage("", nil)); !errors.Is(err, inbox.ErrNoUUID) || ack.KindOf(err) != ack.PermanentKind {
		t.Fatalf("no UUID: %v", err)
	}
	if _, err := inbox.New(inbox.Config{}); !errors.Is(err, inbox.ErrInvalidConfig) {
		t.Fatalf("empty config: %v", err)
	}
}

func TestMain(m *testing.M) { warrentest.Main(m) }
