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

// Until returns what a wait bounded by ctx selects on in place of
// ctx.Done(): done closes when ctx's parent ends (when ctx is not a call's
// context, when ctx ends), and ring closes at ctx's deadline or before it,
// when another call's deadline rings. A wait woken by ring asks ctx.Err()
// and, while that is nil, calls Until again. ring is nil when there is no
// deadline to ring for.
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
	if c.deadline.IsZero() {
		return c.parent.Done(), nil
	}
	return c.parent.Done(), c.alarm.Ring(c.deadline)
}
