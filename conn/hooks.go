package conn

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
)

type namedHook struct {
	name string
	fn   func(ctx context.Context) error
}

// hookSeq names registered hooks: a remover finds its own.
var hookSeq atomic.Uint64

func hookName() string { return fmt.Sprintf("hook-%d", hookSeq.Add(1)) }

// OnRestore registers fn to run on every new connection (the first one and
// each after a reconnect or refresh), after the hooks already registered,
// before callers waiting in WaitConnected, Channel or NewChannel are
// released, and returns the function that unregisters it (idempotent). Its
// ctx is bound to the new connection: Channel and NewChannel called with it
// use that connection without waiting, and it is cancelled if the connection
// is lost or closed meanwhile. When the connection is already up, fn is not
// run now: the caller does its own first declare.
//
// A hook runs on the connection loop's goroutine; the next connection attempt
// waits for it. It should report failures of single entities itself and
// return an error only when the connection failed under it: a non-nil error
// while the connection is still up is logged and the next hook runs; once
// the connection is lost, the attempt counts as failed and is retried.
func (c *Conn) OnRestore(fn func(ctx context.Context) error) (remove func()) {
	if fn == nil {
		return func() {}
	}
	name := hookName()
	c.hooksMu.Lock()
	c.hooks = append(c.hooks, namedHook{name, fn})
	c.hooksMu.Unlock()
	return func() { c.removeRestoreHook(name) }
}

// removeRestoreHook removes the hook registered under name and reports
// whether there was one.
func (c *Conn) removeRestoreHook(name string) bool {
	c.hooksMu.Lock()
	defer c.hooksMu.Unlock()
	for i, h := range c.hooks {
		if h.name == name {
			c.hooks = append(c.hooks[:i:i], c.hooks[i+1:]...)
			return true
		}
	}
	return false
}

// hasHooks reports whether any restore hook is registered.
func (c *Conn) hasHooks() bool {
	c.hooksMu.Lock()
	defer c.hooksMu.Unlock()
	return len(c.hooks) > 0
}

type restoreKey struct{}

type restoreMark struct {
	conn *Conn
	gen  *generation
}

// restoringGeneration returns the generation a restore hook's ctx is bound
// to, when ctx is such a ctx of c and that connection is still up.
func restoringGeneration(ctx context.Context, c *Conn) *generation {
	m, ok := ctx.Value(restoreKey{}).(restoreMark)
	if !ok || m.conn != c || m.gen.isLost() {
		return nil
	}
	return m.gen
}

// restoring reports whether ctx is a restore hook's ctx. It is an extension
// point for code that runs both inside restore hooks and on behalf of
// ordinary callers (package topology's operations): inside a hook, a call
// that fails because the connection dropped must not wait for the next
// connection and retry (the hook runs again on it; waiting would deadlock
// the connection loop that runs the hook).
func restoring(ctx context.Context) bool {
	_, ok := ctx.Value(restoreKey{}).(restoreMark)
	return ok
}

func (c *Conn) runHooks(g *generation) error {
	c.hooksMu.Lock()
	hooks := append([]namedHook(nil), c.hooks...)
	c.hooksMu.Unlock()
	if len(hooks) == 0 {
		return nil
	}
	ctx, cancel := context.WithCancel(context.WithValue(context.Background(), restoreKey{}, restoreMark{c, g}))
	defer cancel()
	stop := make(chan struct{})
	defer close(stop)
	c.spawn(func() {
		select {
		case <-c.closing:
			cancel()
		case <-g.lost:
			cancel()
		case <-stop:
		}
	})
	for _, h := range hooks {
		err := c.callHook(ctx, h)
		select {
		case <-c.closing:
			return errClosing
		default:
		}
		if g.isLost() {
			// The loss is the cause, whatever the hook returned: its ctx was
			// cancelled by the loss, and a context.Canceled in the chain
			// would read as a reason to give up reconnecting for good.
			return &restoreLostError{hook: h.name, cause: g.err(), hookErr: err}
		}
		if err != nil {
			c.log.Error("conn: restore hook failed", "hook", h.name, "error", err)
		}
	}
	return nil
}

func (c *Conn) callHook(ctx context.Context, h namedHook) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("conn: restore hook %q panicked: %v", h.name, r)
		}
	}()
	return h.fn(ctx)
}

// restoreLostError is an attempt whose connection was lost while a restore
// hook ran. It unwraps to the loss only (an *amqp091.Error, a network error),
// never to the hook's own error, which is most often the context.Canceled of
// the loss itself: the attempt is retried like any lost connection.
type restoreLostError struct {
	hook    string
	cause   error
	hookErr error
}

func (e *restoreLostError) Error() string {
	msg := fmt.Sprintf("conn: connection lost during restore hook %q: %v", e.hook, e.cause)
	if e.hookErr != nil && !errors.Is(e.hookErr, context.Canceled) {
		msg += fmt.Sprintf(" (the hook returned: %v)", e.hookErr)
	}
	return msg
}

func (e *restoreLostError) Unwrap() error { return e.cause }
