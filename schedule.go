package warren

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/internal/delay"
	"github.com/warrenmq/warren/internal/headers"
)

// MetaDelayedUntil is Watermill's delay metadata (components/delay:
// delay.Message(msg, delay.For(d)) or delay.Until(t), RFC 3339): a message
// that carries a time in the future is delivered then, not before, and at
// most a second later, through broker queues (delay.Schedule): no plugin.
//
// Publish returns once the broker holds the message in the delay levels:
// whether its destination takes it is known only when it is due, so
// PublisherConfig.Mandatory cannot fail a scheduled message's Publish.
// Instead every due message is published as if mandatory: to a queue, by
// the broker itself; to an exchange (or a queue that is gone by then), by a
// warren process of the vhost (the hand-over: every Publisher that
// scheduled and every router with delayed retries takes part), mandatory and
// confirmed. A due message no queue takes is kept in
// delay.ScheduleUnroutableQueue with the reason and its destination's
// exchange and routing key, counted (warren.scheduled.unroutable) and
// logged at Warn; `warren dlq replay warren.delay.unroutable` sends it on
// once a queue is bound. Nothing scheduled is lost, and nothing is retried
// forever unseen.
const MetaDelayedUntil = "_watermill_delayed_until"

// metaDelayedFor is the delay Watermill's components/delay writes beside
// MetaDelayedUntil.
const metaDelayedFor = "_watermill_delayed_for"

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

// schedule sends pub to exchange and key through the delay levels,
// declaring them (once per connection) and the destination's binding, and
// returns the exchange and routing key to publish to. It takes part in the
// hand-over of due messages from then until Close.
func (p *Publisher) schedule(ctx context.Context, exchange, key string, pub *amqp.Publishing, wait time.Duration) (string, string, error) {
	// A per-message TTL would expire the message out of a delay level
	// early: it travels in a header, and the hand-over restores it.
	forward := p.cfg.ForwardScheduled || pub.Expiration != ""
	if pub.Expiration != "" {
		h := make(amqp.Table, len(pub.Headers)+1)
		for k, v := range pub.Headers {
			h[k] = v
		}
		h[headers.ScheduledExpiration] = pub.Expiration
		pub.Headers, pub.Expiration = h, ""
	}
	// Watermill's delay metadata asked for this; delivered, it would only
	// confuse (a consumer that republishes the message, say).
	delete(pub.Headers, MetaDelayedUntil)
	delete(pub.Headers, metaDelayedFor)
	route := delay.ScheduleDestination(exchange, key, forward)
	// The levels this delay needs: a longer delay later extends them.
	levels := delay.LevelsFor(wait)
	cacheKey := "\x00schedule\x00" + strconv.Itoa(levels) + "\x00" + exchange + "\x00" + key
	if route.Forwarded() {
		cacheKey = "\x00schedule\x00" + strconv.Itoa(levels)
	}
	epoch := p.ops.Registry().Epoch()
	if c, ok := p.routes.Get(cacheKey); !ok || c.epoch != epoch {
		t := delay.ScheduleTopology(levels)
		if route.Binding != nil {
			t.Bindings = append(t.Bindings, *route.Binding)
		}
		if err := p.ops.Apply(ctx, t, broker.IfMissing()); err != nil {
			return "", "", fmt.Errorf("warren: declare the delay levels for %s key %q: %w", displayExchange(exchange), key, err)
		}
		p.routes.Put(cacheKey, cachedRoute{Destination{}, epoch})
	}
	if err := p.joinHandOver(ctx); err != nil {
		return "", "", err
	}
	x, k, err := delay.Schedule(pub, wait, route)
	if err != nil {
		return "", "", fmt.Errorf("%w: %w", ErrInvalidMessage, err)
	}
	return x, k, nil
}

// joinHandOver makes the Publisher take part in the hand-over of due
// messages (once; Close leaves it).
func (p *Publisher) joinHandOver(ctx context.Context) error {
	p.handOverMu.Lock()
	defer p.handOverMu.Unlock()
	if p.handOver != nil {
		return nil
	}
	h := delay.Of(p.conn)
	if err := h.Acquire(ctx, p.log, p.cfg.Telemetry); err != nil {
		return err
	}
	p.handOver = h
	return nil
}

func displayExchange(x string) string {
	if x == "" {
		return "the default exchange"
	}
	return fmt.Sprintf("exchange %q", x)
}

// deliveredVia is where a delivery was published to: for a message the
// delay levels delivered, the destination it was scheduled for (the default
// exchange and its queue), not the deliver exchange and the levels' routing
// key.
func deliveredVia(d *amqp.Delivery) (exchange, key string) {
	if x, k, ok := delay.ScheduledFrom(d.Exchange, d.RoutingKey, nil); ok {
		return x, k
	}
	return d.Exchange, d.RoutingKey
}
