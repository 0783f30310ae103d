// Package interop tests warren beside the libraries its users run today,
// on a real broker: watermill-amqp services sharing queues with warren
// routes during a migration (and a rollback). It is a module of its own, so
// that watermill-amqp is never in the core module's build.
package interop
