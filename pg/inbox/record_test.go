package inbox_test

import (
	"context"
	"errors"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/warrenmq/warren/ack"
	"github.com/warrenmq/warren/pg/inbox"
	"github.com/warrenmq/warren/pg/internal/pgtest"
)

// TestRecordQuotesWhatItSends: the begin and the record go as one
// simple-protocol query with the consumer and the UUID as literals, so
// UUIDs (and a consumer name) that hold quotes, backslashes and SQL are
// recorded as they are and told apart, whatever standard_conforming_strings
// says; a duplicate gives its connection back to the pool (none is made
// anew); a UUID a text column cannot hold is refused for good.
func TestRecordQuotesWhatItSends(t *testing.T) {
	for _, conforming := range []string{"on", "off"} {
		t.Run("standard_conforming_strings="+conforming, func(t *testing.T) {
			dsn := pgtest.Database(t)
			pool := pgtest.Pool(t, pgtest.WithParams(dsn, "pool_max_conns=1&options=-c%20standard_conforming_strings%3D"+conforming))
			ctx := context.Background()
			if _, err := pool.Exec(ctx, "CREATE TABLE effects (id text PRIMARY KEY, n int NOT NULL)"); err != nil {
				t.Fatal(err)
			}
			const consumer = `o'brien\billing`
			ib, err := inbox.New(inbox.Config{Pool: pool, Consumer: consumer})
			if err != nil {
				t.Fatal(err)
			}
			if err := ib.Migrate(ctx); err != nil {
				t.Fatal(err)
			}
			h := ib.Middleware(apply(nil))
			uuids := []string{`it's`, `it\'s`, `\`, `\\`, `'); DROP TABLE effects; --`, `E'\x'`, "ünïcode ✓"}
			for round := range 2 {
				for _, id := range uuids {
					if _, err := h(message.NewMessage(id, nil)); err != nil {
						t.Fatalf("round %d, %q: %v", round, id, err)
					}
				}
			}
			for _, id := range uuids {
				if n := effect(t, pool, id); n != 1 {
					t.Errorf("%q applied %d times", id, n)
				}
				var recorded bool
				if err := pool.QueryRow(ctx, "SELECT EXISTS (SELECT FROM warren_inbox WHERE consumer = $1 AND message_id = $2)", consumer, id).Scan(&recorded); err != nil || !recorded {
					t.Errorf("%q not recorded as itself (%v)", id, err)
				}
			}
			if ib.Processed() != int64(len(uuids)) || ib.Duplicates() != int64(len(uuids)) {
				t.Fatalf("%d processed, %d duplicates; want %d each", ib.Processed(), ib.Duplicates(), len(uuids))
			}
			if made := pool.Stat().NewConnsCount(); made != 1 {
				t.Fatalf("%d connections made for one pooled connection: a duplicate's was dropped", made)
			}
			for _, id := range []string{"nul\x00byte", "bad\xffutf8"} {
				_, err := h(message.NewMessage(id, nil))
				if !errors.Is(err, inbox.ErrInvalidUUID) || ack.KindOf(err) != ack.PermanentKind {
					t.Fatalf("%q: %v, want a permanent ErrInvalidUUID", id, err)
				}
			}
			if _, err := inbox.New(inbox.Config{Pool: pool, Consumer: "a\x00b"}); !errors.Is(err, inbox.ErrInvalidConfig) {
				t.Fatalf("consumer with a NUL byte: %v", err)
			}
		})
	}
}
