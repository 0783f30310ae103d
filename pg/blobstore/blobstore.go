// Package blobstore is a payload.Store in PostgreSQL: the claim checks of
// large message bodies, kept in the database the services already have.
// A body is written in chunks, streamed from its reader and read back
// chunk by chunk, never held whole twice; Cleanup deletes blobs older
// than the retention.
package blobstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/warrenmq/warren/payload"
	"github.com/warrenmq/warren/pg/internal/sqlname"
)

// DefaultTable is the blobs' table's default name.
const DefaultTable = "warren_blobs"

// chunkSize is how much of a body one row holds.
const chunkSize = 1 << 20

// Store keeps blobs in Table of Pool's database.
type Store struct {
	pool  *pgxpool.Pool
	table string
}

var (
	_ payload.Store   = (*Store)(nil)
	_ payload.Deleter = (*Store)(nil)
)

// New returns a Store; table "" is DefaultTable.
func New(pool *pgxpool.Pool, table string) (*Store, error) {
	if table == "" {
		table = DefaultTable
	}
	if pool == nil {
		return nil, errors.New("blobstore: a pool is required")
	}
	if !sqlname.ValidTable(table) {
		return nil, fmt.Errorf("blobstore: table %q: want a lower-case identifier, optionally schema.table", table)
	}
	return &Store{pool: pool, table: table}, nil
}

// Migrate creates the table if it does not exist.
func (s *Store) Migrate(ctx context.Context) error {
	_, err := s.pool.Exec(ctx, fmt.Sprintf(`
CREATE TABLE IF NOT EXISTS %[1]s (
	id         text        NOT NULL,
	seq        int         NOT NULL,
	chunk      bytea       NOT NULL,
	created_at timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (id, seq)
);
CREATE INDEX IF NOT EXISTS %[2]s_created ON %[1]s (created_at);
`, s.table, sqlname.Bare(s.table)))
	if err != nil {
		return fmt.Errorf("blobstore: migrate %s: %w", s.table, err)
	}
	return nil
}

// Put implements payload.Store: the body's chunks in one transaction, so a
// blob is whole or absent.
func (s *Store) Put(ctx context.Context, id string, body io.Reader) error {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("blobstore: begin: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	if err := s.PutTx(ctx, tx, id, body); err != nil {
		return err
	}
	return tx.Commit(ctx)
}

// PutTx writes the body in tx: a blob written with the caller's own
// transaction (an outbox's, say) exists exactly when that commits.
func (s *Store) PutTx(ctx context.Context, tx pgx.Tx, id string, body io.Reader) error {
	return s.putChunks(ctx, func(ctx context.Context, sql string, args ...any) error {
		_, err := tx.Exec(ctx, sql, args...)
		return err
	}, id, body)
}

// Execer runs a statement: a *sql.Tx, or an outbox.Executor (which adapts
// a pgx transaction).
type Execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// Within is this store writing in tx, the caller's transaction: its Put
// writes the blob there (it exists exactly when tx commits), and its Get,
// Delete and Cleanup are the store's. outbox.Write claim-checks with it.
func (s *Store) Within(tx Execer) payload.Store { return txStore{s, tx} }

type txStore struct {
	*Store
	tx Execer
}

func (t txStore) Put(ctx context.Context, id string, body io.Reader) error {
	return t.putChunks(ctx, func(ctx context.Context, sql string, args ...any) error {
		_, err := t.tx.ExecContext(ctx, sql, args...)
		return err
	}, id, body)
}

// putChunks streams body into chunk rows, one statement each.
func (s *Store) putChunks(ctx context.Context, exec func(ctx context.Context, sql string, args ...any) error, id string, body io.Reader) error {
	buf := make([]byte, chunkSize)
	insert := fmt.Sprintf("INSERT INTO %s (id, seq, chunk) VALUES ($1, $2, $3)", s.table)
	for seq := 0; ; seq++ {
		n, err := io.ReadFull(body, buf)
		if n > 0 || seq == 0 {
			if xerr := exec(ctx, insert, id, seq, buf[:n]); xerr != nil {
				return fmt.Errorf("blobstore: write %s: %w", id, xerr)
			}
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("blobstore: read %s: %w", id, err)
		}
	}
}

// Delete implements payload.Deleter; a blob already gone is no error.
func (s *Store) Delete(ctx context.Context, id string) error {
	if _, err := s.pool.Exec(ctx, fmt.Sprintf("DELETE FROM %s WHERE id = $1", s.table), id); err != nil {
		return fmt.Errorf("blobstore: delete %s: %w", id, err)
	}
	return nil
}

// Get implements payload.Store: a reader that fetches the chunks one at a
// time.
func (s *Store) Get(ctx context.Context, id string) (io.ReadCloser, error) {
	var n int
	if err := s.pool.QueryRow(ctx, fmt.Sprintf("SELECT count(*) FROM %s WHERE id = $1", s.table), id).Scan(&n); err != nil {
		return nil, fmt.Errorf("blobstore: look up %s: %w", id, err)
	}
	if n == 0 {
		return nil, fmt.Errorf("%w: %s", payload.ErrBlobNotFound, id)
	}
	return &reader{ctx: ctx, s: s, id: id, chunks: n}, nil
}

// reader reads a blob chunk by chunk.
type reader struct {
	ctx    context.Context
	s      *Store
	id     string
	chunks int
	seq    int
	cur    []byte
}

func (r *reader) Read(p []byte) (int, error) {
	for len(r.cur) == 0 {
		if r.seq >= r.chunks {
			return 0, io.EOF
		}
		err := r.s.pool.QueryRow(r.ctx, fmt.Sprintf("SELECT chunk FROM %s WHERE id = $1 AND seq = $2", r.s.table), r.id, r.seq).Scan(&r.cur)
		if errors.Is(err, pgx.ErrNoRows) {
			return 0, fmt.Errorf("%w: %s (chunk %d gone)", payload.ErrBlobNotFound, r.id, r.seq)
		}
		if err != nil {
			return 0, fmt.Errorf("blobstore: read %s: %w", r.id, err)
		}
		r.seq++
	}
	n := copy(p, r.cur)
	r.cur = r.cur[n:]
	return n, nil
}

func (r *reader) Close() error { return nil }

// Cleanup implements payload.Store: blobs written before olderThan are
// deleted.
func (s *Store) Cleanup(ctx context.Context, olderThan time.Time) (int, error) {
	tag, err := s.pool.Exec(ctx, fmt.Sprintf("DELETE FROM %s WHERE id IN (SELECT DISTINCT id FROM %s WHERE created_at < $1)", s.table, s.table), olderThan)
	if err != nil {
		return 0, fmt.Errorf("blobstore: cleanup: %w", err)
	}
	return int(tag.RowsAffected()), nil
}
