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
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
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

// ErrInvalidUUID: a message whose UUID is not valid UTF-8 or holds a NUL
// byte cannot be recorded in a text column; it is refused for good
// (ack.Permanent: dead-lettered) rather than retried for ever.
var ErrInvalidUUID = errors.New("inbox: message UUID is not storable text")

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
	cfg Config
	// beginRecord opens the transaction and records the message in one
	// round trip (see record); the literals follow.
	beginRecord string
	duplicates  atomic.Int64
	processed   atomic.Int64
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
	} else if !storable(cfg.Consumer) {
		bad("Consumer", "must be valid UTF-8 without NUL bytes")
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
		cfg:         cfg,
		beginRecord: fmt.Sprintf("BEGIN; INSERT INTO %s (consumer, message_id) VALUES (%s, ", cfg.Table, literal(cfg.Consumer)),
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
		if !storable(msg.UUID) {
			return nil, ack.Permanent(fmt.Errorf("%w: %q", ErrInvalidUUID, msg.UUID))
		}
		ctx := msg.Context()
		tx, release, err := ib.record(ctx, msg.UUID)
		if errors.Is(err, errDuplicate) {
			ib.duplicates.Add(1)
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		defer release()
		defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }() // nothing after Commit
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

// errDuplicate: record found the message recorded.
var errDuplicate = errors.New("inbox: recorded before")

// record begins the message's transaction and records its UUID in it, in
// one round trip: the begin and the insert go as one simple-protocol query
// (pgx sends a TxOptions.BeginQuery as it is), so the inbox adds no round
// trip to the handler's own begin, statements and commit. The insert has
// no ON CONFLICT: a recorded UUID is a unique violation, which tells a
// duplicate without reading a row count; a concurrent copy of the same
// message waits on the key until the first transaction ends, then fails so
// (or records, if the first rolled back). The aborted transaction is rolled
// back on the same connection, which goes back to the pool. release gives
// the connection back after the transaction has ended.
func (ib *Inbox) record(ctx context.Context, uuid string) (tx pgx.Tx, release func(), err error) {
	conn, err := ib.cfg.Pool.Acquire(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("inbox: begin: %w", err)
	}
	tx, err = conn.Conn().BeginTx(ctx, pgx.TxOptions{BeginQuery: ib.beginRecord + literal(uuid) + ")"})
	if err == nil {
		return tx, conn.Release, nil
	}
	// pgx closed the connection unless the server refused the statement.
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		_, rbErr := conn.Conn().Exec(context.WithoutCancel(ctx), "ROLLBACK")
		if rbErr != nil {
			err = errors.Join(err, rbErr)
		} else if pgErr.Code == "23505" { // unique_violation
			conn.Release()
			return nil, nil, errDuplicate
		}
	}
	conn.Release() // the pool drops a connection still in a transaction
	return nil, nil, fmt.Errorf("inbox: record %s: %w", uuid, err)
}

// storable: s fits a text column and a simple-protocol query (which ends
// at a NUL byte).
func storable(s string) bool {
	return utf8.ValidString(s) && !strings.ContainsRune(s, 0)
}

// literal quotes s as an escape-string constant, which reads the same
// whatever standard_conforming_strings says. s is storable.
func literal(s string) string { return "E'" + literalEscaper.Replace(s) + "'" }

// literalEscaper doubles backslashes and quotes; made once (a Replacer
// builds its tables when made).
var literalEscaper = strings.NewReplacer(`\`, `\\`, `'`, `''`)

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
