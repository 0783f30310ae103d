package warrentest

import (
	"context"
	"testing"
	"time"

	"github.com/warrenmq/warren"
	"github.com/warrenmq/warren/conn"
	"github.com/warrenmq/warren/retry"
	"github.com/warrenmq/warren/router"
)

// testConn is how a helper connects: reconnecting fast, for tests that
// place faults.
func (b *Broker) testConn() *conn.Conn {
	b.t.Helper()
	return b.Conn(conn.Config{Reconnect: conn.RetryPolicy{FirstRetryImmediate: true, Backoff: retry.Backoff{MaxInterval: time.Second}}})
}

// Router returns a router on a connection of its own to the test's vhost
// (through the fault proxy once Proxy was called). Add routes, then Start.
func (b *Broker) Router(cfg router.Config) *router.Router {
	b.t.Helper()
	r, err := router.New(b.testConn(), cfg)
	if err != nil {
		b.t.Fatal(err)
	}
	return r
}

// Publisher returns a publisher on a connection of its own to the test's
// vhost, closed when the test ends.
func (b *Broker) Publisher(cfg warren.PublisherConfig) *warren.Publisher {
	b.t.Helper()
	p, err := warren.NewPublisher(b.testConn(), cfg)
	if err != nil {
		b.t.Fatal(err)
	}
	b.t.Cleanup(func() { _ = p.Close() })
	return p
}

// Subscriber returns a subscriber on a connection of its own to the test's
// vhost, closed when the test ends.
func (b *Broker) Subscriber(cfg warren.SubscriberConfig) *warren.Subscriber {
	b.t.Helper()
	s, err := warren.NewSubscriber(b.testConn(), cfg)
	if err != nil {
		b.t.Fatal(err)
	}
	b.t.Cleanup(func() { _ = s.Close() })
	return s
}

// Start runs r in the background and returns once every route consumes;
// the test's cleanup closes it (a Close that fails, or a Run that ended
// with an error, fails the test).
func Start(t testing.TB, r *router.Router) {
	t.Helper()
	if r == nil {
		t.Fatal("warrentest: Start: nil router")
		return
	}
	runErr := make(chan error, 1)
	go func() { runErr <- r.Run(context.Background()) }()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := r.WaitRunning(ctx); err != nil {
		t.Fatalf("warrentest: router did not start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := r.Close(ctx); err != nil {
			t.Errorf("warrentest: router Close: %v", err)
		}
		if err := <-runErr; err != nil {
			t.Errorf("warrentest: router Run: %v", err)
		}
	})
}
