// Package ack says what happens to a delivery.
//
// The Subscriber attaches an [Info] to every message it hands out (delivery
// tag, redelivered flag, exchange, routing key, queue, consumer tag, the raw
// AMQP headers). A handler or a middleware sets a [Disposition] before the
// message is settled: [Ack], [Requeue] (nack with requeue after a
// backoff: "not my fault, try later"), [Reject] (no requeue: to the queue's
// dead-letter exchange) or [RejectRequeue] (failed: reject with requeue
// after a backoff, counting toward a quorum queue's delivery limit, which
// basic.nack no longer does since RabbitMQ 4.3; dead-lettered after a bound).
// Nothing is ever requeued at once: a failing message never spins. Error
// kinds [Permanent] and [AsRequeue] tell the Ack middleware which way an
// error goes.
//
// # Attempts
//
// [Attempt] counts executions of the handler, 1, 2, 3, …, across in-process
// retries ([NextAttempt]), delayed retries ([AttemptHeader]) and
// redeliveries by the broker ([PreviousAttempts]).
//
// The package depends only on Watermill's message package, so middleware
// built on it works with any Pub/Sub: on a message without Info, Attempt is
// 1 and dispositions are simply recorded.
package ack
