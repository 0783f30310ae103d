// Package rabbittest is warren's test harness: it gives every test a real
// RabbitMQ and every destructive test a broker of its own.
//
// # The shared broker
//
// [Shared] returns the URL of the broker on 127.0.0.1:5672 (the one
// scripts/broker.sh makes sure of) and a name prefix unique to the test. A
// package that calls [Main] from its TestMain gets a vhost of its own on that
// broker, created before its tests and deleted after them, so packages run in
// parallel without seeing each other's queues. Names made with
// [Broker.Name] are deleted again when the test ends. The shared broker is
// never stopped, restarted or reconfigured by anything here.
//
// # Disposable nodes
//
// [StartNode] starts a RabbitMQ node of its own: own node name, AMQP port,
// distribution port, config, data and log directories. Tests may stop it,
// restart it, kill it, cut its connections or raise an alarm on it; the
// harness kills it by its own process group when the test ends. A node takes
// a few seconds to boot, so a package's tests should share one (see [NewNode]
// for TestMain use).
//
// # Fault proxy
//
// [NewProxy] puts a TCP fault proxy of its own (the standard library only) in front of any
// broker, to cut, stall or slow connections on demand.
package rabbittest
