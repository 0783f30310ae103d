package broker

import (
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// ackBatch holds back the acks of one channel's deliveries for a moment and
// sends a run of them as one basic.ack with multiple set: a frame, a write
// and amqp091-go's six allocations for many messages instead of one each
// (issue 33: an ack a message was the largest cost of a consumed message
// after the delivery itself).
//
// A multiple ack settles every delivery of the channel up to its tag,
// whichever consumer of the channel it went to (PITFALLS 60), so it is sent
// only for a tag at or below the frontier: the highest tag with every tag
// up to it settled. Delivery tags are dense per channel (the broker numbers
// every delivery of a channel, acked or not, 1, 2, 3, ...), so a tag this
// batch has not heard of is a delivery not settled yet, and the frontier
// stops below it: a message another consumer holds, or one amqp091-go has
// not handed out, is never acked by another's run. And the tag of a
// multiple ack is always one whose own ack is held: the broker closes the
// channel (406 unknown delivery tag) for a multiple ack whose tag is no
// longer outstanding.
//
// A held ack goes out:
//   - once the held acks reach the delivery's limit (a quarter of its
//     consumer's prefetch, so the broker keeps the window full);
//   - ackDelay after the first of them, whatever else happens (not when
//     a reader parks for want of deliveries: held acks drain the window,
//     the reader parks often, and a flush there sent runs of one or two:
//     MEASUREMENTS.md, the nineteenth pass);
//   - when a consumer leaves the channel (Stop, Pause, a restore);
//   - when the connection is closed on purpose, by Close or Refresh
//     (channelSet.flushAcks);
//   - at once for a caller that must know it left (AckNow).
//
// An ack held past the frontier (a delivery below it still in a handler)
// goes out alone at the delay or the limit. A nack, a reject and a requeue
// go out at once, and are recorded after their frame is written, so that a
// multiple ack never passes a tag whose own settlement has not left.
type ackBatch struct {
	mu sync.Mutex
	// acker is the channel's, taken from the first delivery held.
	acker amqp.Acknowledger
	// front: every tag up to it is settled (held or sent).
	front uint64
	// last is the highest held tag at or below front (0: none held there);
	// a multiple ack at last sends every held ack up to it.
	last uint64
	// prefix and beyond count the held acks at or below front, and above.
	prefix, beyond int
	// ring holds the state of tags front+1 .. front+len(ring), tag t at
	// t&(len(ring)-1); its length is a power of two.
	ring  []tagState
	timer *time.Timer
	armed bool
	// closed: its consumers have left, or a delivery stayed unsettled
	// while maxSpan more came after it; whatever comes now is sent at once.
	closed bool
}

// tagState is what a batch knows of one delivery tag above its frontier.
type tagState uint8

const (
	tagOpen tagState = iota // not settled (or not heard of)
	tagHeld                 // acked, the ack not sent yet
	tagSent                 // settled, and its frame written (or none needed)
)

// ackDelay bounds how long an ack is held: the broker counts a held ack's
// message as unacknowledged, so it is redelivered if the connection dies
// meanwhile, as any message in hand. A variable for the tests only.
var ackDelay = 2 * time.Millisecond

// maxHeld caps the acks a batch holds for one limit.
const maxHeld = 32

// maxSpan bounds the ring: a delivery nobody settles (a handler of
// Ops.Consume that drops one) stops the frontier for good, and the ring
// would grow a byte a delivery after it. Past maxSpan the batch sends
// everything held and holds nothing more on that channel.
const maxSpan = 1 << 16

// holdLimit is how many acks a consumer's deliveries may have held at once:
// a quarter of its prefetch (the broker sends no more once the window is
// full of unacknowledged deliveries, and a held ack counts there), at most
// maxHeld; below 2, none is held.
func holdLimit(s ConsumerSpec, stream bool) int {
	if s.AutoAck || stream {
		return 0
	}
	if s.PrefetchCount == 0 {
		return maxHeld
	}
	return min(s.PrefetchCount/4, maxHeld)
}

// ack acknowledges d: held when limit allows, sent (with the acks held
// before it where it can) when the held acks reach limit.
func (b *ackBatch) ack(d *amqp.Delivery, limit int) error {
	if limit < 2 {
		err := d.Ack(false)
		b.sent(d.DeliveryTag)
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.hold(d) {
		return d.Ack(false)
	}
	if b.prefix+b.beyond < limit {
		b.arm()
		return nil
	}
	err := b.sendPrefix()
	if b.beyond >= limit {
		if e := b.sendBeyond(); err == nil {
			err = e
		}
	}
	if b.prefix+b.beyond > 0 {
		b.arm()
	}
	return err
}

// ackNow acknowledges d and sends it, with every ack held that it can
// cover, before it returns.
func (b *ackBatch) ackNow(d *amqp.Delivery) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.hold(d) {
		return d.Ack(false)
	}
	err := b.sendPrefix()
	if b.heldAt(d.DeliveryTag) {
		// Past the frontier: alone.
		if e := b.sendOne(d.DeliveryTag); err == nil {
			err = e
		}
	}
	return err
}

// hold records d's ack as held, unless the batch is closed (false: the
// caller sends it). b.mu held.
func (b *ackBatch) hold(d *amqp.Delivery) bool {
	if b.closed {
		return false
	}
	if b.acker == nil {
		b.acker = d.Acknowledger
	}
	b.mark(d.DeliveryTag, tagHeld)
	return true
}

// sent records the settlement of tag, its frame already written (a nack, a
// reject, a requeue, an ack sent alone) or none needed (an auto-ack
// delivery). Recorded after the write, never before: until then the
// frontier stays below tag.
func (b *ackBatch) sent(tag uint64) {
	b.mu.Lock()
	if !b.closed {
		b.mark(tag, tagSent)
	}
	b.mu.Unlock()
}

// flush sends every ack held.
func (b *ackBatch) flush() {
	b.mu.Lock()
	b.flushLocked()
	b.mu.Unlock()
}

// close flushes and sends every ack after it at once: the consumers have
// left the channel, which is about to close.
func (b *ackBatch) close() {
	b.mu.Lock()
	b.flushLocked()
	b.closed = true
	if b.timer != nil {
		b.timer.Stop()
	}
	b.mu.Unlock()
}

// flushLocked sends every ack held; errors are the channel's end (its
// messages come back), which its consumers hear of on their own.
func (b *ackBatch) flushLocked() {
	_ = b.sendPrefix()
	_ = b.sendBeyond()
}

// arm starts the delay of the acks held, unless it runs.
func (b *ackBatch) arm() {
	if b.armed {
		return
	}
	b.armed = true
	if b.timer == nil {
		b.timer = time.AfterFunc(ackDelay, b.expire)
		return
	}
	b.timer.Reset(ackDelay)
}

// expire is the delay's end: everything held goes out.
func (b *ackBatch) expire() {
	b.mu.Lock()
	b.armed = false
	if !b.closed {
		b.flushLocked()
	}
	b.mu.Unlock()
}

// sendPrefix sends the held acks at or below the frontier as one multiple
// ack. It is written under the lock: two multiple acks out of order would
// name a tag the first already acked.
func (b *ackBatch) sendPrefix() error {
	if b.last == 0 {
		return nil
	}
	tag := b.last
	b.last, b.prefix = 0, 0
	return b.acker.Ack(tag, true)
}

// sendBeyond sends the held acks above the frontier, each alone.
func (b *ackBatch) sendBeyond() error {
	var err error
	for t := b.front + 1; b.beyond > 0; t++ {
		if b.ring[t&b.mask()] == tagHeld {
			if e := b.sendOne(t); err == nil {
				err = e
			}
		}
	}
	return err
}

// sendOne sends the held ack of tag, above the frontier, alone.
func (b *ackBatch) sendOne(tag uint64) error {
	b.ring[tag&b.mask()] = tagSent
	b.beyond--
	return b.acker.Ack(tag, false)
}

// heldAt reports a held ack of tag above the frontier.
func (b *ackBatch) heldAt(tag uint64) bool {
	return !b.closed && tag > b.front && b.ring[tag&b.mask()] == tagHeld
}

func (b *ackBatch) mask() uint64 { return uint64(len(b.ring) - 1) }

// mark records tag's settlement and moves the frontier over every settled
// tag after it.
func (b *ackBatch) mark(tag uint64, s tagState) {
	if tag <= b.front {
		return // settled already (a Delivery settles once)
	}
	if tag-b.front > uint64(len(b.ring)) {
		if tag-b.front > maxSpan {
			b.giveUp(tag, s)
			return
		}
		b.grow(tag - b.front)
	}
	m := b.mask()
	b.ring[tag&m] = s
	if s == tagHeld {
		b.beyond++
	}
	for {
		next := b.front + 1
		st := b.ring[next&m]
		if st == tagOpen {
			return
		}
		b.ring[next&m] = tagOpen
		b.front = next
		if st == tagHeld {
			b.last = next
			b.beyond--
			b.prefix++
		}
	}
}

// giveUp ends the holding on a channel whose frontier has stopped: what is
// held goes out, tag's own ack too (s), and every ack after it is sent at
// once.
func (b *ackBatch) giveUp(tag uint64, s tagState) {
	b.flushLocked()
	if s == tagHeld {
		_ = b.acker.Ack(tag, false)
	}
	b.closed = true
	b.ring = nil
}

// grow makes the ring hold at least n tags past the frontier.
func (b *ackBatch) grow(n uint64) {
	size := max(len(b.ring), 64)
	for uint64(size) < n {
		size *= 2
	}
	ring := make([]tagState, size)
	if len(b.ring) > 0 {
		old := b.mask()
		nm := uint64(size - 1)
		for t := b.front + 1; t <= b.front+uint64(len(b.ring)); t++ {
			ring[t&nm] = b.ring[t&old]
		}
	}
	b.ring = ring
}
