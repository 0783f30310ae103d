package conn_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/warrenmq/warren/conn"
	"github.com/warrenmq/warren/internal/rabbittest"
)

// TestRefusedLoginIsRetriedWithAProvider: with a credentials provider, a
// refused login is not the end (the provider may have the rotated secret by
// the next attempt); a provider that fails fails the attempt, typed.
func TestRefusedLoginIsRetriedWithAProvider(t *testing.T) {
	b := rabbittest.Shared(t)
	var calls atomic.Int32
	c, err := conn.New(b.URL, conn.Config{FirstConnect: fast(), Credentials: func(context.Context) (conn.Credentials, error) {
		if calls.Add(1) == 1 {
			return conn.Credentials{Username: "guest", Password: "not-yet-rotated"}, nil
		}
		return conn.Credentials{Username: "guest", Password: "guest"}, nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	if err := c.Open(ctxT(t, 30*time.Second)); err != nil {
		t.Fatalf("Open: %v", err)
	}
	if calls.Load() < 2 {
		t.Fatalf("provider called %d times", calls.Load())
	}

	broken := errors.New("vault sealed")
	c2, err := conn.New(b.URL, conn.Config{Credentials: func(context.Context) (conn.Credentials, error) { return conn.Credentials{}, broken }})
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close(context.Background())
	if err := c2.Open(ctxT(t, 30*time.Second)); !errors.Is(err, broken) {
		t.Fatalf("Open with a failing provider: %v, want it to wrap the provider's error", err)
	}
}

// TestQosRefusesWhatRabbitMQRefuses: a prefetch size (never implemented)
// and global QoS (refused by RabbitMQ 4.3) fail before they are sent, and
// the channel stays usable.
func TestQosRefusesWhatRabbitMQRefuses(t *testing.T) {
	b := rabbittest.Shared(t)
	c := open(t, b.URL, conn.Config{})
	ctx := ctxT(t, 10*time.Second)
	ch, err := c.NewChannel(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.Qos(ctx, 10, 4096, false); !errors.Is(err, conn.ErrQosUnsupported) {
		t.Fatalf("prefetch size: %v", err)
	}
	if err := ch.Qos(ctx, 10, 0, true); !errors.Is(err, conn.ErrQosUnsupported) {
		t.Fatalf("global: %v", err)
	}
	if err := ch.Qos(ctx, 10, 0, false); err != nil {
		t.Fatalf("a plain prefetch count after the refusals: %v", err)
	}
}
