// Package warren makes RabbitMQ a first-class Watermill backend.
//
// [Publisher] is a Watermill message.Publisher with publisher confirms,
// pipelined: Publish writes every message and then waits for all confirms at
// once, concurrent calls share a small pool of confirm channels, unroutable
// mandatory messages are errors, and messages whose confirm was lost in a
// connection drop are republished after the reconnect (at-least-once).
//
// [Subscriber] is a Watermill message.Subscriber (and SubscribeInitializer).
// Its output channel stays open across reconnects and server-side consumer
// cancels and closes only on Close or when Subscribe's ctx ends. MaxInFlight
// (default 1, Watermill's ordering guarantee) lets several handlers run at
// once. Each message carries ack.Info in its context; its context is
// cancelled once it is settled. Acks of deliveries from a connection that
// has since been replaced are dropped and counted (the broker redelivers).
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
// and returns once every goroutine has ended; neither closes the connection,
// which belongs to the caller.
package warren
