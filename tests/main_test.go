// Package tests holds warren's acceptance and reliability suites against a
// real RabbitMQ: the shared broker, disposable nodes and the fault proxy of
// internal/rabbittest.
//
// A test that is isolated (names, a vhost or a node of its own) and spends
// its time waiting (scheduled deliveries, Watermill's suites, examples)
// calls t.Parallel. Tests on the package's shared disposable node (cuts,
// restarts, alarms) and on clusters stay sequential: a fault of one would
// be another's surprise.
package tests

import (
	"testing"
	"time"

	"github.com/warrenmq/warren/conn"
	"github.com/warrenmq/warren/internal/rabbittest"
	"github.com/warrenmq/warren/retry"
)

var node = &rabbittest.LazyNode{}

func TestMain(m *testing.M) { rabbittest.Main(m) }

// openConn opens a connection closed when t ends.
func openConn(t testing.TB, url string) *conn.Conn {
	t.Helper()
	return rabbittest.OpenConn(t, url, conn.Config{Reconnect: conn.RetryPolicy{FirstRetryImmediate: true, Backoff: retry.Backoff{MaxInterval: time.Second}}})
}
