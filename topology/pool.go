package topology

import (
	"context"
	"sync"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren/conn"
)

// chanPool keeps a few idle channels (in confirm mode) so that each
// operation has a channel to itself: a 404 or 406 closes only the channel it
// happened on, so one caller's failed passive declare never breaks another
// caller's call (and the next call simply gets another channel).
type chanPool struct {
	conn *conn.Conn
	max  int

	mu   sync.Mutex
	idle []*pooledChannel
}

type pooledChannel struct {
	*conn.Channel
	confirms chan amqp.Confirmation
	returns  chan amqp.Return
}

func (p *chanPool) get(ctx context.Context) (*pooledChannel, error) {
	p.mu.Lock()
	for len(p.idle) > 0 {
		pc := p.idle[len(p.idle)-1]
		p.idle = p.idle[:len(p.idle)-1]
		if pc.IsOpen() {
			p.mu.Unlock()
			return pc, nil
		}
	}
	p.mu.Unlock()
	ch, err := p.conn.NewConfirmChannel(ctx)
	if err != nil {
		return nil, err
	}
	// Buffered and drained by whoever publishes on the channel; a
	// publisher that gives up closes the channel instead of leaving them
	// unread (PITFALLS 1).
	pc := &pooledChannel{
		Channel:  ch,
		confirms: ch.NotifyPublish(make(chan amqp.Confirmation, 1)),
		returns:  ch.NotifyReturn(make(chan amqp.Return, 1)),
	}
	return pc, nil
}

// put returns a healthy channel to the pool and closes the others.
func (p *chanPool) put(pc *pooledChannel) {
	if !pc.IsOpen() {
		return
	}
	p.mu.Lock()
	if len(p.idle) < p.max {
		p.idle = append(p.idle, pc)
		p.mu.Unlock()
		return
	}
	p.mu.Unlock()
	go pc.Close()
}

func (p *chanPool) close() {
	p.mu.Lock()
	idle := p.idle
	p.idle = nil
	p.mu.Unlock()
	for _, pc := range idle {
		_ = pc.Close()
	}
}
