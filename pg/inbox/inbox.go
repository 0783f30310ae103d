// Package inbox makes a handler idempotent on PostgreSQL: in one
// transaction it records (consumer, message UUID), runs the handler with
// that transaction reachable from the message's context (Tx), and commits;
// the subscriber acks only after the commit. A redelivered or duplicated
// message whose UUID is recorded is acked without running the handler, and
// counted. Together with the outbox (package
// github.com/warrenmq/warren/pg/outbox) a message's effects are applied
// exactly once end to end.
//
// The middleware is a plain Watermill HandlerMiddleware: it works on a
// warren router (put it in Route.Middleware, innermost, so every retry
// attempt is a transaction of its own and retries, delayed retries and
// dead-lettering see the handler's errors as they are) and on any Watermill
// router.
//
// Messages are told apart by their UUID (AMQP message-id), which the
// publisher must set: warren's Publisher does. A handler that produces
// messages should write them with the outbox in the inbox's transaction
// (outbox.Write(ctx, outbox.Pgx(inbox.Tx(ctx)), ...)) rather than return
// them: returned messages are published after the commit, and a duplicate
// is acked without producing them again.
package inbox

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/warrenmq/warren/ack"
	"github.com/warrenmq/warren/pg/internal/sqlname"
)

// DefaultTable is the inbox table's default name.
const DefaultTable = "warren_inbox"

// ErrInvalidConfig: a Config is wrong.
var ErrInvalidConfig = errors.New("inbox: invalid config")

// ErrNoUUID: a message without a UUID cannot be told from its duplicates;
// it is refused for good (ack.Permanent: dead-lettered).
var ErrNoUUID = errors.New("inbox: message has no UUID")

// Config shapes an Inbox.
type Config struct {
	// Pool reaches the database of the handler's effects. Required.
	Pool *pgxpool.Pool
	// Consumer names the handler: the same message is processed once per
	// consumer. Required.
	Consumer string
	// Table is the inbox table. Default: DefaultTable.
	Table string
	// Retention: recorded UUIDs older than this are deleted by Cleanup.
	// It must be longer than any message can take to be redelivered or
	// duplicated. Default: 7 days.
	Retention time.Duration
}

// Inbox is the idempotent-consumer middleware of one consumer.
type Inbox struct {
	cfg        Config
	insertSQL  string
	duplicates atomic.Int64
	processed  atomic.Int64
}

// New returns an Inbox.
func New(cfg Config) (*Inbox, error) {
	if cfg.Table == "" {
		cfg.Table = DefaultTable
	}
	if cfg.Retention == 0 {
		cfg.Retention = 7 * 24 * time.Hour
	}
	var errs []error
	bad := func(field, reason string) {
		errs = append(errs, fmt.Errorf("%w: inbox.Config.%s: %s", ErrInvalidConfig, field, reason))
	}
	if cfg.Pool == nil {
		bad("Pool", "required")
	}
	if cfg.Consumer == "" {
		bad("Consumer", "required")
	}
	if !sqlname.ValidTable(cfg.Table) {
		bad("Table", fmt.Sprintf("%q: want a lower-case identifier, optionally schema.table", cfg.Table))
	}
	if cfg.Retention < 0 {
		bad("Retention", "must not be negative")
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return &Inbox{
		cfg:       cfg,
		insertSQL: fmt.Sprintf("INSERT INTO %s (consumer, message_id) VALUES ($1, $2) ON CONFLICT DO NOTHING", cfg.Table),
	}, nil
}

// Migrate creates the inbox table if it does not exist.
func (ib *Inbox) Migrate(ctx context.Context) error {
	_, err := ib.cfg.Pool.Exec(ctx, fmt.Sprintf(`
CREATE TABLE IF NOT EXISTS %[1]s (
	consumer     text        NOT NULL,
	message_id   text        NOT NULL,
	processed_at timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (consumer, message_id)
);
CREATE INDEX IF NOT EXISTS %[2]s_processed ON %[1]s (processed_at);
`, ib.cfg.Table, sqlname.Bare(ib.cfg.Table)))
	if err != nil {
		return fmt.Errorf("inbox: migrate %s: %w", ib.cfg.Table, err)
	}
	return nil
}

type txKey struct{}

// Tx is the inbox's transaction of the message whose context ctx is: the
// handler's effects written with it commit together with the record that
// the message was processed. nil outside the middleware.
func Tx(ctx context.Context) pgx.Tx {
	tx, _ := ctx.Value(txKey{}).(pgx.Tx)
	return tx
}

// Duplicates is how many messages were acked without running the handler
// because their UUID was recorded.
func (ib *Inbox) Duplicates() int64 { return ib.duplicates.Load() }

// Processed is how many messages the handler processed and committed.
func (ib *Inbox) Processed() int64 { return ib.processed.Load() }

// Middleware is the idempotent-consumer step.
func (ib *Inbox) Middleware(h message.HandlerFunc) message.HandlerFunc {
	return func(msg *message.Message) ([]*message.Message, error) {
		if msg.UUID == "" {
			return nil, ack.Permanent(ErrNoUUID)
		}
		ctx := msg.Context()
		tx, err := ib.cfg.Pool.Begin(ctx)
		if err != nil {
			return nil, fmt.Errorf("inbox: begin: %w", err)
		}
		defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }() // nothing after Commit
		// A concurrent copy of the same message waits here on the key
		// until this transaction ends, then sees it recorded.
		tag, err := tx.Exec(ctx, ib.insertSQL, ib.cfg.Consumer, msg.UUID)
		if err != nil {
			return nil, fmt.Errorf("inbox: record %s: %w", msg.UUID, err)
		}
		if tag.RowsAffected() == 0 {
			ib.duplicates.Add(1)
			return nil, nil
		}
		msg.SetContext(context.WithValue(ctx, txKey{}, tx))
		out, err := h(msg)
		msg.SetContext(ctx)
		if err != nil {
			return out, err
		}
		if err := tx.Commit(ctx); err != nil {
			// Not recorded, nothing applied: the message is not acked and
			// comes again.
			return nil, fmt.Errorf("inbox: commit %s: %w", msg.UUID, err)
		}
		ib.processed.Add(1)
		return out, nil
	}
}

// Cleanup deletes this consumer's records older than Retention, a thousand
// at a time, and returns how many.
func (ib *Inbox) Cleanup(ctx context.Context) (int64, error) {
	q := fmt.Sprintf(`DELETE FROM %[1]s WHERE (consumer, message_id) IN (
	SELECT consumer, message_id FROM %[1]s WHERE consumer = $1 AND processed_at < now() - make_interval(secs => $2) LIMIT 1000)`, ib.cfg.Table)
	var total int64
	for {
		tag, err := ib.cfg.Pool.Exec(ctx, q, ib.cfg.Consumer, ib.cfg.Retention.Seconds())
		if err != nil {
			return total, fmt.Errorf("inbox: cleanup: %w", err)
		}
		total += tag.RowsAffected()
		if tag.RowsAffected() < 1000 {
			return total, nil
		}
	}
}

// RunCleanup calls Cleanup every interval until ctx ends (then it returns
// nil); a failed cleanup is tried again at the next interval. An interval
// that is not positive is ErrInvalidConfig.
func (ib *Inbox) RunCleanup(ctx context.Context, every time.Duration) error {
	if every <= 0 {
		return fmt.Errorf("%w: RunCleanup interval %v: must be positive", ErrInvalidConfig, every)
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			_, _ = ib.Cleanup(ctx)
		}
	}
}
