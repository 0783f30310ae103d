package warren

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/topology"
)

// StreamOffset is where a stream subscription starts reading.
type StreamOffset struct{ value any }

// StreamFirst starts at the first message the stream still holds: a new
// subscriber reads the history.
func StreamFirst() StreamOffset { return StreamOffset{"first"} }

// StreamLast starts at the last chunk the stream wrote.
func StreamLast() StreamOffset { return StreamOffset{"last"} }

// StreamNext starts with the next message published.
func StreamNext() StreamOffset { return StreamOffset{"next"} }

// StreamAt starts at offset n.
func StreamAt(n int64) StreamOffset { return StreamOffset{n} }

// StreamSince starts at the first chunk written at or after t (the broker
// works in seconds).
func StreamSince(t time.Time) StreamOffset { return StreamOffset{t.Truncate(time.Second)} }

func (o StreamOffset) arg() any {
	if o.value == nil {
		return "first"
	}
	return o.value
}

func (o StreamOffset) String() string { return fmt.Sprint(o.arg()) }

// StreamPerTopic maps each topic to a stream (x-queue-type stream): an
// append-only log that every subscriber reads in full, from its start
// offset, instead of a queue whose messages go once consumed. Publishing
// goes through the default exchange. A subscription hands out one message
// at a time (MaxInFlight 1) and keeps its position: the offset after the
// last message it acked. A nacked message is handed out again (a stream
// does not redeliver), after the subscriber's redelivery backoff.
//
// With Consumer set, the position is kept on the broker (see
// StreamSubscription), so a subscriber of that name resumes where the last
// one stopped; without it, every subscription starts at Start. A reconnect
// always resumes after the last message acked.
type StreamPerTopic struct {
	Prefix string
	// Start is where a reader with no kept position starts. Default:
	// StreamFirst(), so a new subscriber receives old messages.
	Start StreamOffset
	// Consumer names the reader whose position is kept. Default: none.
	Consumer string
	// MaxAge and MaxSegmentSizeBytes are the streams' retention
	// (x-max-age, x-stream-max-segment-size-bytes). Default: the
	// broker's (keep everything).
	MaxAge              time.Duration
	MaxSegmentSizeBytes int64
}

func (m StreamPerTopic) spec(topic string) topology.QueueSpec {
	return topology.QueueSpec{Name: m.Prefix + topic, Durable: true, Args: topology.QueueArgs{Type: topology.Stream,
		MaxAge: m.MaxAge, StreamMaxSegmentSizeBytes: m.MaxSegmentSizeBytes}}
}

// Route publishes to the topic's stream through the default exchange.
func (m StreamPerTopic) Route(topic string) (Route, error) {
	q := m.spec(topic)
	return Route{RoutingKey: q.Name, Topology: topology.Topology{Queues: []topology.QueueSpec{q}}}, q.Validate()
}

// Subscription reads the topic's stream.
func (m StreamPerTopic) Subscription(topic string) (Subscription, error) {
	q := m.spec(topic)
	return Subscription{Queue: q.Name, Topology: topology.Topology{Queues: []topology.QueueSpec{q}},
		Stream: &StreamSubscription{Start: m.Start, Consumer: m.Consumer}}, q.Validate()
}

// StreamSubscription makes a Subscription read a stream.
//
// The position of a named reader (Consumer) is kept in a queue of its own,
// "warren.offset.<stream>.<consumer>": durable, holding one message (x-max-length
// 1, drop-head), whose body is the offset of the last message acked. It is
// written after acks, coalesced (at most one write in flight, always the
// newest), and once more when the subscription stops; a subscriber that
// crashes resumes at most the messages acked since the last write, again:
// at-least-once. AMQP 0-9-1 has no server-side offset tracking (the stream
// protocol's is not reachable from it), and a queue keeps the position
// with the broker the stream is on, backed up like any other queue.
type StreamSubscription struct {
	Start    StreamOffset
	Consumer string
}

// offsetQueue is where the position of consumer on stream is kept.
func offsetQueue(stream, consumer string) topology.QueueSpec {
	return topology.QueueSpec{Name: "warren.offset." + stream + "." + consumer, Durable: true,
		Args: topology.QueueArgs{MaxLength: 1, Overflow: topology.DropHead}}
}

// streamPosition is one subscription's place in its stream.
type streamPosition struct {
	s      *Subscriber
	stream string
	opts   StreamSubscription
	keep   *topology.QueueSpec // nil: the position is not kept

	mu     sync.Mutex
	acked  int64 // the offset of the last message acked; -1 for none
	saved  int64 // the last offset written to the keep queue
	closed bool
	kick   chan struct{}
	done   chan struct{}
}

func newStreamPosition(ctx context.Context, s *Subscriber, stream string, opts StreamSubscription) (*streamPosition, error) {
	p := &streamPosition{s: s, stream: stream, opts: opts, acked: -1, saved: -1, kick: make(chan struct{}, 1), done: make(chan struct{})}
	if opts.Consumer == "" {
		close(p.done)
		return p, nil
	}
	q := offsetQueue(stream, opts.Consumer)
	if err := q.Validate(); err != nil {
		return nil, err
	}
	p.keep = &q
	if _, err := s.ops.DeclareQueue(ctx, q); err != nil {
		return nil, fmt.Errorf("warren: declare the position queue of stream %q: %w", stream, err)
	}
	kept, ok, err := p.load(ctx)
	if err != nil {
		return nil, err
	}
	if ok {
		p.acked, p.saved = kept, kept
	}
	go p.saveLoop()
	return p, nil
}

// load reads the kept position, leaving it in its queue.
func (p *streamPosition) load(ctx context.Context) (int64, bool, error) {
	ch, err := p.s.conn.NewChannel(ctx)
	if err != nil {
		return 0, false, err
	}
	defer ch.Close() // the message goes back to its queue
	d, ok, err := ch.Get(ctx, p.keep.Name, false)
	if err != nil || !ok {
		return 0, false, err
	}
	n, err := strconv.ParseInt(string(d.Body), 10, 64)
	if err != nil {
		return 0, false, fmt.Errorf("warren: position queue %q holds %q, not an offset: %w", p.keep.Name, d.Body, err)
	}
	return n, true, nil
}

// next is the x-stream-offset of the next consume: after the last message
// acked, else the start.
func (p *streamPosition) next() any {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.acked >= 0 {
		return p.acked + 1
	}
	return p.opts.Start.arg()
}

// ackedAt records that the message at offset was acked.
func (p *streamPosition) ackedAt(offset int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	// Only the next offset moves the position: it is the end of what was
	// read without a gap (a delivery of a channel that died before the one
	// ahead of it was acked must not carry the position past it).
	if p.acked < 0 || offset == p.acked+1 {
		p.acked = offset
	}
	if p.keep != nil && !p.closed {
		select {
		case p.kick <- struct{}{}:
		default:
		}
	}
}

// skip is whether a delivery at offset was acked already (a consume after
// a reconnect may start before it).
func (p *streamPosition) skip(offset int64) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return offset <= p.acked
}

// saveLoop writes the newest acked offset whenever it moves.
func (p *streamPosition) saveLoop() {
	defer close(p.done)
	for range p.kick {
		p.save(context.Background())
	}
}

func (p *streamPosition) save(ctx context.Context) {
	p.mu.Lock()
	acked, saved := p.acked, p.saved
	p.mu.Unlock()
	if acked <= saved {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, p.s.cfg.CloseTimeout)
	defer cancel()
	errs := p.s.ops.PublishAll(ctx, []broker.Outgoing{{RoutingKey: p.keep.Name,
		Msg: amqp.Publishing{DeliveryMode: amqp.Persistent, Body: []byte(strconv.FormatInt(acked, 10))}}})
	if err := errors.Join(errs...); err != nil {
		p.s.log.Warn("warren: keeping the stream position failed; it is written again with the next ack", "stream", p.stream, "err", err)
		return
	}
	p.mu.Lock()
	if acked > p.saved {
		p.saved = acked
	}
	p.mu.Unlock()
}

// close writes the last position and stops the writer.
func (p *streamPosition) close() {
	if p.keep == nil {
		return
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	close(p.kick)
	p.mu.Unlock()
	<-p.done
	p.save(context.Background())
}

// streamOffsetOf is the x-stream-offset header the broker puts on a
// delivery from a stream.
func streamOffsetOf(h amqp.Table) (int64, bool) {
	switch v := h["x-stream-offset"].(type) {
	case int64:
		return v, true
	case int32:
		return int64(v), true
	case int:
		return int64(v), true
	}
	return 0, false
}
