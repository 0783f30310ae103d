package warren

import (
	"fmt"
	"time"

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

// Destination publishes to the topic's stream through the default exchange.
func (m StreamPerTopic) Destination(topic string) (Destination, error) {
	q := m.spec(topic)
	return Destination{RoutingKey: q.Name, Topology: topology.Topology{Queues: []topology.QueueSpec{q}}}, q.Validate()
}

// Subscription reads the topic's stream.
func (m StreamPerTopic) Subscription(topic string) (Subscription, error) {
	q := m.spec(topic)
	return StreamSubscription{Stream: q.Name, Topology: topology.Topology{Queues: []topology.QueueSpec{q}},
		Start: m.Start, Consumer: m.Consumer}, q.Validate()
}

// StreamSubscription reads a stream from a position: one message at a time
// (MaxInFlight 1), its position the offset after the last message acked, so
// that a reconnect resumes there. A stream neither requeues nor
// dead-letters: a nacked message is handed out again after the redelivery
// backoff, a rejected one is passed over (logged).
//
// The position of a named reader (Consumer) is also kept on the broker, in
// a queue of its own ("warren.offset.<stream>.<consumer>", holding the last
// offset acked), written after acks and when the subscription stops: the
// next subscriber of that name resumes there, at least once (a crash
// repeats what was acked since the last write).
type StreamSubscription struct {
	Stream string
	// Topology is declared (and restored) by SubscribeInitialize and
	// Subscribe: the stream.
	Topology topology.Topology
	// Start is where a reader with no kept position starts. Default:
	// StreamFirst().
	Start StreamOffset
	// Consumer names the reader whose position is kept. Default: none.
	Consumer string
}

func (s StreamSubscription) declares() topology.Topology { return s.Topology }
