// Package bench compares warren with raw amqp091-go and watermill-amqp on one
// broker in one run. It is its own module so that watermill-amqp never
// becomes a dependency of warren. Run it with `make bench`.
package bench
