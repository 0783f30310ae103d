// Package warren makes RabbitMQ a first-class Watermill backend.
//
// It provides a Watermill message.Publisher and message.Subscriber on top of
// package conn (a connection that reconnects by itself) and package topology
// (declarative specs restored after every reconnect). Package middleware
// holds the handler middleware (ack policy, retry, dead-letter, tracing) and
// package router wires whole services.
package warren
