package inbox

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"

	"github.com/warrenmq/warren/ack"
	"github.com/warrenmq/warren/router"
)

// BatchFunc handles the messages of a batch not processed before, in tx,
// the batch's one transaction. Its error is as a router.BatchHandler's,
// over msgs: nil, a *router.BatchError of len(msgs), or an error of them
// all. A message whose entry is an error must have left nothing in tx (run
// each message in a savepoint, tx.Begin, when its effects may fail half
// way): the others' effects commit.
type BatchFunc func(ctx context.Context, tx pgx.Tx, msgs []*message.Message) error

// Batch makes h a router.BatchHandler that is idempotent in one
// transaction per batch: it records the batch's UUIDs (one statement),
// runs h on the messages not recorded before (a duplicate, also one twice
// in the same batch, is acked without it, and counted), forgets the
// records of the messages h failed, and commits. A message without a UUID
// is refused for good (ErrNoUUID, dead-lettered); an error of the whole
// batch rolls everything back, and every message is retried.
func (ib *Inbox) Batch(h BatchFunc) router.BatchHandler {
	return func(ctx context.Context, msgs []*message.Message) error {
		errs := make([]error, len(msgs))
		ids := make([]string, 0, len(msgs))
		for i, m := range msgs {
			if m.UUID == "" {
				errs[i] = ack.Permanent(ErrNoUUID)
				continue
			}
			ids = append(ids, m.UUID)
		}
		// Sorted, so that batches that share UUIDs take their locks in
		// one order and never deadlock each other.
		slices.Sort(ids)
		ids = slices.Compact(ids)
		tx, err := ib.cfg.Pool.Begin(ctx)
		if err != nil {
			return fmt.Errorf("inbox: begin: %w", err)
		}
		defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }() // nothing after Commit
		rows, err := tx.Query(ctx, ib.batchInsertSQL(), ib.cfg.Consumer, ids)
		if err != nil {
			return fmt.Errorf("inbox: record a batch of %d: %w", len(ids), err)
		}
		fresh := map[string]bool{}
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				return fmt.Errorf("inbox: record a batch: %w", err)
			}
			fresh[id] = true
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("inbox: record a batch of %d: %w", len(ids), err)
		}
		// The messages to handle: the first of each recorded UUID.
		var todo []*message.Message
		var at []int // todo[k] is msgs[at[k]]
		for i, m := range msgs {
			if errs[i] != nil {
				continue
			}
			if !fresh[m.UUID] {
				ib.duplicates.Add(1)
				continue
			}
			delete(fresh, m.UUID)
			todo, at = append(todo, m), append(at, i)
		}
		if len(todo) > 0 {
			herr := h(ctx, tx, todo)
			var be *router.BatchError
			switch {
			case herr == nil:
			case errors.As(herr, &be) && len(be.Errs) == len(todo):
				var failed []string
				for k, e := range be.Errs {
					if e != nil {
						errs[at[k]] = e
						failed = append(failed, todo[k].UUID)
					}
				}
				if len(failed) > 0 {
					if _, err := tx.Exec(ctx, ib.batchForgetSQL(), ib.cfg.Consumer, failed); err != nil {
						return fmt.Errorf("inbox: forget the failed of a batch: %w", err)
					}
				}
			default:
				return herr // rolled back: every message again
			}
		}
		if err := tx.Commit(ctx); err != nil {
			return fmt.Errorf("inbox: commit a batch of %d: %w", len(ids), err)
		}
		done := 0
		for i := range todo {
			if errs[at[i]] == nil {
				done++
			}
		}
		ib.processed.Add(int64(done))
		if slices.ContainsFunc(errs, func(e error) bool { return e != nil }) {
			return &router.BatchError{Errs: errs}
		}
		return nil
	}
}

func (ib *Inbox) batchInsertSQL() string {
	return fmt.Sprintf("INSERT INTO %s (consumer, message_id) SELECT $1, unnest($2::text[]) ON CONFLICT DO NOTHING RETURNING message_id", ib.cfg.Table)
}

func (ib *Inbox) batchForgetSQL() string {
	return fmt.Sprintf("DELETE FROM %s WHERE consumer = $1 AND message_id = ANY($2::text[])", ib.cfg.Table)
}
