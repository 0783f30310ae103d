package warren

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren/topology"
)

// MetaDelayedUntil is Watermill's delay metadata (components/delay:
// delay.Message(msg, delay.For(d)) or delay.Until(t), RFC 3339): a message
// that carries a time in the future is delivered then, not before, and at
// most a second later, through broker queues alone (topology.Schedule):
// no plugin, and nothing in any process has to stay up for it.
const MetaDelayedUntil = "_watermill_delayed_until"

// delayOf is how long msg asks to wait; scheduled is false when it asks
// for nothing or for a time already past.
func delayOf(msg *message.Message) (time.Duration, bool, error) {
	v := msg.Metadata.Get(MetaDelayedUntil)
	if v == "" {
		return 0, false, nil
	}
	due, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return 0, false, fmt.Errorf("%w: message %s: metadata %s %q: want RFC 3339", ErrInvalidMessage, msg.UUID, MetaDelayedUntil, v)
	}
	d := time.Until(due)
	return d, d > 0, nil
}

// schedule sends pub to route's destination through the delay levels,
// declaring them (once per connection) and the destination's binding, and
// returns the exchange to publish to.
func (p *Publisher) schedule(ctx context.Context, topic string, route Route, pub *amqp.Publishing, delay time.Duration) (string, error) {
	bind, to := topology.ScheduleDestination(route.Exchange, route.RoutingKey)
	key := "\x00schedule\x00" + to
	epoch := p.ops.Registry().Epoch()
	if c, ok := p.routes.Get(key); !ok || c.epoch != epoch {
		t := topology.ScheduleTopology()
		t.Bindings = append(t.Bindings, bind)
		if err := p.ops.Apply(ctx, t, topology.KeepRegistered()); err != nil {
			return "", fmt.Errorf("warren: declare the delay levels for topic %q: %w", topic, err)
		}
		p.routes.Put(key, cachedRoute{route, epoch})
	}
	exchange, err := topology.Schedule(pub, delay, to)
	if err != nil {
		return "", fmt.Errorf("%w: topic %q: %w", ErrInvalidMessage, topic, err)
	}
	return exchange, nil
}

// deliveredExchange is the exchange a delivery was published to: for a
// scheduled message, the destination it was scheduled for (the default
// exchange for a queue), not the delay levels' deliver exchange that
// handed it over at its due time.
func deliveredExchange(d *amqp.Delivery) string {
	if d.Exchange != topology.ScheduleDeliverExchange {
		return d.Exchange
	}
	to, _ := d.Headers[topology.HeaderScheduleTo].(string)
	if x, ok := strings.CutPrefix(to, "x:"); ok {
		return x
	}
	return ""
}
