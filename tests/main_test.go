// Package tests holds warren's acceptance and reliability suites against a
// real RabbitMQ: the shared broker, disposable nodes and the fault proxy of
// internal/rabbittest.
package tests

import (
	"context"
	"testing"
	"time"

	"github.com/warrenmq/warren/conn"
	"github.com/warrenmq/warren/internal/rabbittest"
)

var node = &rabbittest.LazyNode{}

func TestMain(m *testing.M) { rabbittest.Main(m) }

// openConn opens a connection closed when t ends.
func openConn(t testing.TB, url string) *conn.Conn {
	t.Helper()
	c, err := conn.New(url, conn.Config{Reconnect: conn.Exponential(conn.ExponentialConfig{FirstRetryImmediate: true, MaxInterval: time.Second})})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.Open(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = c.Close(ctx)
	})
	return c
}
