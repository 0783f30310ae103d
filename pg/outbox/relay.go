package outbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/cenkalti/backoff/v4"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/warrenmq/warren"
	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/conn"
	"github.com/warrenmq/warren/pg/internal/sqlname"
)

// RelayConfig shapes a Relay.
type RelayConfig struct {
	// Pool reaches the database that holds the outbox. Required.
	Pool *pgxpool.Pool
	// Publisher sends the messages: a warren.Publisher, whose Publish
	// returns once the broker confirmed every message. Required.
	Publisher message.Publisher
	// Table is the outbox table. Default: DefaultTable.
	Table string
	// Batch is how many rows one pass takes. Default: 100.
	Batch int
	// PollInterval is how long the relay waits for a notification before
	// it looks anyway. Default: 1s.
	PollInterval time.Duration
	// Retention is how long a published row stays in the table, marked
	// with published_at (to see what was sent, and when). Default 0: a row
	// is deleted as soon as the broker confirmed it, which costs the
	// database about half of what marking it does (a delete writes no new
	// row version and no index entries). Rows set aside always stay.
	Retention time.Duration
	// CleanupInterval between deletions of published rows past Retention
	// (and, with Retention 0, of rows an earlier configuration left
	// published). Default: 1m.
	CleanupInterval time.Duration
	// Logger. Default: slog.Default().
	Logger *slog.Logger
}

func (c *RelayConfig) setDefaults() {
	if c.Table == "" {
		c.Table = DefaultTable
	}
	if c.Batch == 0 {
		c.Batch = 100
	}
	if c.PollInterval == 0 {
		c.PollInterval = time.Second
	}
	if c.CleanupInterval == 0 {
		c.CleanupInterval = time.Minute
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Validate reports every problem, each naming its field.
func (c *RelayConfig) Validate() error {
	var errs []error
	bad := func(field, reason string) {
		errs = append(errs, fmt.Errorf("%w: outbox.RelayConfig.%s: %s", ErrInvalidConfig, field, reason))
	}
	if c.Pool == nil {
		bad("Pool", "required")
	}
	if c.Publisher == nil {
		bad("Publisher", "required")
	}
	if !sqlname.ValidTable(c.Table) {
		bad("Table", fmt.Sprintf("%q: want a lower-case identifier, optionally schema.table", c.Table))
	}
	if c.Batch < 1 || c.Batch > 10000 {
		bad("Batch", "1 to 10000")
	}
	if c.PollInterval < 0 || c.Retention < 0 || c.CleanupInterval < 0 {
		bad("PollInterval, Retention, CleanupInterval", "must not be negative")
	}
	return errors.Join(errs...)
}

// RelayStats counts what a relay did.
type RelayStats struct {
	// Published rows (confirmed by the broker, marked done).
	Published int64
	// SetAside rows the broker refused for good.
	SetAside int64
	// Deleted published rows: at once (Retention 0) or past Retention.
	Deleted int64
}

// Relay publishes the outbox's rows.
type Relay struct {
	cfg                  RelayConfig
	lockSQL, selectSQL   string
	markSQL, setAsideSQL string

	published, setAside, deleted atomic.Int64
}

// NewRelay returns a relay; Run starts it.
func NewRelay(cfg RelayConfig) (*Relay, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	// The advisory lock is taken row by row in id order: a relay keeps an
	// order key to itself until it commits, and the others skip that key
	// instead of waiting for it. 22369 keeps warren's locks apart from an
	// application's own advisory locks. The rows are read by a second
	// statement: its snapshot is taken after the locks are held, so it sees
	// what the key's previous holder committed (the first statement's
	// snapshot may be older than that commit).
	lock := fmt.Sprintf(`SELECT DISTINCT order_key FROM (SELECT order_key FROM %s
WHERE published_at IS NULL AND failed_at IS NULL
  AND pg_try_advisory_xact_lock(hashtextextended(order_key, 22369))
ORDER BY id LIMIT $1) AS locked`, cfg.Table)
	sel := fmt.Sprintf(`SELECT id, topic, uuid, payload, metadata FROM %s
WHERE published_at IS NULL AND failed_at IS NULL AND order_key = ANY($2) AND id > $3
ORDER BY id LIMIT $1`, cfg.Table)
	// A published row is deleted, or marked when it is kept: marking
	// touches published_at, which both partial indexes name, so it is never
	// a HOT update (a new row version and two index entries a row).
	mark := fmt.Sprintf("DELETE FROM %s WHERE id = ANY($1)", cfg.Table)
	if cfg.Retention > 0 {
		mark = fmt.Sprintf("UPDATE %s SET published_at = now() WHERE id = ANY($1)", cfg.Table)
	}
	return &Relay{cfg: cfg, lockSQL: lock, selectSQL: sel, markSQL: mark,
		setAsideSQL: fmt.Sprintf("UPDATE %s SET failed_at = now(), error = $2 WHERE id = $1", cfg.Table),
	}, nil
}

// Stats returns the relay's counts so far.
func (r *Relay) Stats() RelayStats {
	return RelayStats{Published: r.published.Load(), SetAside: r.setAside.Load(), Deleted: r.deleted.Load()}
}

// Run publishes until ctx ends (then it returns nil); a failing database or
// broker delays it, with backoff, and loses nothing.
func (r *Relay) Run(ctx context.Context) error {
	l := &listener{pool: r.cfg.Pool, channel: channel(r.cfg.Table), log: r.cfg.Logger}
	defer l.close()
	b := backoff.NewExponentialBackOff()
	b.InitialInterval, b.MaxInterval, b.MaxElapsedTime = 50*time.Millisecond, 5*time.Second, 0
	b.Reset()
	nextCleanup := time.Now()
	for {
		if ctx.Err() != nil {
			return nil
		}
		n, err := r.pass(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			wait := b.NextBackOff()
			r.cfg.Logger.Warn("outbox: relay pass failed; trying again", "error", err, "in", wait)
			if !sleep(ctx, wait) {
				return nil
			}
			continue
		}
		b.Reset()
		if time.Now().After(nextCleanup) {
			if err := r.cleanup(ctx); err != nil && ctx.Err() == nil {
				r.cfg.Logger.Warn("outbox: cleanup failed", "error", err)
			}
			nextCleanup = time.Now().Add(r.cfg.CleanupInterval)
		}
		if n == r.cfg.Batch {
			continue // more is waiting
		}
		// Listen before waiting. A listener made just now did not hear
		// what committed before it: look once more first. (Listening
		// first would hold a backlog's first batch behind the dial of a
		// connection: 20 ms in the pg bench, where the pool's idle
		// connection becomes the listener.)
		if l.conn == nil && testHookBeforeListen != nil {
			testHookBeforeListen()
		}
		if l.ensure(ctx) {
			continue
		}
		l.wait(ctx, r.cfg.PollInterval)
	}
}

// testHookBeforeListen, when set by a test, runs between a look that
// found nothing and the LISTEN that follows it.
var testHookBeforeListen func()

type row struct {
	id      int64
	topic   string
	msg     *message.Message
	invalid error
}

// chunksPerPass bounds how many batches one pass takes while it holds its
// order keys (other relays take other keys meanwhile). Each pass costs a
// lock, a first read and a last mark that nothing hides: at 10 batches the
// relay measured 0.77-0.80x direct publishing, at 50 0.84-0.90x.
const chunksPerPass = 50

// pass publishes up to chunksPerPass batches of the order keys it locks,
// in one transaction, and reports how many rows its last batch took (a
// full one: more is waiting). The next batch is read while the broker
// confirms the one before, so the database's round trips hide behind the
// broker's disk sync; it is published only once that one is confirmed, so
// each key's order holds.
func (r *Relay) pass(ctx context.Context) (int, error) {
	tx, err := r.cfg.Pool.Begin(ctx)
	if err != nil {
		return 0, err
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	keys, err := r.lockKeys(ctx, tx)
	if err != nil || len(keys) == 0 {
		return 0, err
	}
	rows, err := r.fetch(ctx, tx, keys, 0)
	if err != nil || len(rows) == 0 {
		return 0, err
	}
	type sent struct {
		done   []int64
		failed map[int64]error
		err    error
	}
	var (
		done, toMark []int64
		failed       = map[int64]error{}
		failedToMark map[int64]error
		sendErr      error
		last         int
		marked       bool // synchronous_commit is off for this transaction
	)
	for chunk := 0; len(rows) > 0; chunk++ {
		last = len(rows)
		confirmed := make(chan sent, 1)
		go func(rows []row) {
			d, f, err := r.publish(ctx, rows)
			confirmed <- sent{d, f, err}
		}(rows)
		// While the broker confirms: record what it confirmed before, and
		// read the next batch, in one round trip.
		more := chunk+1 < chunksPerPass && len(rows) == r.cfg.Batch
		next, dbErr := r.markAndFetch(ctx, tx, toMark, failedToMark, !marked, keys, rows[len(rows)-1].id, more)
		marked = marked || len(toMark) > 0 || len(failedToMark) > 0
		s := <-confirmed
		toMark, failedToMark = s.done, s.failed
		done = append(done, s.done...)
		for id, why := range s.failed {
			failed[id] = why
		}
		if dbErr != nil {
			// The transaction is gone: nothing of this pass is marked, and
			// the next pass sends it again (at least once).
			return 0, dbErr
		}
		if s.err != nil {
			sendErr = s.err
			break
		}
		rows = next
	}
	if _, err := r.markAndFetch(ctx, tx, toMark, failedToMark, !marked, nil, 0, false); err != nil {
		return 0, err
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, fmt.Errorf("outbox: record %d published: %w", len(done), err)
	}
	r.published.Add(int64(len(done)))
	if r.cfg.Retention == 0 {
		r.deleted.Add(int64(len(done)))
	}
	r.setAside.Add(int64(len(failed)))
	for id, why := range failed {
		r.cfg.Logger.Error("outbox: row set aside", "table", r.cfg.Table, "id", id, "error", why)
	}
	if sendErr != nil {
		return 0, sendErr
	}
	return last, nil
}

// markAndFetch records rows published (deletes them, or marks them when
// they are kept for Retention) and rows set aside and, with more, reads
// the batch of keys' pending rows after id after: one round trip. The
// transaction's commit does not wait for the WAL to reach the disk (first
// sets that, with the first marks): the broker has confirmed these
// messages already, so a mark lost to a database crash only sends them
// again (at least once; the inbox absorbs the copy), while waiting for the
// flush would be a disk sync per pass.
func (r *Relay) markAndFetch(ctx context.Context, tx pgx.Tx, done []int64, failed map[int64]error, first bool, keys []string, after int64, more bool) ([]row, error) {
	var b pgx.Batch
	if len(done) > 0 || len(failed) > 0 {
		if first {
			b.Queue("SET LOCAL synchronous_commit = off")
		}
		if len(done) > 0 {
			b.Queue(r.markSQL, done)
		}
		for id, why := range failed {
			b.Queue(r.setAsideSQL, id, why.Error())
		}
	}
	marks := b.Len()
	if more {
		b.Queue(r.selectSQL, r.cfg.Batch, keys, after)
	}
	if b.Len() == 0 {
		return nil, nil
	}
	results := tx.SendBatch(ctx, &b)
	defer results.Close()
	for range marks {
		if _, err := results.Exec(); err != nil {
			return nil, err
		}
	}
	var next []row
	if more {
		rs, err := results.Query()
		if err != nil {
			return nil, err
		}
		if next, err = scanRows(rs); err != nil {
			return nil, err
		}
	}
	return next, results.Close()
}

// lockKeys takes the order keys of up to a batch of pending rows that no
// other relay holds.
func (r *Relay) lockKeys(ctx context.Context, tx pgx.Tx) ([]string, error) {
	kr, err := tx.Query(ctx, r.lockSQL, r.cfg.Batch)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(kr, pgx.RowTo[string])
}

// fetch reads up to a batch of the pending rows of keys after id after.
func (r *Relay) fetch(ctx context.Context, tx pgx.Tx, keys []string, after int64) ([]row, error) {
	rs, err := tx.Query(ctx, r.selectSQL, r.cfg.Batch, keys, after)
	if err != nil {
		return nil, err
	}
	return scanRows(rs)
}

// scanRows makes the outbox's rows into messages; a row no message can be
// made of is kept, with the reason, to be set aside.
func scanRows(rs pgx.Rows) ([]row, error) {
	defer rs.Close()
	var out []row
	for rs.Next() {
		var (
			rw      row
			uuid    string
			payload []byte
			meta    []byte
		)
		if err := rs.Scan(&rw.id, &rw.topic, &uuid, &payload, &meta); err != nil {
			return nil, err
		}
		rw.msg = message.NewMessage(uuid, payload)
		if err := json.Unmarshal(meta, &rw.msg.Metadata); err != nil {
			rw.invalid = fmt.Errorf("metadata: %w", err)
		}
		out = append(out, rw)
	}
	return out, rs.Err()
}

// publish sends rows in id order, consecutive rows of one topic in one
// confirmed Publish. It returns the rows to mark published, the rows to set
// aside, and the transient error that stopped it: the rows from the first
// one it could not confirm on are left for the next pass (sent again, in
// order; the ones before it are done).
func (r *Relay) publish(ctx context.Context, rows []row) (done []int64, failed map[int64]error, stop error) {
	failed = map[int64]error{}
	for start := 0; start < len(rows); {
		end := start + 1
		for end < len(rows) && rows[end].topic == rows[start].topic {
			end++
		}
		group := rows[start:end]
		start = end
		var msgs []*message.Message
		var ids []int64
		for _, rw := range group {
			if rw.invalid != nil {
				failed[rw.id] = rw.invalid
				continue
			}
			rw.msg.SetContext(ctx)
			msgs = append(msgs, rw.msg)
			ids = append(ids, rw.id)
		}
		if len(msgs) == 0 {
			continue
		}
		err := r.cfg.Publisher.Publish(group[0].topic, msgs...)
		if err == nil {
			done = append(done, ids...)
			continue
		}
		var pe *warren.PublishError
		perMessage := errors.As(err, &pe)
		for i, m := range msgs {
			why := err
			if perMessage {
				why = pe.Failed[m.UUID]
				if why == nil {
					done = append(done, ids[i])
					continue
				}
			}
			if permanent(why) {
				failed[ids[i]] = why
				continue
			}
			// The first row this relay could not confirm: it and every row
			// after it go again next pass, in order (the rows confirmed
			// after it in this Publish are sent again too, so that their
			// key's order holds; the inbox absorbs the copies).
			return done, failed, why
		}
	}
	return done, failed, nil
}

// permanent: the broker (or the publisher) refused the message for good;
// sending it again would be refused again.
func permanent(err error) bool {
	for _, target := range []error{
		warren.ErrInvalidMessage, warren.ErrInvalidTopic, conn.ErrNotFound, conn.ErrAccessRefused,
		broker.ErrMessageTooLarge, conn.ErrPreconditionFailed, broker.ErrUnroutable,
	} {
		if errors.Is(err, target) {
			return true
		}
	}
	return false
}

// cleanup deletes published rows past Retention, a thousand at a time
// (with Retention 0, any a relay kept before).
func (r *Relay) cleanup(ctx context.Context) error {
	q := fmt.Sprintf(`DELETE FROM %[1]s WHERE id IN (
	SELECT id FROM %[1]s WHERE published_at < now() - make_interval(secs => $1) LIMIT 1000)`, r.cfg.Table)
	for {
		tag, err := r.cfg.Pool.Exec(ctx, q, r.cfg.Retention.Seconds())
		if err != nil {
			return err
		}
		r.deleted.Add(tag.RowsAffected())
		if tag.RowsAffected() < 1000 {
			return nil
		}
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
