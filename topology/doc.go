// Package topology declares RabbitMQ entities from plain specs and restores
// them after every reconnect.
//
// # Specs
//
// [ExchangeSpec], [DelayedExchangeSpec], [DefaultExchange], [QueueSpec] (with
// typed [QueueArgs]: durations in time.Duration, sent in milliseconds),
// [BindSpec] (queue or exchange destination, arguments for headers
// exchanges) and [ConsumerSpec] are plain structs. Each has Validate, which
// runs before any network call and names the field at fault in a
// [*SpecError].
//
// # Operations
//
// [Ops] declares, binds, unbinds, deletes, checks, inspects, publishes
// (confirmed) and consumes. Every call takes a ctx; [OpsConfig.Timeout]
// applies when it has no deadline (amqp091-go has no RPC timeout of its own).
// Each call runs on a channel of its own, so a 404 from one caller's passive
// declare never breaks another caller's channel. Broker refusals are
// [*ChannelError] with the AMQP reply code; refused misuse (read-only
// entities) is [*OperationError].
//
// [WithForce] recreates an entity that exists with other properties (406):
// an exchange gets its recorded bindings back; a queue holding messages is
// never deleted unless [AcceptMessageLoss] is given too, and the error says
// how many messages are at stake.
//
// The default exchange and amq.* names are read-only, as is any spec with
// ReadOnly: declaring or deleting them is refused, and [Ops.Apply] checks
// that they exist instead.
//
// # Restore
//
// Unless [NoRestore] is given, what Ops declares is recorded in its
// [Registry] and restored by a conn restore hook on every new connection,
// before callers waiting for the connection are released, in the order
// exchanges, queues, queue bindings, exchange bindings, consumers. 405
// RESOURCE_LOCKED and 404 races of a fresh reconnect are retried; an entity
// that still fails is reported ([OpsConfig.OnRestoreError] and the log) and
// the rest continue. Deleting, unbinding and stopping forget entities, and so
// does the broker's own removal of auto-delete ones. Empty queue names get a
// client-generated name ([GeneratedQueueName]) that survives reconnects.
//
// # Consumers
//
// A [Consumer] keeps its handler across reconnects and across server-side
// cancels (a deleted and recreated queue, a quorum leader moving): it
// resubscribes instead of silently stopping, and ends with a reason when its
// queue is gone for good.
package topology
