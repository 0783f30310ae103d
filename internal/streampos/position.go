// Package streampos keeps a stream subscription's place: the offset after
// the last message it acked, where a consume resumes after a reconnect, and,
// for a named reader, kept on the broker so that the next subscriber of that
// name resumes there too.
//
// A named reader's position is kept in a queue of its own,
// "warren.offset.<stream>.<consumer>": durable, holding one message
// (x-max-length 1, drop-head) whose body is the offset of the last message
// acked. It is written after acks, coalesced (at most one write in flight,
// always the newest), and once more when the subscription stops; a
// subscriber that crashes resumes at most the messages acked since the last
// write, again: at-least-once. AMQP 0-9-1 has no server-side offset tracking
// (the stream protocol's is not reachable from it), and a queue keeps the
// position with the broker the stream is on, backed up like any other queue.
package streampos

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/conn"
	"github.com/warrenmq/warren/topology"
)

// KeepQueue is where the position of consumer on stream is kept.
func KeepQueue(stream, consumer string) topology.QueueSpec {
	return topology.QueueSpec{Name: "warren.offset." + stream + "." + consumer, Durable: true,
		Args: topology.QueueArgs{MaxLength: 1, Overflow: topology.DropHead}}
}

// Config is what a Position needs.
type Config struct {
	Conn *conn.Conn
	Ops  *broker.Ops
	Log  *slog.Logger
	// Stream is the stream read.
	Stream string
	// Start is the x-stream-offset of a reader with no position yet.
	Start any
	// Consumer names the reader whose position is kept; "" keeps none.
	Consumer string
	// WriteTimeout bounds each write of the kept position.
	WriteTimeout time.Duration
	// Go runs the writer on a goroutine its owner waits for (the
	// Subscriber's named group); false when the owner is closing.
	Go func(name string, fn func()) bool
}

// Position is one subscription's place in its stream. Safe for concurrent
// use.
type Position struct {
	cfg  Config
	keep *topology.QueueSpec // nil: the position is not kept

	mu     sync.Mutex
	acked  int64 // the offset of the last message acked; -1 for none
	saved  int64 // the last offset written to the keep queue
	closed bool
	kick   chan struct{}
	done   chan struct{}
}

// New returns the position of a subscription, loaded from its keep queue
// (declared here) for a named reader.
func New(ctx context.Context, cfg Config) (*Position, error) {
	p := &Position{cfg: cfg, acked: -1, saved: -1, kick: make(chan struct{}, 1), done: make(chan struct{})}
	if cfg.Consumer == "" {
		close(p.done)
		return p, nil
	}
	q := KeepQueue(cfg.Stream, cfg.Consumer)
	if err := q.Validate(); err != nil {
		return nil, err
	}
	p.keep = &q
	if _, err := cfg.Ops.DeclareQueue(ctx, q); err != nil {
		return nil, fmt.Errorf("warren: declare the position queue of stream %q: %w", cfg.Stream, err)
	}
	kept, ok, err := p.load(ctx)
	if err != nil {
		return nil, err
	}
	if ok {
		p.acked, p.saved = kept, kept
	}
	if !cfg.Go("stream position writer "+cfg.Stream, p.writeLoop) {
		return nil, conn.ErrClosed
	}
	return p, nil
}

// load reads the kept position, leaving it in its queue.
func (p *Position) load(ctx context.Context) (int64, bool, error) {
	ch, err := p.cfg.Conn.NewChannel(ctx)
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

// Next is the x-stream-offset of the next consume: after the last message
// acked, else the start.
func (p *Position) Next() any {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.acked >= 0 {
		return p.acked + 1
	}
	return p.cfg.Start
}

// AckedAt records that the message at offset was acked.
func (p *Position) AckedAt(offset int64) {
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

// Skip is whether a delivery at offset was acked already (a consume after a
// reconnect may start before it: the stream protocol starts at the chunk
// that holds the offset).
func (p *Position) Skip(offset int64) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return offset <= p.acked
}

// writeLoop writes the newest acked offset whenever it moves.
func (p *Position) writeLoop() {
	defer close(p.done)
	for range p.kick {
		p.write()
	}
}

func (p *Position) write() {
	p.mu.Lock()
	acked, saved := p.acked, p.saved
	p.mu.Unlock()
	if acked <= saved {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), p.cfg.WriteTimeout)
	defer cancel()
	errs := p.cfg.Ops.PublishAll(ctx, []broker.Outgoing{{RoutingKey: p.keep.Name,
		Msg: amqp.Publishing{DeliveryMode: amqp.Persistent, Body: []byte(strconv.FormatInt(acked, 10))}}})
	if err := errors.Join(errs...); err != nil {
		p.cfg.Log.Warn("warren: keeping the stream position failed; it is written again with the next ack", "stream", p.cfg.Stream, "error", err)
		return
	}
	p.mu.Lock()
	if acked > p.saved {
		p.saved = acked
	}
	p.mu.Unlock()
}

// Close writes the last position and stops the writer. Idempotent.
func (p *Position) Close() {
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
	p.write()
}

// OffsetOf is the x-stream-offset header the broker puts on a delivery from
// a stream.
func OffsetOf(h amqp.Table) (int64, bool) {
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
