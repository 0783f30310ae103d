package lazyctx

import (
	"sync"
	"sync/atomic"
	"time"
)

// Alarm rings for the deadlines of many calls with one timer: Ring returns
// a channel that closes at the given time or before it. Every waiter holds
// the same channel until the timer fires; then it is closed (waking them
// all: each checks its own deadline and, not due yet, asks Ring again) and
// the next Ring makes another. The timer is set for the earliest time asked
// for since it last fired, and is moved only to an earlier one; a Publisher's
// deadlines come in the order they are asked for (the same timeout each), so
// after the first call, a call's Ring is two atomic loads. A timer left set
// for a call that ended in time fires once, to nobody or to a few waiters
// that wait again: at most one wake-up per timeout's length, where a timer
// per call is a timer per call.
//
// The zero value is ready. Safe for concurrent use.
type Alarm struct {
	// ring is closed when the timer fires, then made again (nil until a
	// Ring after the fire). due is the time the timer is set for; nil:
	// none since it fired. A waiter loads ring before due, and fire clears
	// ring before due: a waiter that finds a due holds a ring that this
	// due's firing, or an earlier one, closes. Times, not numbers: they
	// compare by the monotonic clock, or by the fake one inside a
	// testing/synctest bubble.
	ring atomic.Pointer[chan struct{}]
	due  atomic.Pointer[time.Time]

	mu    sync.Mutex
	timer *time.Timer
}

// Ring returns a channel that closes at at, or before it.
func (a *Alarm) Ring(at time.Time) <-chan struct{} {
	if r := a.ring.Load(); r != nil {
		if due := a.due.Load(); due != nil && !at.Before(*due) {
			return *r
		}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	r := a.ring.Load()
	if r == nil {
		ch := make(chan struct{})
		r = &ch
		a.ring.Store(r)
	}
	if due := a.due.Load(); due == nil || at.Before(*due) {
		due := at // a copy made here: &at would move at to the heap on every call
		a.due.Store(&due)
		if a.timer == nil {
			a.timer = time.AfterFunc(time.Until(at), a.fire)
		} else {
			a.timer.Reset(time.Until(at))
		}
	}
	return *r
}

// fire closes the ring every waiter holds.
func (a *Alarm) fire() {
	a.mu.Lock()
	r := a.ring.Swap(nil)
	a.due.Store(nil)
	a.mu.Unlock()
	if r != nil {
		close(*r)
	}
}

// Stop lets go of the timer (a closed Publisher's): a Ring after it sets
// it again.
func (a *Alarm) Stop() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.timer != nil {
		a.timer.Stop()
	}
	a.due.Store(nil)
	if r := a.ring.Swap(nil); r != nil {
		close(*r) // anybody still waiting asks again
	}
}
