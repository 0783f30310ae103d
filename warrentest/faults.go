package warrentest

import (
	"context"
	"time"

	"github.com/warrenmq/warren/internal/rabbittest"
)

// Proxy puts a fault proxy (in-process, on a loopback port) between the test and the
// broker and returns the URL to give the service under test; Conn and
// ConnURL use it from then on. Cut, Drop and Restore act on it.
func (b *Broker) Proxy() string {
	b.t.Helper()
	b.mu.Lock()
	if b.proxy == nil {
		b.proxy = rabbittest.NewProxy(b.t, b.base.Host)
	}
	b.mu.Unlock()
	return b.ConnURL()
}

func (b *Broker) needProxy() *rabbittest.Proxy {
	b.t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.proxy == nil {
		b.t.Fatal("warrentest: call Proxy first and connect through its URL: a fault needs the proxy in the path")
	}
	return b.proxy
}

// Cut closes every connection through the proxy and refuses new ones until
// Restore: the network is down.
func (b *Broker) Cut() { b.needProxy().Cut() }

// Restore lets connections through the proxy again after Cut.
func (b *Broker) Restore() {
	b.t.Helper()
	if err := b.needProxy().Restore(); err != nil {
		b.t.Fatal(err)
	}
}

// Drop closes every connection through the proxy once; new ones get
// through: a blip.
func (b *Broker) Drop() {
	b.t.Helper()
	if err := b.needProxy().Drop(); err != nil {
		b.t.Fatal(err)
	}
}

func (b *Broker) ownNode(fault string) *rabbittest.Node {
	b.t.Helper()
	if !b.own {
		b.t.Fatalf("warrentest: %s reaches every connection of the node: give the test a node of its own (warrentest.New(t, warrentest.Own()))", fault)
	}
	return b.node
}

// Restart stops the test's own node gracefully and starts it again with
// its data (durable queues and persistent messages survive).
func (b *Broker) Restart() {
	b.t.Helper()
	if err := b.ownNode("Restart").Restart(); err != nil {
		b.t.Fatal(err)
	}
}

// Block raises a memory alarm on the test's own node: the broker blocks
// every publishing connection until Unblock.
func (b *Broker) Block() {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := b.ownNode("Block").RaiseMemoryAlarm(ctx); err != nil {
		b.t.Fatal(err)
	}
}

// Unblock clears the memory alarm.
func (b *Broker) Unblock() {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := b.ownNode("Unblock").ClearMemoryAlarm(ctx); err != nil {
		b.t.Fatal(err)
	}
}
