package topology

import (
	"fmt"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren/ack"
	"github.com/warrenmq/warren/internal/headers"
)

// Scheduled delivery without the delayed-message plugin, on broker queues
// alone: binary delay levels, as NServiceBus's delay infrastructure. Level k
// is a headers exchange and a quorum queue whose TTL is 2^k seconds. A
// message carries one header per level saying whether it waits there: the
// exchange of level k sends it to its queue (header "1") or straight on to
// level k-1 (header "0"); the queue dead-letters it after its TTL to level
// k-1, at least once. After level 0 the deliver exchange hands it to its
// destination, a queue or an exchange, by a header naming it; the routing
// key is the original one all the way. A delay of d seconds waits exactly
// d seconds in queues, so a message is due no earlier than asked and at
// most a second later (delays round up to whole seconds).
//
// Each level's queue holds messages of one TTL, so none waits behind a
// longer one (per-message TTLs expire only at a queue's head, PITFALLS 18),
// and quorum queues keep waiting messages across a broker restart.
const (
	// ScheduleLevels is how many levels there are: delays up to
	// 2^ScheduleLevels-1 seconds (8.5 years).
	ScheduleLevels = 28
	// ScheduleDeliverExchange hands due messages to their destinations.
	ScheduleDeliverExchange = "warren.delay.deliver"
	// HeaderScheduleTo names a scheduled message's destination ("q:" and a
	// queue name, or "x:" and an exchange name).
	HeaderScheduleTo = headers.ScheduleHeaderPrefix + "to"
)

// ErrDelayTooLong: a delay beyond what the levels can hold.
var ErrDelayTooLong = ack.NamedError("topology: delay too long for the delay levels", "delay_too_long")

func scheduleExchange(level int) string { return fmt.Sprintf("warren.delay.%02d", level) }

// ScheduleQueue is the queue where messages wait at a delay level.
func ScheduleQueue(level int) string { return fmt.Sprintf("warren.delay.%02d.wait", level) }

func scheduleHeader(level int) string {
	return fmt.Sprintf("%s%02d", headers.ScheduleHeaderPrefix, level)
}

// ScheduleTopology is the delay levels and the deliver exchange. Declare it
// once per connection (the registry makes every later declaration free).
func ScheduleTopology() Topology {
	t := Topology{Exchanges: []ExchangeSpec{{Name: ScheduleDeliverExchange, Type: Headers, Durable: true}}}
	for k := 0; k < ScheduleLevels; k++ {
		next := ScheduleDeliverExchange
		if k > 0 {
			next = scheduleExchange(k - 1)
		}
		t.Exchanges = append(t.Exchanges, ExchangeSpec{Name: scheduleExchange(k), Type: Headers, Durable: true})
		t.Queues = append(t.Queues, QueueSpec{Name: ScheduleQueue(k), Durable: true, Args: QueueArgs{
			Type:               Quorum,
			MessageTTL:         time.Duration(1<<k) * time.Second,
			DeadLetterExchange: next,
			// At-least-once dead-lettering needs reject-publish: a message
			// is never dropped between two levels.
			DeadLetterStrategy: AtLeastOnce,
			Overflow:           RejectPublish,
		}})
		t.Bindings = append(t.Bindings,
			BindSpec{Source: scheduleExchange(k), Destination: ScheduleQueue(k), Kind: BindQueue,
				Args: amqp.Table{"x-match": "all", scheduleHeader(k): "1"}},
			BindSpec{Source: scheduleExchange(k), Destination: next, Kind: BindExchange,
				Args: amqp.Table{"x-match": "all", scheduleHeader(k): "0"}},
		)
	}
	return t
}

// ScheduleDestination is the binding that hands due messages to a queue
// (exchange "") or to an exchange, and the header value that names it.
func ScheduleDestination(exchange, routingKey string) (BindSpec, string) {
	if exchange == "" {
		to := "q:" + routingKey
		return BindSpec{Source: ScheduleDeliverExchange, Destination: routingKey, Kind: BindQueue,
			Args: amqp.Table{"x-match": "all", HeaderScheduleTo: to}}, to
	}
	to := "x:" + exchange
	return BindSpec{Source: ScheduleDeliverExchange, Destination: exchange, Kind: BindExchange,
		Args: amqp.Table{"x-match": "all", HeaderScheduleTo: to}}, to
}

// Schedule routes msg through the delay levels for delay (rounded up to
// whole seconds; at least one) to the destination named to
// (ScheduleDestination): it sets msg's headers and returns the exchange to
// publish it to, with its original routing key.
func Schedule(msg *amqp.Publishing, delay time.Duration, to string) (string, error) {
	secs := int64((delay + time.Second - 1) / time.Second)
	if secs < 1 {
		secs = 1
	}
	if secs >= 1<<ScheduleLevels {
		return "", fmt.Errorf("%w: %v (at most %v)", ErrDelayTooLong, delay, time.Duration(1<<ScheduleLevels-1)*time.Second)
	}
	if msg.Headers == nil {
		msg.Headers = amqp.Table{}
	}
	for k := 0; k < ScheduleLevels; k++ {
		bit := "0"
		if secs&(1<<k) != 0 {
			bit = "1"
		}
		msg.Headers[scheduleHeader(k)] = bit
	}
	msg.Headers[HeaderScheduleTo] = to
	return scheduleExchange(ScheduleLevels - 1), nil
}
