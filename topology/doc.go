// Package topology declares RabbitMQ entities from plain specs and restores
// them after every reconnect.
package topology
