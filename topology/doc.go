// Package topology is RabbitMQ topology as plain data: specs for exchanges,
// queues and bindings, a Topology of them, and the rules they are checked
// against. Nothing here talks to a broker (package broker declares and
// restores them); a Topology can be printed, compared (FirstDifference),
// loaded from a file and tested table-style.
//
// # Specs
//
// [ExchangeSpec], [DelayedExchangeSpec], [DefaultExchange], [QueueSpec] (with
// typed [QueueArgs]: durations in time.Duration, sent in milliseconds) and
// [BindSpec] (queue or exchange destination, arguments for headers
// exchanges) are plain structs. Each has Validate, which names the field at
// fault in a [*SpecError] (errors.Is [ErrInvalidSpec]).
//
// # RabbitMQ versions
//
// A [Target] is a RabbitMQ version whose rules a spec is checked against
// ([QueueSpec.ValidateFor], [Topology.ValidateFor]): what 4.0 and 4.3
// refuse or change, each rule citing the release notes it comes from
// ([RabbitMQ310] to [RabbitMQ43]).
package topology
