package warrentest

import (
	"slices"
	"strings"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren/broker"
)

// deletePrefixed ends a test in prefix mode: every queue and exchange of
// the test (the names Name gave, and what the Broker's connections
// declared with the test's Prefix) is deleted, over AMQP alone, so that a
// user allowed one vhost and nothing else cleans up after itself. warren's
// own infrastructure (warren.*: the delay levels) is shared by every test
// of the vhost and stays.
func (b *Broker) deletePrefixed() {
	b.mu.Lock()
	queues, exchanges := slices.Clone(b.names), slices.Clone(b.names)
	for _, c := range b.conns {
		snap := broker.RegistryOf(c).Snapshot()
		for _, q := range snap.Queues {
			queues = append(queues, q.Name)
		}
		for _, x := range snap.Exchanges {
			exchanges = append(exchanges, x.Name)
		}
	}
	b.mu.Unlock()
	mine := func(name string) bool { return !strings.HasPrefix(name, b.Prefix) }
	queues, exchanges = slices.DeleteFunc(queues, mine), slices.DeleteFunc(exchanges, mine)
	slices.Sort(queues)
	slices.Sort(exchanges)
	queues, exchanges = slices.Compact(queues), slices.Compact(exchanges)
	if len(queues)+len(exchanges) == 0 {
		return
	}
	c, err := amqp.Dial(b.base.String())
	if err != nil {
		b.t.Errorf("warrentest: delete the test's entities (%s*): %v", b.Prefix, err)
		return
	}
	defer c.Close()
	var ch *amqp.Channel
	// Each failure closes the channel: a fresh one for what follows. A
	// queue or exchange already gone is not a failure on RabbitMQ 3.x.
	do := func(what, name string, op func(*amqp.Channel) error) {
		if ch == nil || ch.IsClosed() {
			if ch, err = c.Channel(); err != nil {
				b.t.Errorf("warrentest: delete %s %s: %v", what, name, err)
				return
			}
		}
		if err := op(ch); err != nil {
			b.t.Errorf("warrentest: delete %s %s: %v", what, name, err)
		}
	}
	for _, q := range queues {
		do("queue", q, func(ch *amqp.Channel) error { _, err := ch.QueueDelete(q, false, false, false); return err })
	}
	for _, x := range exchanges {
		do("exchange", x, func(ch *amqp.Channel) error { return ch.ExchangeDelete(x, false, false) })
	}
}
