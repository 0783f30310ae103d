package warren_test

import (
	"context"
	"testing"
	"time"

	"github.com/warrenmq/warren/conn"
	"github.com/warrenmq/warren/internal/rabbittest"
)

var node = &rabbittest.LazyNode{}

func TestMain(m *testing.M) { rabbittest.Main(m) }

func openConn(t testing.TB, url string) *conn.Conn {
	t.Helper()
	c, err := conn.New(url, conn.Config{Reconnect: conn.Repeat(20 * time.Millisecond)})
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

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
