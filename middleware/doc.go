// Package middleware holds Watermill handler middleware for RabbitMQ
// consumers: ack policy, retry, delayed retry, dead-letter and tracing.
package middleware
