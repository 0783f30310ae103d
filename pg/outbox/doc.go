// Package outbox is a transactional outbox on PostgreSQL: a service writes
// its messages into an outbox table in the same transaction as its business
// data (Write, given the caller's database/sql or pgx transaction), and a
// Relay publishes them through a warren Publisher, marking each published
// only after the broker confirmed it. A crash between commit and publish
// delays a message, never loses it; a rolled-back transaction publishes
// nothing.
//
// Order: rows of one order key (the topic, or the key given to WriteKeyed)
// are published oldest first, by one relay at a time (a transaction-scoped
// advisory lock per key), so several relays run side by side without
// sending a row twice in the normal case. A relay that dies mid-batch, or a
// confirm lost with the connection, sends the batch again from its first
// unconfirmed row: duplicates, in order, which an inbox (package
// github.com/warrenmq/warren/pg/inbox) absorbs. Order across keys, and
// between transactions that commit out of id order, is not kept.
//
// Wake-ups: Write notifies the relay (NOTIFY on commit); the relay LISTENs,
// and polls every PollInterval as the fallback.
//
// A row the broker refuses for good (no such exchange, no permission, too
// large, unroutable) or that cannot be made into a message is set aside
// (failed_at, error) and does not block the rows after it; send it again
// with UPDATE <table> SET failed_at = NULL, error = NULL WHERE id = ....
// A published row is deleted once the broker confirmed it; with
// RelayConfig.Retention it is kept that long instead, marked published_at.
package outbox
