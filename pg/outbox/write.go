package outbox

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/warrenmq/warren/payload"
	"github.com/warrenmq/warren/pg/blobstore"
	"github.com/warrenmq/warren/pg/internal/sqlname"
)

// ErrInvalidMessage: Write was given no topic, a nil message or one
// without a UUID; nothing of that call was written.
var ErrInvalidMessage = errors.New("outbox: invalid message")

// ErrInvalidConfig: a Config or RelayConfig is wrong.
var ErrInvalidConfig = errors.New("outbox: invalid config")

// ErrNilExecutor: Write, WriteKeyed or Migrate was given no transaction (a
// nil Executor, a nil *sql.Tx, Pgx(nil)); nothing was written.
var ErrNilExecutor = errors.New("outbox: nil transaction or executor")

// isNil reports a nil interface or an interface holding a nil pointer (a
// nil *sql.Tx, say), which would panic when called.
func isNil(v any) bool {
	if v == nil {
		return true
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Pointer, reflect.Interface, reflect.Map, reflect.Slice, reflect.Func, reflect.Chan:
		return rv.IsNil()
	}
	return false
}

// Executor runs a statement: *sql.Tx, *sql.DB and *sql.Conn are ones;
// Pgx adapts a pgx.Tx (or *pgx.Conn, *pgxpool.Pool).
type Executor interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// PgxExecutor is what pgx.Tx, *pgx.Conn and *pgxpool.Pool share.
type PgxExecutor interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// Pgx adapts a pgx transaction (or connection, or pool) to Executor. Given
// nil, every statement fails with ErrNilExecutor.
func Pgx(e PgxExecutor) Executor { return pgxExecutor{e} }

type pgxExecutor struct{ e PgxExecutor }

func (p pgxExecutor) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if isNil(p.e) {
		return nil, ErrNilExecutor
	}
	tag, err := p.e.Exec(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	return rowsAffected(tag.RowsAffected()), nil
}

type rowsAffected int64

func (rowsAffected) LastInsertId() (int64, error) {
	return 0, errors.New("outbox: no LastInsertId on PostgreSQL")
}
func (r rowsAffected) RowsAffected() (int64, error) { return int64(r), nil }

// Config shapes an Outbox.
type Config struct {
	// Table is the outbox table, optionally schema-qualified, lower case.
	// Default: DefaultTable.
	Table string
	// Payload, when set, encodes each message as it is written (Encode):
	// the row holds the wire body, compressed and sealed as configured,
	// and a claim-checked body goes to the blob store rather than into
	// the row. With a pg/blobstore store the blob is written in the
	// caller's transaction: it exists exactly when the messages do. Any
	// other store is written before the transaction commits; a rollback
	// leaves a blob that the store's retention removes. The relay's
	// Publisher may use the same marshaler: it passes over the steps a
	// message went through already.
	Payload *payload.Marshaler
}

// Outbox writes messages into the outbox table.
type Outbox struct {
	table   string
	notify  string
	payload *payload.Marshaler
}

// New returns an Outbox for cfg's table.
func New(cfg Config) (*Outbox, error) {
	if cfg.Table == "" {
		cfg.Table = DefaultTable
	}
	if !sqlname.ValidTable(cfg.Table) {
		return nil, fmt.Errorf("%w: outbox.Config.Table %q: want a lower-case identifier, optionally schema.table", ErrInvalidConfig, cfg.Table)
	}
	return &Outbox{table: cfg.Table, notify: fmt.Sprintf("SELECT pg_notify('%s', '')", channel(cfg.Table)), payload: cfg.Payload}, nil
}

// Migrate creates the outbox table and its indexes if they do not exist.
func (o *Outbox) Migrate(ctx context.Context, db Executor) error {
	if isNil(db) {
		return ErrNilExecutor
	}
	if _, err := db.ExecContext(ctx, schemaSQL(o.table)); err != nil {
		return fmt.Errorf("outbox: migrate %s: %w", o.table, err)
	}
	return nil
}

// Write records msgs for topic in tx, the caller's transaction: they are
// published once tx commits, in order, and never if it rolls back. Their
// order key is the topic.
func (o *Outbox) Write(ctx context.Context, tx Executor, topic string, msgs ...*message.Message) error {
	return o.WriteKeyed(ctx, tx, topic, topic, msgs...)
}

// encode is a copy of m encoded by the payload steps (the caller's
// message stays as it is), its blob written in tx where the store can.
func (o *Outbox) encode(ctx context.Context, tx Executor, m *message.Message) (*message.Message, error) {
	var store payload.Store
	if bs, ok := o.payload.ClaimCheckStore().(*blobstore.Store); ok {
		store = bs.Within(tx)
	}
	c := m.Copy()
	if err := o.payload.Encode(ctx, c, store); err != nil {
		return nil, fmt.Errorf("outbox: encode %s: %w", m.UUID, err)
	}
	return c, nil
}

// WriteKeyed is Write with an order key of the caller's (an aggregate id,
// say): messages of one key are published in order; messages of different
// keys may be published side by side by several relays.
func (o *Outbox) WriteKeyed(ctx context.Context, tx Executor, topic, key string, msgs ...*message.Message) error {
	if isNil(tx) {
		return ErrNilExecutor
	}
	if pe, ok := tx.(pgxExecutor); ok && isNil(pe.e) {
		return ErrNilExecutor
	}
	if ctx == nil {
		return fmt.Errorf("%w: nil context", ErrInvalidMessage)
	}
	if topic == "" {
		return fmt.Errorf("%w: empty topic", ErrInvalidMessage)
	}
	if key == "" {
		key = topic
	}
	if len(msgs) == 0 {
		return nil
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "INSERT INTO %s (topic, order_key, uuid, payload, metadata) VALUES ", o.table)
	args := make([]any, 0, 5*len(msgs))
	for i, m := range msgs {
		if m == nil {
			return fmt.Errorf("%w: message %d is nil", ErrInvalidMessage, i)
		}
		if m.UUID == "" {
			return fmt.Errorf("%w: message %d has no UUID (the inbox deduplicates by it)", ErrInvalidMessage, i)
		}
		if o.payload != nil {
			var err error
			if m, err = o.encode(ctx, tx, m); err != nil {
				return err
			}
		}
		meta, err := json.Marshal(m.Metadata)
		if err != nil {
			return fmt.Errorf("%w: message %s metadata: %v", ErrInvalidMessage, m.UUID, err)
		}
		if i > 0 {
			sb.WriteString(", ")
		}
		n := len(args)
		fmt.Fprintf(&sb, "($%d, $%d, $%d, $%d, $%d::jsonb)", n+1, n+2, n+3, n+4, n+5)
		payload := m.Payload
		if payload == nil {
			payload = []byte{}
		}
		args = append(args, topic, key, m.UUID, payload, string(meta))
	}
	if _, err := tx.ExecContext(ctx, sb.String(), args...); err != nil {
		return fmt.Errorf("outbox: write to %s: %w", o.table, err)
	}
	// Delivered at commit, dropped on rollback: the relay wakes exactly
	// when there is something to send.
	if _, err := tx.ExecContext(ctx, o.notify); err != nil {
		return fmt.Errorf("outbox: notify: %w", err)
	}
	return nil
}
