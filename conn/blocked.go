package conn

import (
	"context"
	"fmt"
)

// Blocked reports whether the broker has blocked the current connection
// (connection.blocked after a memory or disk alarm). A new connection starts
// unblocked: it never receives its predecessor's connection.unblocked
// (PITFALLS 3).
func (c *Conn) Blocked() bool {
	c.mu.Lock()
	g := c.gen
	c.mu.Unlock()
	if g == nil {
		return false
	}
	b, _ := g.blockState()
	return b
}

// WaitUnblocked returns nil at once when the connection is not blocked;
// otherwise it waits until it is unblocked or replaced by a new connection.
// When ctx ends first it returns an error matching both ErrBlocked and
// ctx.Err(). Writers call it before writing, because a write to a blocked
// connection blocks inside the socket where no context reaches it.
func (c *Conn) WaitUnblocked(ctx context.Context) error {
	c.mu.Lock()
	g := c.gen
	c.mu.Unlock()
	if g == nil {
		return nil
	}
	return g.waitUnblocked(ctx)
}

func (g *generation) waitUnblocked(ctx context.Context) error {
	blocked, unblocked := g.blockState()
	if !blocked {
		return nil
	}
	select {
	case <-unblocked:
		return nil
	case <-g.lost:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%w: %w", ErrBlocked, ctx.Err())
	}
}
