package lazyctx

import (
	"context"
	"time"
)

// Bound returns a call's context: New's, whose deadline alarm rings for in
// Until. The call's own waits select on Until's channels instead of Done,
// so that a call that ends in time (nearly every publish and request) arms
// no timer and makes no channel: one allocation where context.WithTimeout
// and a wait on its Done make five and a timer. Every call of one
// Publisher (or Requester) shares its alarm.
func Bound(parent context.Context, timeout time.Duration, alarm *Alarm) *Context {
	return newContext(parent, timeout, alarm)
}

// Is reports whether ctx is one of this package's contexts (a consumed
// message's, or a call's): one whose Done arms a timer that a wait through
// Until or Also does not.
func Is(ctx context.Context) bool {
	_, ok := ctx.(*Context)
	return ok
}

// Until returns what a wait bounded by ctx selects on in place of
// ctx.Done(): done closes when ctx's parent ends (when ctx is not a call's
// context, when ctx ends), and ring closes at ctx's deadline or before it,
// when another call's deadline rings. A wait woken by ring asks ctx.Err()
// and, while that is nil, calls Until again. ring is nil when there is no
// deadline to ring for. A parent of this package's kind (a consumed
// message's context) is waited on unarmed: done closes when it is
// cancelled or its own parent ends, and its deadline, at or after ctx's,
// is ring's.
//
// For the goroutine that owns a call's context: its Cancel closes
// neither, and it cancels only once its waits are over.
func Until(ctx context.Context) (done, ring <-chan struct{}) {
	c, ok := ctx.(*Context)
	if !ok || c.alarm == nil {
		return ctx.Done(), nil
	}
	if armed := c.armed.Load(); armed != nil {
		return *armed, nil // somebody asked for Done: its timer is set
	}
	if p, ok := c.parent.(*Context); ok {
		// A call made with a consumed message's context (a handler's
		// publish): the call's deadline is at or before the message's
		// (Bound takes the earlier), so ring covers that one too, and
		// the message's timer stays unarmed.
		done = p.ending()
	} else {
		done = c.parent.Done()
	}
	if c.deadline.IsZero() {
		return done, nil
	}
	return done, c.alarm.Ring(c.deadline)
}

// Also returns what a wait bounded by the call's context ctx selects on
// for other, a second context that bounds it (a published message's own,
// often the consumed message it was made from): done closes when other
// ends, and ring, when not nil, at other's deadline or before it. A wait
// woken by ring asks both contexts' Err and, while both are nil, calls
// Until and Also again. For one of this package's contexts, other's timer
// is left unarmed; any other context's Done is done, with no ring. other
// is ctx itself (a request's message is bounded by its call) or nil: both
// nil, never ready.
func Also(ctx, other context.Context) (done, ring <-chan struct{}) {
	if other == nil {
		return nil, nil
	}
	c, ok := ctx.(*Context)
	if !ok || c.alarm == nil {
		return other.Done(), nil
	}
	// c's dynamic type is a pointer: this == compares pointers when
	// other's is the same type and is false otherwise, never panicking on
	// a context type that is not comparable.
	if other == context.Context(c) {
		return nil, nil
	}
	o, ok := other.(*Context)
	if !ok {
		return other.Done(), nil
	}
	if armed := o.armed.Load(); armed != nil {
		return *armed, nil
	}
	if !o.deadline.IsZero() && (c.deadline.IsZero() || o.deadline.Before(c.deadline)) {
		ring = c.alarm.Ring(o.deadline)
	}
	return o.ending(), ring
}
