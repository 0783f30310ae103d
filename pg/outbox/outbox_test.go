package outbox_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5/pgxpool"
	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx", for the database/sql path

	"github.com/warrenmq/warren"
	"github.com/warrenmq/warren/conn"
	"github.com/warrenmq/warren/pg/internal/pgtest"
	"github.com/warrenmq/warren/pg/outbox"
)

// recorder is a publisher that records what it was given, in order, and
// can refuse: it stands in for the broker where a test is about the
// database side (the broker side is TestEffectivelyOnceUnderFaults).
type recorder struct {
	mu   sync.Mutex
	got  []string // topic/uuid
	fail func(topic string, msgs []*message.Message) error
	seen chan struct{}
}

func newRecorder() *recorder { return &recorder{seen: make(chan struct{}, 100000)} }

func (r *recorder) Publish(topic string, msgs ...*message.Message) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail != nil {
		if err := r.fail(topic, msgs); err != nil {
			var pe *warren.PublishError
			if errors.As(err, &pe) {
				for _, m := range msgs {
					if pe.Failed[m.UUID] == nil {
						r.got = append(r.got, topic+"/"+m.UUID)
						r.seen <- struct{}{}
					}
				}
			}
			return err
		}
	}
	for _, m := range msgs {
		r.got = append(r.got, topic+"/"+m.UUID)
		r.seen <- struct{}{}
	}
	return nil
}

func (r *recorder) Close() error { return nil }

func (r *recorder) published() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.got...)
}

// waitFor waits until n publishes were recorded.
func (r *recorder) waitFor(t *testing.T, n int, within time.Duration) {
	t.Helper()
	deadline := time.After(within)
	for len(r.published()) < n {
		select {
		case <-r.seen:
		case <-deadline:
			t.Fatalf("published %d of %d within %v: %v", len(r.published()), n, within, r.published())
		}
	}
}

func setup(t *testing.T) (*pgxpool.Pool, string, *outbox.Outbox) {
	t.Helper()
	dsn := pgtest.Database(t)
	pool := pgtest.Pool(t, dsn)
	ob, err := outbox.New(outbox.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if err := ob.Migrate(context.Background(), outbox.Pgx(pool)); err != nil {
		t.Fatal(err)
	}
	return pool, dsn, ob
}

func runRelay(t *testing.T, cfg outbox.RelayConfig) *outbox.Relay {
	t.Helper()
	r, err := outbox.NewRelay(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("relay: %v", err)
		}
	})
	return r
}

// waitStats polls the relay's counters until ok, with a deadline.
func waitStats(t *testing.T, r *outbox.Relay, ok func(outbox.RelayStats) bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !ok(r.Stats()) {
		if time.Now().After(deadline) {
			t.Fatalf("relay stats %+v", r.Stats())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func msg(id string) *message.Message { return message.NewMessage(id, []byte("payload of "+id)) }

// TestCommittedPublishedRolledBackNot: database/sql and pgx transactions
// alike; what commits is published (woken by NOTIFY, not by polling), what
// rolls back never is.
func TestCommittedPublishedRolledBackNot(t *testing.T) {
	pool, dsn, ob := setup(t)
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	pub := newRecorder()
	// An hour between polls: only the notification can wake the relay.
	r := runRelay(t, outbox.RelayConfig{Pool: pool, Publisher: pub, PollInterval: time.Hour})

	stx, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := ob.Write(ctx, stx, "orders", msg("sql-1"), msg("sql-2")); err != nil {
		t.Fatal(err)
	}
	if err := stx.Commit(); err != nil {
		t.Fatal(err)
	}
	rolled, _ := db.BeginTx(ctx, nil)
	if err := ob.Write(ctx, rolled, "orders", msg("rolled-back")); err != nil {
		t.Fatal(err)
	}
	_ = rolled.Rollback()
	ptx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := ob.Write(ctx, outbox.Pgx(ptx), "orders", msg("pgx-1")); err != nil {
		t.Fatal(err)
	}
	if err := ptx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	pub.waitFor(t, 3, 10*time.Second)
	if got := fmt.Sprint(pub.published()); got != "[orders/sql-1 orders/sql-2 orders/pgx-1]" {
		t.Fatalf("published %s", got)
	}
	waitStats(t, r, func(s outbox.RelayStats) bool { return s.Published == 3 })
	// By default a published row is deleted in the pass that sent it.
	var left int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM warren_outbox").Scan(&left); err != nil || left != 0 {
		t.Fatalf("%d rows left after publishing (%v)", left, err)
	}
	if s := r.Stats(); s.Deleted != 3 {
		t.Fatalf("stats %+v: want 3 deleted", s)
	}
}

// TestRetentionKeepsPublishedRowsMarked: with Retention a published row
// stays, marked published_at; a relay with the default (Retention 0)
// deletes what an earlier configuration kept.
func TestRetentionKeepsPublishedRowsMarked(t *testing.T) {
	pool, _, ob := setup(t)
	ctx := context.Background()
	tx, _ := pool.Begin(ctx)
	if err := ob.Write(ctx, outbox.Pgx(tx), "orders", msg("a"), msg("b")); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	keeper, err := outbox.NewRelay(outbox.RelayConfig{Pool: pool, Publisher: newRecorder(), Retention: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	kctx, stop := context.WithCancel(ctx)
	kept := make(chan error, 1)
	go func() { kept <- keeper.Run(kctx) }()
	waitStats(t, keeper, func(s outbox.RelayStats) bool { return s.Published == 2 })
	stop()
	if err := <-kept; err != nil {
		t.Fatal(err)
	}
	var marked int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM warren_outbox WHERE published_at IS NOT NULL").Scan(&marked); err != nil || marked != 2 {
		t.Fatalf("%d rows kept marked published (%v), want 2", marked, err)
	}
	if s := keeper.Stats(); s.Deleted != 0 {
		t.Fatalf("stats %+v: a relay with Retention deleted rows", s)
	}
	r := runRelay(t, outbox.RelayConfig{Pool: pool, Publisher: newRecorder(), CleanupInterval: 10 * time.Millisecond, PollInterval: 10 * time.Millisecond})
	waitStats(t, r, func(s outbox.RelayStats) bool { return s.Deleted == 2 })
	var left int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM warren_outbox").Scan(&left); err != nil || left != 0 {
		t.Fatalf("%d rows left (%v)", left, err)
	}
}

// TestCommitBeforeTheRelayListensIsPublished: a row committed after the
// relay's first look found nothing and before its LISTEN (no notification
// reaches it) is published at once, not at the next poll.
func TestCommitBeforeTheRelayListensIsPublished(t *testing.T) {
	pool, _, ob := setup(t)
	ctx := context.Background()
	var once sync.Once
	t.Cleanup(outbox.SetBeforeListen(func() {
		once.Do(func() {
			tx, err := pool.Begin(ctx)
			if err != nil {
				t.Error(err)
				return
			}
			if err := ob.Write(ctx, outbox.Pgx(tx), "orders", msg("unheard")); err != nil {
				t.Error(err)
			}
			if err := tx.Commit(ctx); err != nil {
				t.Error(err)
			}
		})
	}))
	pub := newRecorder()
	runRelay(t, outbox.RelayConfig{Pool: pool, Publisher: pub, PollInterval: time.Hour})
	pub.waitFor(t, 1, 10*time.Second)
	if got := fmt.Sprint(pub.published()); got != "[orders/unheard]" {
		t.Fatalf("published %s", got)
	}
}

// TestOrderPerKeyAcrossRelays: three relays share the outbox; each key's
// messages are published in order, none twice.
func TestOrderPerKeyAcrossRelays(t *testing.T) {
	pool, _, ob := setup(t)
	ctx := context.Background()
	const keys, per = 6, 150
	for n := range per {
		tx, err := pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for k := range keys {
			if err := ob.WriteKeyed(ctx, outbox.Pgx(tx), "events", fmt.Sprintf("key-%d", k), msg(fmt.Sprintf("%d:%04d", k, n))); err != nil {
				t.Fatal(err)
			}
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
	}
	pub := newRecorder()
	for range 3 {
		runRelay(t, outbox.RelayConfig{Pool: pool, Publisher: pub, Batch: 20, PollInterval: 50 * time.Millisecond})
	}
	pub.waitFor(t, keys*per, 30*time.Second)
	last := map[string]string{}
	seen := map[string]bool{}
	for _, p := range pub.published() {
		if seen[p] {
			t.Fatalf("%s published twice", p)
		}
		seen[p] = true
		var k int
		var n string
		fmt.Sscanf(p, "events/%d:%s", &k, &n)
		key := fmt.Sprint(k)
		if n <= last[key] {
			t.Fatalf("key %s: %s published after %s", key, n, last[key])
		}
		last[key] = n
	}
}

// TestPoisonRowSetAsideTransientRetried: a row the broker refuses for good
// is set aside with its error and the rest go on; a transient failure
// delays rows and loses none.
func TestPoisonRowSetAsideTransientRetried(t *testing.T) {
	pool, _, ob := setup(t)
	ctx := context.Background()
	tx, _ := pool.Begin(ctx)
	if err := ob.Write(ctx, outbox.Pgx(tx), "orders", msg("a"), msg("refused"), msg("b"), msg("c")); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	// A row no message can be made of (metadata that is not an object), as
	// another writer or a manual fix might leave it.
	if _, err := pool.Exec(ctx, "INSERT INTO warren_outbox (topic, order_key, uuid, payload, metadata) VALUES ('orders', 'orders', 'garbled', '', '[1, 2]')"); err != nil {
		t.Fatal(err)
	}
	pub := newRecorder()
	timeouts := 2
	pub.fail = func(topic string, msgs []*message.Message) error {
		failed := map[string]error{}
		for _, m := range msgs {
			if m.UUID == "refused" {
				failed[m.UUID] = fmt.Errorf("no exchange: %w", conn.ErrNotFound)
			}
			if m.UUID == "b" && timeouts > 0 {
				timeouts--
				failed[m.UUID] = warren.ErrPublishTimeout
			}
		}
		if len(failed) == 0 {
			return nil
		}
		return &warren.PublishError{Topic: topic, Failed: failed}
	}
	r := runRelay(t, outbox.RelayConfig{Pool: pool, Publisher: pub, PollInterval: 20 * time.Millisecond})
	// a is published first; b times out twice, so b and c go again; c was
	// confirmed after b's timeout and is sent again with b, in order.
	waitStats(t, r, func(s outbox.RelayStats) bool { return s.Published >= 3 && s.SetAside == 2 })
	var why string
	if err := pool.QueryRow(ctx, "SELECT error FROM warren_outbox WHERE uuid = 'refused' AND failed_at IS NOT NULL").Scan(&why); err != nil {
		t.Fatalf("refused row not set aside: %v", err)
	}
	if err := pool.QueryRow(ctx, "SELECT error FROM warren_outbox WHERE uuid = 'garbled' AND failed_at IS NOT NULL").Scan(&why); err != nil {
		t.Fatalf("garbled row not set aside: %v", err)
	}
	if r.Stats().SetAside != 2 || why == "" {
		t.Fatalf("set aside %d, error %q", r.Stats().SetAside, why)
	}
	got := pub.published()
	if got[0] != "orders/a" || got[len(got)-2] != "orders/b" || got[len(got)-1] != "orders/c" {
		t.Fatalf("published %v: want a first and b, c last, in order", got)
	}
}

// TestRetentionDeletesPublishedRows: published rows past Retention are
// deleted; pending and set-aside rows stay.
func TestRetentionDeletesPublishedRows(t *testing.T) {
	pool, _, ob := setup(t)
	ctx := context.Background()
	tx, _ := pool.Begin(ctx)
	_ = ob.Write(ctx, outbox.Pgx(tx), "orders", msg("old"), msg("kept"))
	_ = tx.Commit(ctx)
	if _, err := pool.Exec(ctx, "UPDATE warren_outbox SET published_at = now() - interval '2 hours' WHERE uuid = 'old'"); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, "UPDATE warren_outbox SET failed_at = now() - interval '2 hours', error = 'refused' WHERE uuid = 'kept'"); err != nil {
		t.Fatal(err)
	}
	r := runRelay(t, outbox.RelayConfig{Pool: pool, Publisher: newRecorder(), Retention: time.Hour, CleanupInterval: 10 * time.Millisecond, PollInterval: 10 * time.Millisecond})
	waitStats(t, r, func(s outbox.RelayStats) bool { return s.Deleted >= 1 })
	var left int
	_ = pool.QueryRow(ctx, "SELECT count(*) FROM warren_outbox").Scan(&left)
	if left != 1 {
		t.Fatalf("%d rows left, want the set-aside one", left)
	}
}

// TestBadInput: clear errors, nothing written.
func TestBadInput(t *testing.T) {
	if _, err := outbox.New(outbox.Config{Table: "Robert'); DROP TABLE students;--"}); !errors.Is(err, outbox.ErrInvalidConfig) {
		t.Fatalf("bad table: %v", err)
	}
	if _, err := outbox.NewRelay(outbox.RelayConfig{}); !errors.Is(err, outbox.ErrInvalidConfig) {
		t.Fatalf("empty relay config: %v", err)
	}
	pool, _, ob := setup(t)
	ctx := context.Background()
	for name, call := range map[string]func() error{
		"empty topic": func() error { return ob.Write(ctx, outbox.Pgx(pool), "", msg("x")) },
		"nil message": func() error { return ob.Write(ctx, outbox.Pgx(pool), "t", nil) },
		"no uuid":     func() error { return ob.Write(ctx, outbox.Pgx(pool), "t", message.NewMessage("", nil)) },
	} {
		if err := call(); !errors.Is(err, outbox.ErrInvalidMessage) {
			t.Errorf("%s: %v", name, err)
		}
	}
	var n int
	_ = pool.QueryRow(ctx, "SELECT count(*) FROM warren_outbox").Scan(&n)
	if n != 0 {
		t.Fatalf("%d rows written by bad calls", n)
	}
}
