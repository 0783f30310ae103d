// Package delay hands over the due messages of the delay levels that the
// broker cannot deliver by itself (see Schedule): the engine that
// every warren Publisher that schedules and every router that retries
// after a delay take part in.
package delay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren/ack"
	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/conn"
	"github.com/warrenmq/warren/internal/connx"
	"github.com/warrenmq/warren/internal/headers"
	"github.com/warrenmq/warren/internal/instrument"
	"github.com/warrenmq/warren/telemetry"
)

// HandOver hands over the due messages that the delay levels' deliver
// exchange cannot route by itself (ScheduleDueQueue: messages
// scheduled to an exchange, forwarded ones, and those whose queue is gone
// when they are due): it publishes each to its destination, mandatory and
// confirmed, without the routing headers and the broker's record of the
// delay hops, and acks it only then. A message no queue takes (or whose
// destination the broker refuses) is kept in topology.
// ScheduleUnroutableQueue with warren's dead-letter headers (the reason,
// the destination's exchange and routing key), counted
// (warren.scheduled.unroutable) and logged at Warn: never lost, never
// retried forever unseen.
//
// One per connection (an attachment), shared by every Publisher that
// schedules and every router whose routes retry after a delay: the first
// user starts its consumer, the last one's release stops it. Every warren
// process that schedules or retries after a delay takes part, so due
// messages wait only while none runs.
type HandOver struct {
	conn *conn.Conn

	mu    sync.Mutex
	users int
	ops   *broker.Ops // the running consumer's, nil while none runs
}

// worker is one run of the hand-over's consumer: what its handler uses.
type worker struct {
	ops *broker.Ops
	log *slog.Logger
	tel *telemetry.Telemetry
}

type handOverKey struct{}

// handOverPrefetch bounds the due messages one process holds at once.
const handOverPrefetch = 32

// handOverRetryWait is how long a message whose hand-over failed for a
// reason that may pass (a timeout, a blocked connection) waits before it
// goes back to the due queue.
const handOverRetryWait = time.Second

// Of is the hand-over of c's due messages, made on first use.
func Of(c *conn.Conn) *HandOver {
	return connx.Attachment(c, handOverKey{}, func() any { return &HandOver{conn: c} }).(*HandOver)
}

// Acquire starts the hand-over for one more user (declaring the deliver
// exchange and the due queue, which it consumes from, when it is the
// first; the levels are declared by who schedules).
func (h *HandOver) Acquire(ctx context.Context, log *slog.Logger, tel *telemetry.Telemetry) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.users > 0 {
		h.users++
		return nil
	}
	ops, err := broker.NewOps(h.conn, broker.OpsConfig{Logger: log})
	if err != nil {
		return err
	}
	if err := ops.Apply(ctx, handOverTopology(), broker.IfMissing()); err != nil {
		_ = ops.Close(ctx)
		return fmt.Errorf("warren: declare the hand-over of due messages: %w", err)
	}
	w := &worker{ops: ops, log: log, tel: tel}
	if _, err := ops.Consume(ctx, broker.ConsumerSpec{Queue: ScheduleDueQueue, PrefetchCount: handOverPrefetch, Handler: w.handle}); err != nil {
		_ = ops.Close(ctx)
		return fmt.Errorf("warren: hand over due messages: %w", err)
	}
	h.ops = ops
	h.users = 1
	return nil
}

// Release ends one user's share; the last one stops the consumer, letting
// the message in hand finish (bounded by ctx).
func (h *HandOver) Release(ctx context.Context) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.users == 0 {
		return nil
	}
	if h.users--; h.users > 0 {
		return nil
	}
	ops := h.ops
	h.ops = nil
	return ops.Close(ctx) // stops the consumer it started, its message in hand finished
}

// handle hands one due message over, on the consumer's goroutine.
func (h *worker) handle(ctx context.Context, d *broker.Delivery) {
	exchange, key, ok := ScheduledFrom(d.Exchange, d.RoutingKey, d.Headers)
	msg := forwardedPublishing(&d.Delivery)
	var err error
	if !ok {
		err = fmt.Errorf("%w: not a scheduled message (routing key %q)", broker.ErrUnroutable, d.RoutingKey)
	} else {
		err = first(h.ops.PublishAll(ctx, []broker.Outgoing{{Exchange: exchange, RoutingKey: key, Mandatory: true, Msg: msg}}))
	}
	switch {
	case err == nil:
		_ = d.Ack()
		return
	case !refusedForGood(err):
		h.log.Info("warren: handing a due message over failed; it goes back to the due queue", "message_id", d.MessageId,
			"exchange", exchange, "routing_key", key, "error", err)
		t := time.NewTimer(handOverRetryWait)
		defer t.Stop()
		select {
		case <-t.C:
		case <-d.Gone():
			return
		case <-ctx.Done():
		}
		_ = d.Nack(true)
		return
	}
	kept := unroutableCopy(msg, exchange, key, err, time.Now())
	if kerr := first(h.ops.PublishAll(ctx, []broker.Outgoing{{RoutingKey: ScheduleUnroutableQueue, Mandatory: true, Msg: kept}})); kerr != nil {
		h.log.Warn("warren: a due message no queue took could not be kept; it goes back to the due queue", "message_id", d.MessageId, "error", kerr)
		_ = d.Nack(true)
		return
	}
	_ = d.Ack()
	instrument.Of(h.tel).ScheduledUnroutable(exchange, err)
	h.log.Warn("warren: a scheduled message was due but no queue took it; kept in "+ScheduleUnroutableQueue+
		" (warren dlq replay sends it on once a queue is bound)",
		"message_id", d.MessageId, "exchange", exchange, "routing_key", key, "error", err, "error.type", ack.ErrorType(err))
}

// refusedForGood reports a hand-over the broker refused for this message
// (no queue takes it, its exchange is gone, it may not go there, it is too
// large): sending it again would meet the same answer.
func refusedForGood(err error) bool {
	for _, target := range []error{broker.ErrUnroutable, conn.ErrNotFound, conn.ErrAccessRefused, broker.ErrMessageTooLarge, conn.ErrPreconditionFailed, broker.ErrNacked} {
		if errors.Is(err, target) {
			return true
		}
	}
	return false
}

// forwardedPublishing is a due message as its destination gets it: every
// property and header it was published with, without the delay levels'
// routing headers and the broker's record of the hops.
func forwardedPublishing(d *amqp.Delivery) amqp.Publishing {
	var h amqp.Table
	for k, v := range d.Headers {
		if headers.Internal(k) || headers.BrokerDeath(k) {
			continue
		}
		if h == nil {
			h = make(amqp.Table, len(d.Headers))
		}
		h[k] = v
	}
	exp := d.Expiration
	if v, ok := d.Headers[headers.ScheduledExpiration].(string); ok {
		exp = v // the TTL the levels could not carry (Publisher.schedule)
	}
	return amqp.Publishing{
		Headers: h, ContentType: d.ContentType, ContentEncoding: d.ContentEncoding, DeliveryMode: d.DeliveryMode,
		Priority: d.Priority, CorrelationId: d.CorrelationId, ReplyTo: d.ReplyTo, Expiration: exp,
		MessageId: d.MessageId, Timestamp: d.Timestamp, Type: d.Type, AppId: d.AppId, UserId: d.UserId, Body: d.Body,
	}
}

// unroutableCopy is msg as ScheduleUnroutableQueue keeps it: with
// warren's dead-letter headers saying why and where it was going, and its
// TTL in a header (a kept message must not expire; a replay restores it).
func unroutableCopy(msg amqp.Publishing, exchange, key string, why error, now time.Time) amqp.Publishing {
	h := make(amqp.Table, len(msg.Headers)+8)
	for k, v := range msg.Headers {
		h[k] = v
	}
	at := now.UTC().Format(time.RFC3339Nano)
	h[headers.DLError] = "due, but no queue took it: " + why.Error()
	h[headers.DLErrorType] = ack.ErrorType(why)
	h[headers.DLExchange] = exchange
	h[headers.DLRoutingKey] = key
	h[headers.DLFirstFail] = at
	h[headers.DLLastFail] = at
	h[ack.HeaderOriginalExchange] = exchange
	h[ack.HeaderOriginalRoutingKey] = key
	if msg.Expiration != "" {
		h[ack.HeaderOriginalExpiration] = msg.Expiration
		msg.Expiration = ""
	}
	if msg.UserId != "" {
		h[ack.HeaderOriginalUserID] = msg.UserId
		msg.UserId = ""
	}
	msg.Headers = h
	return msg
}

// first is the first error of a PublishAll.
func first(errs []error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}
