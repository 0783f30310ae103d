// Package latch is a one-shot signal whose channel is made only when
// somebody waits for it before it is set. Long-lived objects held by the
// thousand (a subscription, a consumer) carry signals that are mostly set
// before anyone waits, or never waited on at all: a channel each would be
// about 100 bytes apiece for nothing, and a Latch is one word.
package latch

import "sync/atomic"

// Latch is unset until Set; the zero value is ready to use. Safe for
// concurrent use; it must not be copied after first use.
//
// Its one word points at nothing (unset, nobody waits), at the channel
// waiters wait on (unset), or at closed (set).
type Latch struct {
	p atomic.Pointer[chan struct{}]
}

// closed is where every set latch points: a closed channel.
var closed = func() *chan struct{} { c := make(chan struct{}); close(c); return &c }()

// Set sets the latch and wakes whoever waits on Done. Idempotent.
func (l *Latch) Set() {
	for {
		p := l.p.Load()
		if p == closed {
			return
		}
		if l.p.CompareAndSwap(p, closed) {
			if p != nil {
				close(*p)
			}
			return
		}
	}
}

// Done is closed once the latch is set.
func (l *Latch) Done() <-chan struct{} {
	if p := l.p.Load(); p != nil {
		return *p
	}
	c := make(chan struct{})
	if l.p.CompareAndSwap(nil, &c) {
		return c
	}
	return *l.p.Load() // another waiter made one first, or Set came
}

// IsSet reports whether Set was called.
func (l *Latch) IsSet() bool { return l.p.Load() == closed }
