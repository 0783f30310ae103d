// Package examples holds one runnable program per folder. Each reads the
// broker URL from WARREN_URL (default amqp://guest:guest@127.0.0.1:5672/)
// and ends on its own; the test suite builds and runs every one of them.
package examples

import (
	"context"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// URL is the broker the examples talk to.
func URL() string {
	if u := os.Getenv("WARREN_URL"); u != "" {
		return u
	}
	return "amqp://guest:guest@127.0.0.1:5672/"
}

// Context is what every example runs under: cancelled on SIGINT or SIGTERM
// (a service drains and exits), and bounded by limit so that a demo never
// runs away.
func Context(limit time.Duration) (context.Context, context.CancelFunc) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	ctx, cancel := context.WithTimeout(ctx, limit)
	return ctx, func() { cancel(); stop() }
}
