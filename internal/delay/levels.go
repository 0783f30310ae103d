package delay

import (
	"fmt"
	"math/bits"
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren/ack"
	"github.com/warrenmq/warren/internal/headers"
	"github.com/warrenmq/warren/topology"
)

// Scheduled delivery without the delayed-message plugin, on broker queues
// alone: binary delay levels, as NServiceBus's delay infrastructure. Level k
// is a topic exchange and a quorum queue whose TTL is 2^k seconds. A
// scheduled message's routing key starts with its delay in seconds as 28
// binary digits, one word each, most significant first: the exchange of
// level k sends it to its queue when its digit k is 1, straight on to level
// k-1 when it is 0, and the queue dead-letters it after its TTL to level
// k-1, at least once. After level 0 the deliver exchange hands it to its
// destination. A delay of d seconds waits exactly d seconds in queues, so a
// message is due no earlier than asked and at most a second later (delays
// round up to whole seconds).
//
// A message enters at the level of its delay's highest binary digit, so a
// vhost needs only the levels of the delays it uses: LevelsFor(d) of them,
// 0 to LevelsFor(d)-1 (delays up to 2^n-1 seconds with n levels). Levels
// are declared when a router or a Publisher first needs them and extended
// when a longer delay comes; each declared level is a quorum queue (a Raft
// group on a cluster) and a topic exchange.
//
// Each level's queue holds messages of one TTL, so none waits behind a
// longer one (per-message TTLs expire only at a queue's head, PITFALLS 18),
// and quorum queues keep waiting messages across a broker restart.
//
// The routing key carries the routing, never a header: a message scheduled
// to a queue reaches it with the headers it was published with (and the
// broker's x-death of its hops), nothing of warren's. Its key ends in "q."
// and the queue's name, and the deliver exchange binds each destination
// queue by that key (ScheduleDestination). A message the deliver exchange
// cannot route to a queue that way is handed over by a warren process: a
// destination exchange (whose routing warren cannot know: a topic exchange
// that routes the key nowhere when the message is due would leave it
// unroutable, and the broker's at-least-once dead-lettering would retry it
// forever, unseen), a queue whose name cannot be a key, a message whose
// consumers cannot read the broker's x-death (Forward), and a queue that is
// gone when the message is due (the deliver exchange's alternate exchange
// takes it). Those wait in ScheduleDueQueue until a process publishes them
// to their destination, mandatory and confirmed, without the plumbing; what
// no queue takes then goes to ScheduleUnroutableQueue with the reason and
// its destination, where an operator sees it and replays it.
const (
	// ScheduleLevels is how many levels there are: delays up to
	// 2^ScheduleLevels-1 seconds (8.5 years).
	ScheduleLevels = 28
	// ScheduleDeliverExchange hands due messages to their destinations.
	ScheduleDeliverExchange = "warren.delay.deliver"
	// ScheduleDueQueue holds due messages a process hands over (see
	// above).
	ScheduleDueQueue = "warren.delay.due"
	// ScheduleUnroutableQueue holds due messages no queue took, each with
	// warren's dead-letter headers: the reason (error type "unroutable",
	// or the broker's refusal), the destination's exchange and routing key.
	ScheduleUnroutableQueue = "warren.delay.unroutable"
	// scheduleUnroutedExchange is the deliver exchange's alternate
	// exchange: what it cannot route goes to ScheduleDueQueue.
	scheduleUnroutedExchange = "warren.delay.unrouted"
	// HeaderScheduleExchange and HeaderScheduleRoutingKey name the
	// destination of a message a process hands over.
	HeaderScheduleExchange   = headers.ScheduleHeaderPrefix + "exchange"
	HeaderScheduleRoutingKey = headers.ScheduleHeaderPrefix + "routing-key"
)

// ErrDelayTooLong: a delay beyond what the levels can hold.
var ErrDelayTooLong = ack.NamedError("warren: delay too long for the delay levels", "delay_too_long")

func scheduleExchange(level int) string { return fmt.Sprintf("warren.delay.%02d", level) }

// ScheduleQueue is the queue where messages wait at a delay level.
func ScheduleQueue(level int) string { return fmt.Sprintf("warren.delay.%02d.wait", level) }

// anyDigits matches the digits of levels above k (level k's own is next).
func anyDigits(n int) string { return strings.Repeat("*.", n) }

// LevelsFor is how many levels a delay of d needs: those of its highest
// binary digit of seconds and below (d rounded up to whole seconds, at
// least one level; ScheduleLevels for a delay too long, which Schedule
// refuses).
func LevelsFor(d time.Duration) int {
	return min(bits.Len64(uint64(delaySeconds(d))), ScheduleLevels)
}

// delaySeconds is d rounded up to whole seconds, at least 1.
func delaySeconds(d time.Duration) int64 {
	return max(int64((d+time.Second-1)/time.Second), 1)
}

// handOverTopology is what the hand-over of due messages needs: the
// deliver exchange, its alternate exchange and the due and unroutable
// queues. The levels come with ScheduleTopology.
func handOverTopology() topology.Topology {
	return topology.Topology{
		Exchanges: []topology.ExchangeSpec{
			{Name: scheduleUnroutedExchange, Type: topology.Fanout, Durable: true},
			{Name: ScheduleDeliverExchange, Type: topology.Topic, Durable: true, Args: topology.ExchangeArgs{AlternateExchange: scheduleUnroutedExchange}},
		},
		Queues: []topology.QueueSpec{
			{Name: ScheduleDueQueue, Durable: true, Args: topology.QueueArgs{Type: topology.Quorum}},
			{Name: ScheduleUnroutableQueue, Durable: true, Args: topology.QueueArgs{Type: topology.Quorum}},
		},
		Bindings: []topology.BindSpec{
			{Source: scheduleUnroutedExchange, Destination: ScheduleDueQueue, Kind: topology.BindQueue},
			{Source: ScheduleDeliverExchange, Destination: ScheduleDueQueue, Kind: topology.BindQueue, RoutingKey: anyDigits(ScheduleLevels) + "f"},
		},
	}
}

// ScheduleTopology is the delay levels 0 to levels-1 (levels is clamped to
// 1..ScheduleLevels), the deliver exchange and the queues of the messages a
// process hands over. Declare it once per connection (the registry makes
// every later declaration free); declaring it again with more levels
// extends the levels.
func ScheduleTopology(levels int) topology.Topology {
	levels = min(max(levels, 1), ScheduleLevels)
	t := handOverTopology()
	for k := range levels {
		next := ScheduleDeliverExchange
		if k > 0 {
			next = scheduleExchange(k - 1)
		}
		above := anyDigits(ScheduleLevels - 1 - k)
		t.Exchanges = append(t.Exchanges, topology.ExchangeSpec{Name: scheduleExchange(k), Type: topology.Topic, Durable: true})
		t.Queues = append(t.Queues, topology.QueueSpec{Name: ScheduleQueue(k), Durable: true, Args: topology.QueueArgs{
			Type:               topology.Quorum,
			MessageTTL:         time.Duration(1<<k) * time.Second,
			DeadLetterExchange: next,
			// At-least-once dead-lettering needs reject-publish: a message
			// is never dropped between two levels.
			DeadLetterStrategy: topology.AtLeastOnce,
			Overflow:           topology.RejectPublish,
		}})
		t.Bindings = append(t.Bindings,
			topology.BindSpec{Source: scheduleExchange(k), Destination: ScheduleQueue(k), Kind: topology.BindQueue, RoutingKey: above + "1.#"},
			topology.BindSpec{Source: scheduleExchange(k), Destination: next, Kind: topology.BindExchange, RoutingKey: above + "0.#"},
		)
	}
	return t
}

// maxScheduleKey is the longest routing key AMQP carries.
const maxScheduleKey = 255

// ScheduleRoute is how a scheduled message gets to its destination: its
// routing key's tail, the headers that name its destination when a process
// hands it over, and the binding the deliver exchange needs (nil then).
type ScheduleRoute struct {
	tail    string
	headers amqp.Table
	// Binding hands due messages to their queue; nil when a process hands
	// them over.
	Binding *topology.BindSpec
}

// Forwarded reports whether a process hands the messages over.
func (r ScheduleRoute) Forwarded() bool { return r.Binding == nil }

// ScheduleDestination is the route of messages scheduled to an exchange and
// routing key: through the deliver exchange straight to the queue when the
// destination is a queue (exchange "") whose name can be a routing key's
// tail (no word "*" or "#", short enough), otherwise (an exchange, or with
// forward) by a process that publishes them when they are due, without any
// header of warren's or of the broker's hops.
func ScheduleDestination(exchange, routingKey string, forward bool) ScheduleRoute {
	if exchange == "" && !forward && keyable(routingKey) {
		b := topology.BindSpec{Source: ScheduleDeliverExchange, Destination: routingKey, Kind: topology.BindQueue,
			RoutingKey: anyDigits(ScheduleLevels) + "q." + routingKey}
		return ScheduleRoute{tail: "q." + routingKey, Binding: &b}
	}
	return ScheduleRoute{tail: "f", headers: amqp.Table{HeaderScheduleExchange: exchange, HeaderScheduleRoutingKey: routingKey}}
}

// keyable reports whether a queue name can end a routing key and a binding
// key that matches it alone.
func keyable(queue string) bool {
	if queue == "" || 2*ScheduleLevels+len("q.")+len(queue) > maxScheduleKey {
		return false
	}
	for w := range strings.SplitSeq(queue, ".") {
		if w == "*" || w == "#" {
			return false
		}
	}
	return true
}

// Schedule routes msg through the delay levels for delay (rounded up to
// whole seconds; at least one) on route: it sets the headers a forwarded
// message needs and returns the exchange and routing key to publish it to.
//
// It enters the levels at the one of the delay's highest binary digit
// (LevelsFor(delay)-1): the levels above are not needed, and need not exist.
func Schedule(msg *amqp.Publishing, delay time.Duration, route ScheduleRoute) (exchange, key string, err error) {
	secs := delaySeconds(delay)
	if secs >= 1<<ScheduleLevels {
		return "", "", fmt.Errorf("%w: %v (at most %v)", ErrDelayTooLong, delay, time.Duration(1<<ScheduleLevels-1)*time.Second)
	}
	var b strings.Builder
	b.Grow(2*ScheduleLevels + len(route.tail))
	for k := ScheduleLevels - 1; k >= 0; k-- {
		if secs&(1<<k) != 0 {
			b.WriteString("1.")
		} else {
			b.WriteString("0.")
		}
	}
	b.WriteString(route.tail)
	if len(route.headers) > 0 {
		h := make(amqp.Table, len(msg.Headers)+len(route.headers))
		for k, v := range msg.Headers {
			h[k] = v
		}
		for k, v := range route.headers {
			h[k] = v
		}
		msg.Headers = h
	}
	return scheduleExchange(LevelsFor(delay) - 1), b.String(), nil
}

// isLevelExchange reports whether x is the exchange of a delay level.
func isLevelExchange(x string) bool {
	// Every consumed delivery asks: no fmt on that path.
	digits, ok := strings.CutPrefix(x, "warren.delay.")
	if !ok || len(digits) != 2 || digits[0] < '0' || digits[0] > '9' || digits[1] < '0' || digits[1] > '9' {
		return false
	}
	return int(digits[0]-'0')*10+int(digits[1]-'0') < ScheduleLevels
}

// ScheduledFrom is where a message delivered by the delay levels was
// scheduled to: for a delivery through the deliver exchange, the default
// exchange and the queue its routing key names; for a forwarded one (a
// delivery of ScheduleDueQueue), the exchange and routing key its headers
// name. ok is false for any other delivery.
func ScheduledFrom(exchange, key string, h amqp.Table) (origExchange, origKey string, ok bool) {
	if x, isString := h[HeaderScheduleExchange].(string); isString {
		k, _ := h[HeaderScheduleRoutingKey].(string)
		return x, k, true
	}
	if exchange != ScheduleDeliverExchange && !isLevelExchange(exchange) {
		return "", "", false
	}
	rest := key
	for range ScheduleLevels {
		var word string
		word, rest, _ = strings.Cut(rest, ".")
		if word != "0" && word != "1" {
			return "", "", false
		}
	}
	if q, isQueue := strings.CutPrefix(rest, "q."); isQueue {
		return "", q, true
	}
	return "", "", false
}
