package middleware

import (
	"context"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/warrenmq/warren/ack"
	"github.com/warrenmq/warren/internal/configerr"
)

// RateLimitConfig shapes RateLimit.
type RateLimitConfig struct {
	// PerSecond is how many messages may start per second. Required.
	PerSecond float64
	// Burst is how many may start at once after a quiet spell. Default: 1
	// (evenly spaced).
	Burst int
}

// Validate reports every problem, each naming its field.
func (c *RateLimitConfig) Validate() error {
	f := configerr.For("middleware.RateLimitConfig")
	f.Check(!(c.PerSecond > 0) || math.IsInf(c.PerSecond, 0), "PerSecond", "must be a positive number")
	f.Check(c.Burst < 0, "Burst", "must not be negative")
	return f.Err()
}

// RateLimit lets at most PerSecond messages a second reach the handler
// (after a Burst): each waits for its turn on its own context, which
// bounds the wait; a message whose context ends first goes back to the
// queue (ack.AsRequeue). It limits the rate only: MaxInFlight stays the
// concurrency limit. A message waiting for its turn is held by the process:
// keep the prefetch small (the router sets a rate-limited route's prefetch
// to its MaxInFlight), and the broker holds the backlog.
func RateLimit(cfg RateLimitConfig) (message.HandlerMiddleware, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	l := newLimiter(cfg.PerSecond, max(cfg.Burst, 1))
	return func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			if err := l.wait(msg.Context()); err != nil {
				return nil, ack.AsRequeue(fmt.Errorf("middleware: rate limit: no turn before the message's context ended: %w", err))
			}
			return h(msg)
		}
	}, nil
}

// limiter hands out turns PerSecond apart, up to burst of them at once
// (the generic cell rate algorithm: one timestamp, no ticker).
type limiter struct {
	interval time.Duration
	burst    time.Duration // how far behind now the next turn may lag
	mu       sync.Mutex
	next     time.Time
}

func newLimiter(perSecond float64, burst int) *limiter {
	interval := time.Duration(float64(time.Second) / perSecond)
	return &limiter{interval: interval, burst: time.Duration(burst-1) * interval}
}

// wait blocks until the caller's turn, or ctx ends (its turn is then
// handed back when it was the last one taken).
func (l *limiter) wait(ctx context.Context) error {
	now := time.Now()
	l.mu.Lock()
	turn := l.next
	if earliest := now.Add(-l.burst); turn.Before(earliest) {
		turn = earliest
	}
	l.next = turn.Add(l.interval)
	l.mu.Unlock()
	d := turn.Sub(now)
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		l.mu.Lock()
		if l.next.Equal(turn.Add(l.interval)) {
			l.next = turn
		}
		l.mu.Unlock()
		return ctx.Err()
	}
}
