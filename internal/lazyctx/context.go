// Package lazyctx is a context whose deadline costs nothing until somebody
// waits on it: its parent's values, an optional deadline and a
// cancellation, at a fraction of what context.WithTimeout costs.
//
// Two kinds of work make one each. Every consumed message gets a context
// (New) that ends when the message is settled, at the handler's deadline
// (a route's Timeout, a minute by default) or at the shutdown deadline.
// Every publish and every request gets one (Bound) that ends at its
// PublishTimeout or Timeout, or when its call returns. context.WithTimeout
// makes its timer at once: four allocations and the runtime's timer heap
// (five allocations once Done is asked for), whether or not anybody waits
// on the context, and a handler that only computes never does. This
// context arms its timer only when somebody asks for Done (or derives a
// context from it, which asks): until then the deadline is a time compared
// by Err. A call's own waits (a publish's confirm, a request's reply) do
// not ask: they wait on Until's channels, whose deadline one Alarm rings
// for every call of a Publisher or Requester, and on Also's for a consumed
// message's context the call or its message carries (a handler's publish).
//
// It keeps what handlers rely on from the standard library's: Err is
// context.DeadlineExceeded past the deadline and context.Canceled once
// cancelled, Done is closed whenever Err is not nil, Deadline reports the
// deadline, context.Cause reports its own end (never its parent's
// cancellation), and a context derived from it (WithCancel, WithTimeout,
// AfterFunc) ends with it without a goroutine of its own, through
// AfterFunc.
package lazyctx

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// Context is a message's or a call's context. Its zero value is not
// usable: New or Bound makes one.
type Context struct {
	parent   context.Context
	deadline time.Time // zero: none
	// alarm rings for a call's deadline in Until (nil: a message's, whose
	// waits are its handler's, on Done).
	alarm *Alarm

	// armed holds done once made: Done's path without the lock, for a
	// handler that polls it.
	armed atomic.Pointer[chan struct{}]
	// ended is set once err is: Err's path without the lock.
	ended atomic.Bool

	mu     sync.Mutex
	done   chan struct{} // made by the first Done (or AfterFunc)
	err    error         // set once it ended
	timer  *time.Timer   // the deadline's, armed with done
	afters *afterFunc    // AfterFunc's, run once it ends (a list: 16 bytes less a context than a slice)
	unhook func() bool   // stops the watch of a cancellable parent
}

type afterFunc struct {
	f    func()
	next *afterFunc
}

// closedChan is Done's channel for a context that ended before anybody
// asked for it.
var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// New returns a context with parent's values that ends when Cancel is
// called or, when timeout is above zero, timeout from now. A parent that
// ends (not what a message's does) ends it too: Err asks the parent, and
// the first Done watches it (context.AfterFunc), so that a context nobody
// waits on registers nothing with its parent either.
func New(parent context.Context, timeout time.Duration) *Context {
	return newContext(parent, timeout, nil)
}

func newContext(parent context.Context, timeout time.Duration, alarm *Alarm) *Context {
	c := &Context{parent: parent, alarm: alarm}
	if timeout > 0 {
		c.deadline = time.Now().Add(timeout)
	}
	if d, ok := parent.Deadline(); ok && (c.deadline.IsZero() || d.Before(c.deadline)) {
		c.deadline = d
	}
	if err := parent.Err(); err != nil {
		c.end(err)
	}
	return c
}

// Cancel ends the context with context.Canceled (once ended, it changes
// nothing) and lets go of its timer.
func (c *Context) Cancel() { c.end(context.Canceled) }

// Deadline is the handler's (or the call's) deadline, if it has one.
func (c *Context) Deadline() (time.Time, bool) { return c.deadline, !c.deadline.IsZero() }

// Done is closed once the context ends. The first call arms the
// deadline's timer.
func (c *Context) Done() <-chan struct{} { return c.channel(true) }

// Err is nil until the context ends, then context.Canceled, or
// context.DeadlineExceeded once its deadline has passed (whether or not
// anybody armed the timer).
func (c *Context) Err() error {
	// Without the lock while it runs: a call asks before each step, a
	// handler may poll.
	if !c.ended.Load() && (c.deadline.IsZero() || time.Now().Before(c.deadline)) && c.parent.Err() == nil {
		return nil
	}
	c.mu.Lock()
	c.expireIfDue()
	err := c.err
	c.mu.Unlock()
	return err
}

// Value is the parent's, except the key context.Cause looks up: the
// parent's cancellation is not this context's (a message's parent is a
// subscription's values, whose own cause means nothing to a message; a
// call past its own deadline would report its live parent's cause, nil).
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
func (c *Context) AfterFunc(f func()) (stop func() bool) { return c.afterFunc(f, true) }

// afterFunc is AfterFunc; untimed leaves the deadline's timer unarmed, for
// a context derived from this one whose own deadline is at or before this
// one's (a call's made with a consumed message's context: open).
func (c *Context) afterFunc(f func(), timed bool) (stop func() bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.prepare(timed)
	if c.err != nil {
		go f()
		return func() bool { return false }
	}
	a := &afterFunc{f: f, next: c.afters}
	c.afters = a
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		for p := &c.afters; *p != nil; p = &(*p).next {
			if *p == a {
				*p = a.next
				return true
			}
		}
		return false
	}
}

func (c *Context) String() string {
	if c.alarm != nil {
		return "warren call context"
	}
	return "warren message context"
}

// Armed reports whether Done's channel has its deadline's timer (or the
// context has ended): what a wait through Until and Also never does to a
// context, which tests check.
func (c *Context) Armed() bool { return c.armed.Load() != nil }

// ending is done without the deadline's timer, for a call's wait that
// also selects on a ring at or before this context's deadline (Until,
// Also): closed when the context is cancelled or its parent ends, or once
// it is found past its deadline (by Err, or by a Done that arms it).
func (c *Context) ending() <-chan struct{} { return c.channel(false) }

// channel is done, made if need be; timed arms the deadline's timer.
func (c *Context) channel(timed bool) <-chan struct{} {
	if done := c.armed.Load(); done != nil {
		return *done
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.prepare(timed)
	return c.done
}

// prepare is arm when timed, else open (under mu).
func (c *Context) prepare(timed bool) {
	if timed {
		c.arm()
	} else {
		c.open()
	}
}

// arm is open and, with a deadline still ahead, the timer that ends the
// context at it (under mu).
func (c *Context) arm() {
	if c.armed.Load() != nil {
		return
	}
	c.open()
	c.expireIfDue() // a done ending made may have outlived the deadline
	if c.err == nil && !c.deadline.IsZero() {
		c.timer = time.AfterFunc(time.Until(c.deadline), func() { c.end(context.DeadlineExceeded) })
	}
	c.armed.Store(&c.done)
}

// open makes done and watches a parent that can end (under mu); an ended
// context's done is closed, and needs no timer.
func (c *Context) open() {
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
	if p, ok := c.parent.(*Context); ok {
		// Its deadline is at or after this one's (newContext takes the
		// earlier), which this one's timer or ring covers: watched for
		// its cancellation only, its own timer left unarmed.
		c.unhook = p.afterFunc(func() { c.end(p.Err()) }, false)
	} else if c.parent.Done() != nil {
		c.unhook = context.AfterFunc(c.parent, func() { c.end(c.parent.Err()) })
	}
}

// expireIfDue ends the context when its parent has ended or its deadline
// has passed (under mu).
func (c *Context) expireIfDue() {
	if c.err != nil {
		return
	}
	if err := c.parent.Err(); err != nil {
		c.endLocked(err)
	} else if !c.deadline.IsZero() && !time.Now().Before(c.deadline) {
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
	c.ended.Store(true)
	if c.done != nil {
		close(c.done)
	}
	if c.timer != nil {
		c.timer.Stop()
	}
	if c.unhook != nil {
		c.unhook()
	}
	for a := c.afters; a != nil; a = a.next {
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
