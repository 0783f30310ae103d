package broker

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/warrenmq/warren/conn"
)

// confirmPool is an Ops' confirm channels: opened on first use, reopened
// after they die, shared round-robin by concurrent publishes (never a
// channel per call).
type confirmPool struct {
	conn    *conn.Conn
	timeout time.Duration // a confirm channel's (confirmChannel.timeout)
	slots   []*confirmSlot
	next    atomic.Uint32
	closed  atomic.Bool
}

type confirmSlot struct {
	mu sync.Mutex
	cc *confirmChannel
}

func newConfirmPool(c *conn.Conn, n int, timeout time.Duration) *confirmPool {
	p := &confirmPool{conn: c, timeout: timeout, slots: make([]*confirmSlot, n)}
	for i := range p.slots {
		p.slots[i] = &confirmSlot{}
	}
	return p
}

// get returns an open confirm channel, opening one (waiting for the
// connection, bounded by ctx) when its slot has none.
func (p *confirmPool) get(ctx context.Context) (*confirmChannel, error) {
	s := p.slots[int(p.next.Add(1))%len(p.slots)]
	s.mu.Lock()
	defer s.mu.Unlock()
	if p.closed.Load() {
		return nil, conn.ErrClosed
	}
	if s.cc != nil && s.cc.IsOpen() {
		return s.cc, nil
	}
	if err := p.conn.WaitUnblocked(ctx); err != nil {
		return nil, err
	}
	cc, err := newConfirmChannel(ctx, p.conn, p.timeout, nil)
	if err != nil {
		return nil, err
	}
	s.cc = cc
	return cc, nil
}

func (p *confirmPool) close() {
	p.closed.Store(true)
	for _, s := range p.slots {
		s.mu.Lock()
		cc := s.cc
		s.cc = nil
		s.mu.Unlock()
		if cc != nil {
			_ = cc.Close()
		}
	}
}
