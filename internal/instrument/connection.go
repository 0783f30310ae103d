package instrument

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/warrenmq/warren/internal/errkind"
)

// Reconnected counts a connection re-established (after a loss or a
// refresh) to peer: warren.connection.reconnects.
func (t *Instruments) Reconnected(peer Peer) {
	t.reconnects.Add(context.Background(), 1, metric.WithAttributes(peerAttributes(peer)...))
}

// Restored records how long the restore hooks (topology, consumers) of a
// new connection to peer took: warren.connection.restore.duration, with
// error.type when they failed.
func (t *Instruments) Restored(peer Peer, d time.Duration, err error) {
	attrs := peerAttributes(peer)
	if err != nil {
		attrs = append(attrs, attribute.String("error.type", errkind.Type(err)))
	}
	t.restoreDuration.Record(context.Background(), d.Seconds(), metric.WithAttributes(attrs...))
}

// Unblocked records how long the broker blocked the connection to peer:
// warren.connection.blocked.duration.
func (t *Instruments) Unblocked(peer Peer, d time.Duration) {
	t.blockedDuration.Record(context.Background(), d.Seconds(), metric.WithAttributes(peerAttributes(peer)...))
}

// StaleSettlement counts a settlement of a delivery from queue dropped
// because its channel was gone: warren.consumer.stale_settlements.
func (t *Instruments) StaleSettlement(queue string) {
	t.staleAcks.Add(context.Background(), 1, metric.WithAttributes(attribute.String("messaging.consumer.group.name", queue)))
}

// Poison counts a delivery from queue that could not be decoded:
// warren.consumer.poison.
func (t *Instruments) Poison(queue string) {
	t.poison.Add(context.Background(), 1, metric.WithAttributes(attribute.String("messaging.consumer.group.name", queue)))
}

// Retry counts a retry of kind ("in_process" or "delayed"):
// warren.retries. ctx is the message's.
func (t *Instruments) Retry(ctx context.Context, kind, queue string) {
	t.retries.Add(ctx, 1, metric.WithAttributes(attribute.String("warren.retry.kind", kind),
		attribute.String("messaging.consumer.group.name", queue)))
}

// DeadLetter counts a message dead-lettered by mode ("reject" to the
// queue's dead-letter exchange, "publish" to a dead-letter queue):
// warren.dead_letters. ctx is the message's.
func (t *Instruments) DeadLetter(ctx context.Context, mode, queue string) {
	t.deadLetters.Add(ctx, 1, metric.WithAttributes(attribute.String("warren.dead_letter.mode", mode),
		attribute.String("messaging.consumer.group.name", queue)))
}

// KillSwitch counts a kill switch's change of state: to is closed, open or
// half_open; name is its route.
func (t *Instruments) KillSwitch(name, to string) {
	t.killSwitch.Add(context.Background(), 1, metric.WithAttributes(
		attribute.String("warren.kill_switch.name", name), attribute.String("warren.kill_switch.state", to)))
}

// ScheduledUnroutable counts a scheduled message that no queue took when it
// was due (it is kept in the unroutable queue): warren.scheduled.unroutable,
// with the destination exchange ("" for the default exchange) and the
// error.type of the refusal.
func (t *Instruments) ScheduledUnroutable(exchange string, err error) {
	t.scheduledUnroutable.Add(context.Background(), 1, metric.WithAttributes(
		attribute.String("messaging.destination.name", exchange), attribute.String("error.type", errkind.Type(err))))
}
