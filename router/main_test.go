package router_test

import (
	"context"
	"errors"
	"testing"

	"github.com/warrenmq/warren/conn"
	"github.com/warrenmq/warren/internal/rabbittest"
	"github.com/warrenmq/warren/router"
)

// The router's broker suites live in tests/; this package checks its own
// goroutines with goleak.
func TestMain(m *testing.M) { rabbittest.Main(m) }

func TestConfigIsValidatedField(t *testing.T) {
	c, err := conn.New("amqp://127.0.0.1:1/", conn.Config{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = router.New(c, router.Config{CloseTimeout: -1})
	var ce *conn.ConfigError
	if !errors.Is(err, conn.ErrInvalidConfig) || !errors.As(err, &ce) || ce.Field != "router.Config.CloseTimeout" {
		t.Fatalf("negative CloseTimeout: %v", err)
	}
	r, err := router.New(c, router.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Closed before it ran: a waiter is told at once, never left hanging.
	if err := r.WaitRunning(context.Background()); !errors.Is(err, conn.ErrClosed) {
		t.Fatalf("WaitRunning on a router closed before Run: %v", err)
	}
}
