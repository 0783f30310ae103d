// Package telemetry is warren's OpenTelemetry instrumentation: the spans and
// metrics of the messaging semantic conventions for RabbitMQ (v1.44.0;
// schema URL v1.43.0, the newest the Go SDK ships, identical for
// messaging), and warren's own connection and consumer metrics.
//
// Telemetry is configuration: a Telemetry made by New (or Default, the otel
// global providers; or Disabled) is given to conn.Config, and every
// publisher, subscriber and router on that connection uses it unless its
// own config names another. Trace context and baggage cross the broker in
// AMQP headers (W3C traceparent, tracestate, baggage) through retries,
// delay queues and dead-letters.
//
// # Spans
//
// Span names are "{messaging.operation.name} {destination}", the
// destination in its low-cardinality form (see Destination.Template);
// attributes used for sampling (the destination's) are given at span
// start, the message's own (its id, conversation id, body size, delivery
// tag) once the span records, so a message not sampled builds none. A
// message whose process span is not sampled gets no settle span.
//
//	span                 kind      when
//	send {dest}          PRODUCER  Publisher.Publish of one message; its context goes into the message
//	create {dest}        PRODUCER  each message of a batch Publish; its context goes into the message
//	send {dest}          CLIENT    a batch Publish: messaging.batch.message_count, linked to the create spans
//	process {dest}       CONSUMER  a delivery, from hand-out to ack or nack (Subscriber)
//	retry                INTERNAL  each in-process retry (middleware.Retry), under the process span
//	ack|nack|reject {dest} CLIENT  the settlement, under the process span
//
// Attributes: messaging.system "rabbitmq", messaging.operation.name and
// .type, messaging.destination.name ("{exchange}:{routing key}" for a send,
// "{exchange}:{routing key}:{queue}" for a consume, empty parts omitted, a
// routing key equal to the queue given once, "amq.default" for the default
// exchange without a key), messaging.destination.template (the name
// without the routing key of a named exchange, nor generated or temporary
// queue names), messaging.rabbitmq.destination.routing_key,
// messaging.rabbitmq.message.delivery_tag, messaging.message.id,
// messaging.message.conversation_id (the correlation id),
// messaging.message.body.size (the body's bytes on the wire; not on a
// batch's send span, whose messages each have a create span),
// messaging.consumer.group.name (the queue: its competing consumers are the
// group), messaging.destination.anonymous and .temporary (amq.gen-*, direct
// reply-to, exclusive or auto-delete queues), messaging.client.id (the
// connection's name, host, process id and sequence), server.address and
// server.port (the node the connection is on now), and error.type on
// failure.
//
// # Parent or link
//
// Config.Process decides how a process span relates to the span that sent
// its message. Parent (the default) makes the send span its parent: a
// message's whole life (publish, every attempt, retries, the delayed
// retry's republish, the dead-letter) is one trace, which is what a person
// debugging one message wants; the cost is long traces for long delays and
// wide ones for fan-out. Link starts a trace per process span, linked to
// the send span, as the conventions advise when processing runs inside
// another span's scope; traces stay small, and following a message means
// following links. A republished copy (a delayed retry, a dead-letter
// published to a queue) carries the context of its own send span, so the
// chain continues either way.
//
// # Metrics
//
//	messaging.client.operation.duration  histogram s  sends and settlements
//	messaging.process.duration           histogram s  process spans
//	messaging.client.sent.messages       counter      per message sent (error.type when refused)
//	messaging.client.consumed.messages   counter      per delivery handed out
//	warren.retries                       counter      warren.retry.kind in_process|delayed
//	warren.dead_letters                  counter      warren.dead_letter.mode reject|publish
//	warren.connection.reconnects         counter      connections re-established
//	warren.connection.restore.duration   histogram s  restore hooks (topology, consumers) per connection
//	warren.connection.blocked.duration   histogram s  each block by a resource alarm
//	warren.consumer.stale_settlements    counter      acks dropped with their channel
//	warren.consumer.poison               counter      undecodable deliveries
//	warren.scheduled.unroutable          counter      scheduled messages no queue took when due (messaging.destination.name: the exchange)
//	warren.queue.messages                gauge        a route's queue's ready messages (router.Config.QueueMetricsInterval; messaging.destination.name)
//	warren.queue.consumers               gauge        a route's queue's consumers (the same)
//	warren.kill_switch.transitions       counter      kill switch changes (warren.kill_switch.name: the route, warren.kill_switch.state: open|half_open|closed)
//
// The duration histograms use the bucket boundaries the conventions advise
// (5ms to 10s); restore and blocked time use boundaries from 10ms to 5min. Metric
// attributes are low in cardinality: the destination name only when it is
// (otherwise its template), never the routing key, the message id or the
// client id. Measurements are made with the span's context, so exemplars
// point at the trace.
//
// # error.type
//
// error.type is ack.ErrorType of the error, one of a short list:
//
//   - a broker refusal: its AMQP reply name ("NOT_FOUND", "ACCESS_REFUSED",
//     "PRECONDITION_FAILED", "RESOURCE_LOCKED", "CHANNEL_ERROR",
//     "CONNECTION_FORCED", ...);
//   - warren's own errors: "unroutable", "nacked", "publish_timeout",
//     "message_too_large", "closed", "not_open", "blocked", "gave_up",
//     "not_retryable", "timeout", "channel_closed" (a delivery whose channel
//     died before it was settled), "consumer_stopped", "conflict",
//     "messages_at_stake", "plugin_missing", "invalid_spec", "read_only",
//     "already_settled", "delay_too_long", "invalid_topic",
//     "invalid_message", "invalid_config", "poison", "panic",
//     "reply_lost", "remote";
//   - "timeout" or "canceled" for the context's errors;
//   - an application error that names itself (ack.ErrorTyper), or else the
//     Go type of the innermost error that has a type of its own
//     ("*json.SyntaxError");
//   - "_OTHER" for plain text errors (errors.New, fmt.Errorf), and for a
//     Watermill handler's nack, whose error the subscriber never sees.
//
// # Where warren departs from the conventions, on purpose
//
//   - A failed attempt is an "exception" span event on its process span
//     (with warren.attempt and the attempt's error.type). The
//     conventions now advise exceptions as log records; Go's stable
//     tracing API has span events, every trace viewer shows them, and the
//     logs bridge is not one of warren's dependencies.
//   - messaging.consumer.group.name is set on process spans (the RabbitMQ
//     span tables do not list it) so that spans and metrics can be joined
//     on the queue.
//   - A message that goes to a delay queue or a dead-letter queue is acked,
//     yet its process span has status Error and error.type, and
//     messaging.process.duration records it under that error.type: its
//     processing failed. A message acked after failed in-process attempts
//     did not fail: its status is unset and it has no error.type (as the
//     conventions say, error.type only when the operation failed); its
//     failed attempts are its exception events and warren.retries.
//   - There are no receive spans: warren consumes by push (basic.consume).
//   - A batch route (router.Route.Batch) makes one "process {queue}" span
//     per batch call, with messaging.batch.message_count and a link to each
//     message's send span, as the conventions shape batch processing; each
//     message keeps its own process and settle spans too, since its
//     outcome and settlement are its own.
//   - The schema URL is v1.43.0 (the Go SDK's newest); the messaging
//     conventions warren follows are v1.44.0's, unchanged for RabbitMQ.
package telemetry
