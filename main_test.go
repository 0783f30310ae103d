package warren_test

import (
	"context"
	"testing"
	"time"

	"github.com/warrenmq/warren/conn"
	"github.com/warrenmq/warren/internal/rabbittest"
	"github.com/warrenmq/warren/retry"
)

var node = &rabbittest.LazyNode{}

func TestMain(m *testing.M) { rabbittest.Main(m) }

func openConn(t testing.TB, url string) *conn.Conn {
	t.Helper()
	return rabbittest.OpenConn(t, url, conn.Config{Reconnect: conn.RetryPolicy{Backoff: retry.Backoff{InitialInterval: 20 * time.Millisecond, Multiplier: 1, MaxInterval: 20 * time.Millisecond}}})
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
