// Package ack says what happens to a delivery.
//
// The Subscriber attaches an [Info] to every message it hands out (delivery
// tag, redelivered flag, exchange, routing key, queue, consumer tag, the raw
// AMQP headers). A handler or a middleware sets a [Disposition] before the
// message is settled: [Ack], [Requeue] (nack with requeue: "not my fault,
// try later"), [Reject] (no requeue: to the queue's dead-letter exchange) or
// [RejectRequeue] (failed; counts toward a quorum queue's delivery limit,
// which basic.nack no longer does since RabbitMQ 4.3). Error kinds
// [Permanent] and [AsRequeue] tell the Ack middleware which way an error
// goes. [Attempt] is one attempt counter over every source RabbitMQ and
// warren provide.
//
// The package depends only on Watermill's message package, so middleware
// built on it works with any Pub/Sub: on a message without Info, Attempt is
// 1 and dispositions are simply recorded.
package ack
