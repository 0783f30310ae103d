package broker

import (
	"context"
	"sync"

	"github.com/warrenmq/warren/conn"
	"github.com/warrenmq/warren/internal/connx"
)

// poolIdle is how many idle channels a connection keeps for operations.
const poolIdle = 4

// chanPool is a connection's one pool of channels for operations
// (declares, binds, deletes, passive checks). Each operation has a channel
// to itself: a 404 or 406 closes only the channel it happened on, so one
// caller's failed passive declare never breaks another caller's call (and
// the next call simply gets another channel).
type chanPool struct {
	conn *conn.Conn
	max  int

	mu   sync.Mutex
	idle []*conn.Channel
}

func (p *chanPool) get(ctx context.Context) (*conn.Channel, error) {
	p.mu.Lock()
	for len(p.idle) > 0 {
		ch := p.idle[len(p.idle)-1]
		p.idle = p.idle[:len(p.idle)-1]
		if ch.IsOpen() {
			p.mu.Unlock()
			return ch, nil
		}
	}
	p.mu.Unlock()
	return p.conn.NewChannel(ctx)
}

// put returns a healthy channel to the pool and closes the others (on a
// goroutine the connection owns: closing waits for the broker).
func (p *chanPool) put(ch *conn.Channel) {
	if !ch.IsOpen() {
		return
	}
	p.mu.Lock()
	if len(p.idle) < p.max {
		p.idle = append(p.idle, ch)
		p.mu.Unlock()
		return
	}
	p.mu.Unlock()
	connx.Go(p.conn, func() { _ = ch.Close() })
}
