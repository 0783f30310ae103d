// Package warren makes RabbitMQ a first-class Watermill backend.
//
// [Publisher] is a Watermill message.Publisher with publisher confirms,
// pipelined: Publish writes every message and then waits for all confirms at
// once, concurrent calls share a small pool of confirm channels, unroutable
// mandatory messages are errors, a broker refusal (a missing exchange, a
// message over the broker's maximum size) fails the refused message at once,
// and messages whose confirm was lost in a connection drop are republished
// after the reconnect (at-least-once). Each message's Context() bounds it.
//
// [Subscriber] is a Watermill message.Subscriber (and SubscribeInitializer).
// Its output channel stays open across reconnects, server-side consumer
// cancels and deleted queues (the consumer comes back by itself) and closes
// only on Close or when Subscribe's ctx ends. MaxInFlight (default 1,
// Watermill's ordering guarantee) lets several handlers run at once. Each
// message's context carries Subscribe's ctx values and ack.Info; it is
// cancelled once the message is settled. Acks of deliveries from a channel
// that has since died are dropped and counted (the broker redelivers).
//
// # Failures never spin
//
// A nacked message is never requeued at once: the Subscriber holds it for a
// backoff that grows with its attempts ([RedeliveryConfig]), settles it with
// basic.reject (so quorum delivery limits count it), dead-letters it after
// MaxAttempts when its queue has a dead-letter exchange, and otherwise keeps
// it at the capped backoff: never dropped.
//
// # Shutdown
//
// [Subscriber.Shutdown] works like http.Server.Shutdown: no new deliveries,
// the handlers in flight finish and settle with live contexts, and only when
// its ctx ends are their contexts cancelled and the unsettled messages given
// back to the queue. Close is Shutdown bounded by CloseTimeout; a Subscribe
// ctx that ends does the same for its subscription.
//
// # Topics
//
// A [Mapping] turns Watermill topics into RabbitMQ topology, declared through
// package topology and restored after every reconnect: [QueuePerTopic] (a
// queue per topic through the default exchange), [FanoutPerTopic] (a fanout
// exchange per topic, a queue per consumer group), [TopicExchange] (one topic
// exchange, the topic as routing key, patterns per subscriber), and
// [ExistingQueues] (declares nothing).
//
// # Messages
//
// [DefaultMarshaler] puts the UUID in message-id, metadata in string headers
// (the MetaX keys in AMQP properties), and marks messages persistent. Headers
// that are not strings never fail decoding. A delivery a Marshaler cannot
// decode is poison: rejected without requeue (or handed to
// SubscriberConfig.OnPoison), never requeued in a loop.
//
// # Concurrency
//
// Publisher and Subscriber are safe for concurrent use. Close is idempotent
// and returns once every goroutine has ended, or with an error naming what is
// still running; neither closes the connection, which belongs to the caller.
// Their topology goes into the connection's one registry (see
// broker.RegistryOf).
package warren
