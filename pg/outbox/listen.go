package outbox

import (
	"context"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// listener holds a connection of its own that LISTENs to the outbox's
// channel. Without one (the database is down) the relay polls.
type listener struct {
	pool    *pgxpool.Pool
	channel string
	log     *slog.Logger
	conn    *pgx.Conn
}

// ensure listens, when it does not already, and reports whether it began
// to just now (what committed before then was not heard).
func (l *listener) ensure(ctx context.Context) (began bool) {
	if l.conn != nil {
		return false
	}
	pc, err := l.pool.Acquire(ctx)
	if err != nil {
		return false
	}
	// The connection leaves the pool: a LISTEN must not come back to it.
	c := pc.Hijack()
	if _, err := c.Exec(ctx, "LISTEN "+pgx.Identifier{l.channel}.Sanitize()); err != nil {
		_ = c.Close(context.WithoutCancel(ctx))
		return false
	}
	l.conn = c
	return true
}

// wait returns on a notification, after d, or when ctx ends.
func (l *listener) wait(ctx context.Context, d time.Duration) {
	if l.conn == nil {
		sleep(ctx, d)
		return
	}
	wctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	if _, err := l.conn.WaitForNotification(wctx); err != nil && wctx.Err() == nil {
		l.log.Warn("outbox: listening failed; polling until it works again", "error", err)
		l.close()
	}
	// A timeout leaves pgx's connection usable (it is only the wait that
	// was cancelled): pgx closes the connection on a cancelled wait, so
	// a closed one is dropped and made again on the next ensure.
	if l.conn != nil && l.conn.IsClosed() {
		l.conn = nil
	}
}

func (l *listener) close() {
	if l.conn != nil {
		_ = l.conn.Close(context.Background())
		l.conn = nil
	}
}
