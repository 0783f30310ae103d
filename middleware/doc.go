// Package middleware holds Watermill handler middleware for RabbitMQ
// consumers. Each is a plain message.HandlerMiddleware that works on any
// Watermill router and with any Pub/Sub; what is AMQP-specific (delivery
// info, dispositions, attempt counts) comes through package ack.
//
// # The stack
//
// From the outside in (the order of a router route's stack, which adds a
// panic recoverer outside and the route's Timeout on each attempt):
//
//	Tracing -> Ack -> DeadLetter -> DelayedRetry -> Retry -> handler
//
// To unit-test a route, run it with package router/routertest, which runs
// the router's own stack, rather than retyping this order.
//
//   - [Retry] retries in-process with exponential backoff and jitter, a fresh
//     context per attempt (Watermill issue 467), bounded well below the
//     broker's consumer_timeout.
//   - [DelayedRetry] then schedules a copy back to the work queue after
//     its level's delay (Watermill's delay metadata: warren's Publisher
//     routes it through the broker's delay levels, delay.Schedule),
//     counting attempts in its own header, and acks the original only once
//     the republish is confirmed.
//   - [DeadLetter] takes what is left: rejects it to the broker's
//     dead-letter exchange, or publishes it to a dead-letter queue with
//     diagnostic headers, confirmed before the original is acked.
//   - [Ack] turns the final result into an ack.Disposition (success acks;
//     ack.AsRequeue errors requeue; anything else is rejected with requeue, or
//     dead-lettered when Permanent) and recovers panics into errors.
//   - [Tracing] gives a process span to a message that has none (one from a
//     subscriber other than warren's, which traces its own deliveries and
//     whose publisher traces its sends: package telemetry). Retry,
//     DelayedRetry and DeadLetter record every failed attempt on the
//     message's process span, and count retries and dead letters.
//
// ack.Permanent errors are never retried; ack.AsRequeue errors are requeued
// (after the Subscriber's backoff). Every constructor takes a Config, fills
// its defaults, validates it and returns (message.HandlerMiddleware, error):
// a bad field is a *ConfigError matching configerr.ErrInvalidConfig. Package
// middlewaretest runs handlers through any of these without a broker;
// package router/routertest runs a whole route's stack.
package middleware
