// Package conn owns one logical AMQP connection to RabbitMQ that survives
// whatever the network or the broker does.
package conn
