// Package msgctx is a consumed message's context: its parent's values, an
// optional deadline and a cancellation, at a fraction of what
// context.WithTimeout costs when nobody waits on it.
//
// Every consumed message gets a context that ends when the message is
// settled, at the handler's deadline (a route's Timeout, a minute by
// default) or at the shutdown deadline. context.WithTimeout makes its
// timer at once: four allocations and the runtime's timer heap, about 2
// thousand instructions a message (a twentieth of a routed message's),
// whether or not the handler ever waits on the context, and a handler
// that only computes never does. This context arms its timer only when
// somebody asks for Done (or derives a context from it, which asks): until
// then the deadline is a time compared by Err.
//
// It keeps what handlers rely on from the standard library's: Err is
// context.DeadlineExceeded past the deadline and context.Canceled once
// cancelled, Done is closed whenever Err is not nil, Deadline reports the
// deadline, context.Cause reports its own end (never its parent's
// cancellation), and a context derived from it (WithCancel, WithTimeout,
// AfterFunc) ends with it without a goroutine of its own, through
// AfterFunc.
package msgctx

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// Context is a message's context. Its zero value is not usable: New makes
// one.
type Context struct {
	parent   context.Context
	deadline time.Time // zero: none

	// armed holds done once made: Done's path without the lock, for a
	// handler that polls it.
	armed atomic.Pointer[chan struct{}]

	mu     sync.Mutex
	done   chan struct{} // made by the first Done (or AfterFunc)
	err    error         // set once it ended
	timer  *time.Timer   // the deadline's, armed with done
	afters []*afterFunc  // AfterFunc's, run once it ends
	unhook func() bool   // stops the watch of a cancellable parent
}

type afterFunc struct{ f func() }

// closedChan is Done's channel for a context that ended before anybody
// asked for it.
var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// New returns a context with parent's values that ends when Cancel is
// called or, when timeout is above zero, timeout from now. A parent whose
// Done is not nil (not what a message's is) ends it too.
func New(parent context.Context, timeout time.Duration) *Context {
	c := &Context{parent: parent}
	if timeout > 0 {
		c.deadline = time.Now().Add(timeout)
	}
	if d, ok := parent.Deadline(); ok && (c.deadline.IsZero() || d.Before(c.deadline)) {
		c.deadline = d
	}
	if parent.Done() != nil {
		if err := parent.Err(); err != nil {
			c.end(err)
			return c
		}
		c.unhook = context.AfterFunc(parent, func() { c.end(parent.Err()) })
	}
	return c
}

// Cancel ends the context with context.Canceled (once ended, it changes
// nothing) and lets go of its timer.
func (c *Context) Cancel() { c.end(context.Canceled) }

// Deadline is the handler's deadline, if it has one.
func (c *Context) Deadline() (time.Time, bool) { return c.deadline, !c.deadline.IsZero() }

// Done is closed once the context ends. The first call arms the
// deadline's timer.
func (c *Context) Done() <-chan struct{} {
	if done := c.armed.Load(); done != nil {
		return *done
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.arm()
	return c.done
}

// Err is nil until the context ends, then context.Canceled, or
// context.DeadlineExceeded once its deadline has passed (whether or not
// anybody armed the timer).
func (c *Context) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.expireIfDue()
	return c.err
}

// Value is the parent's, except the key context.Cause looks up: the
// parent's cancellation is not this context's (a message's parent is a
// subscription's values, whose own cause means nothing to a message).
func (c *Context) Value(key any) any {
	if key == causeKey {
		return nil
	}
	return c.parent.Value(key)
}

// AfterFunc runs f on a goroutine of its own once the context ends (at
// once if it has), unless stop is called first; stop reports whether it
// stopped f. The context package uses it for every context derived from
// this one, which so needs no goroutine to watch it.
func (c *Context) AfterFunc(f func()) (stop func() bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.arm()
	if c.err != nil {
		go f()
		return func() bool { return false }
	}
	a := &afterFunc{f: f}
	c.afters = append(c.afters, a)
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		for i, x := range c.afters {
			if x == a {
				c.afters = append(c.afters[:i], c.afters[i+1:]...)
				return true
			}
		}
		return false
	}
}

func (c *Context) String() string { return "warren message context" }

// arm makes done and, with a deadline still ahead, the timer that ends the
// context at it (under mu).
func (c *Context) arm() {
	if c.done != nil {
		return
	}
	c.expireIfDue()
	if c.err != nil {
		c.done = closedChan
		c.armed.Store(&c.done)
		return
	}
	c.done = make(chan struct{})
	c.armed.Store(&c.done)
	if !c.deadline.IsZero() {
		c.timer = time.AfterFunc(time.Until(c.deadline), func() { c.end(context.DeadlineExceeded) })
	}
}

// expireIfDue ends the context when its deadline has passed (under mu).
func (c *Context) expireIfDue() {
	if c.err == nil && !c.deadline.IsZero() && !time.Now().Before(c.deadline) {
		c.endLocked(context.DeadlineExceeded)
	}
}

func (c *Context) end(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.endLocked(err)
}

// endLocked ends the context with err, once (under mu).
func (c *Context) endLocked(err error) {
	if c.err != nil {
		return
	}
	c.err = err
	if c.done != nil {
		close(c.done)
	}
	if c.timer != nil {
		c.timer.Stop()
	}
	if c.unhook != nil {
		c.unhook()
	}
	for _, a := range c.afters {
		go a.f()
	}
	c.afters = nil
}

// causeKey is the key context.Cause looks up (the standard library's, not
// exported): found by asking Cause about a context that records the key
// it is asked for. Should Cause ever stop asking, causeKey stays nil and
// Value hides nothing.
var causeKey = func() any {
	p := &keyProbe{}
	_ = context.Cause(p)
	return p.key
}()

// keyProbe records the first key it is asked for; it reports itself
// ended, so that Cause looks a cause up.
type keyProbe struct {
	context.Context
	key any
}

func (p *keyProbe) Value(key any) any {
	if p.key == nil {
		p.key = key
	}
	return nil
}

func (*keyProbe) Err() error { return context.Canceled }
