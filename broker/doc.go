// Package broker is warren's per-connection engine: the registry of what
// was declared, its restore after every reconnect, the operations that
// declare and inspect, confirmed publishing and consumers. The specs it
// declares are package topology's plain data.
//
// # One registry per connection
//
// A connection has exactly one [Registry] ([RegistryOf]): every [Ops],
// Publisher, Subscriber and Router on it shares it, its one restore run, its
// channel pool and its consumer channels. Declarations are keyed (exchanges
// and queues by name, bindings by their tuple, consumers by tag): declaring
// what is recorded and declared on the current connection again costs no
// network call; declaring a name with other properties fails before the
// network with a [*ConflictError] naming the field ([WithForce] replaces
// it). [IfMissing] is for those who need an entity without owning it (a
// publisher): it declares only what does not exist, uses what exists as it
// is, and its weak record gives way to the owner's declaration. [Registry.OnRestored]
// and [Registry.LastRestore] report every restore run.
//
// # Operations
//
// [Ops] is a handle on the registry with its own timeout, confirm channels
// and consumers: it declares, binds, unbinds, deletes, checks, inspects,
// publishes (confirmed) and consumes. Every call takes a ctx;
// [OpsConfig.Timeout] applies when it has no deadline (amqp091-go has no RPC
// timeout of its own). Each call runs on a pool channel of its own, so a 404
// from one caller's passive declare never breaks another caller's channel.
// Broker refusals are [*conn.RefusedError] with the AMQP reply code (403
// [conn.ErrAccessRefused], 404 [conn.ErrNotFound], 405
// [conn.ErrResourceLocked], 406 [conn.ErrPreconditionFailed]); refused
// misuse (read-only entities) is [*OperationError].
//
// # Publishing
//
// [Ops.PublishAll] is warren's one confirm path (the Publisher publishes
// through it). It writes every message, then waits for their confirms; a
// message's own ctx bounds it alone. It keeps destinations the broker could
// refuse off shared channels (an exchange nobody here declared is checked
// once, passively), attributes a refusal that closes a channel to the
// messages it names (the rest are republished), finds an unexplained one by
// publishing the rest one at a time, and republishes only what a connection
// drop made unknown. [ReplyChannel] is the same path for requests over
// direct reply-to, on the one channel their replies can come back to; it
// hands a returned request to its caller by correlation id. Nacks are
// [ErrNacked], unroutable mandatory messages [ErrUnroutable], messages over
// the broker's maximum size [*MessageTooLargeError].
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
// Unless [NoRestore] is given, what Ops declares is recorded in the
// connection's [Registry] and restored by one conn restore hook on every new
// connection,
// before callers waiting for the connection are released, in the order
// exchanges, queues, queue bindings, exchange bindings, consumers. 405
// RESOURCE_LOCKED and 404 races of a fresh reconnect are retried; an entity
// that still fails is reported ([OpsConfig.OnRestoreError] and the log) and
// the rest continue ([RestoreReport]). Deleting, unbinding and stopping
// forget entities, and so does the broker's own removal of auto-delete ones.
// Empty queue names get a client-generated name ("warren.gen-" and 24 hex
// digits) that survives reconnects.
//
// # Consumers
//
// A [Consumer] ends only when its owner ends it (Stop, DeleteQueue through
// Ops, Close of its Ops or of the connection). Whatever the broker does to it
// (a basic.cancel because its queue was deleted or a quorum leader moved,
// its channel closed by an error, its connection lost) it comes back by
// itself: it declares a registered queue again from its spec, with its
// bindings; it waits with backoff for a queue warren did not declare; it
// resubscribes. [Consumer.Consuming] reports the gap and
// [ConsumerSpec.OnEvent] is told of each step. Consumers share channels (32
// to a channel; exclusive consumers alone), so a connection is not capped at
// channel_max consumers (PITFALLS 27).
//
// [Delivery.Ack] may hold an ack for a few milliseconds, and never past a
// quarter of the consumer's prefetch, to send it with others of its channel
// as one basic.ack with multiple set, which never covers a delivery not
// yet settled, whichever consumer of the channel holds it (PITFALLS 60).
// [Delivery.AckNow] sends at once; nacks and rejects always do.
package broker
