package conn_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/warrenmq/warren/conn"
	"github.com/warrenmq/warren/internal/rabbittest"
	"github.com/warrenmq/warren/retry"
)

// recorder keeps every state change a connection reports.
type recorder struct {
	mu      sync.Mutex
	changes []conn.StateChange
	signal  chan struct{}
}

func record(c *conn.Conn) *recorder {
	r := &recorder{signal: make(chan struct{}, 1)}
	c.OnStateChange(func(ch conn.StateChange) {
		r.mu.Lock()
		r.changes = append(r.changes, ch)
		r.mu.Unlock()
		select {
		case r.signal <- struct{}{}:
		default:
		}
	})
	return r
}

func (r *recorder) all() []conn.StateChange {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]conn.StateChange(nil), r.changes...)
}

// waitFor waits until a change satisfies ok.
func (r *recorder) waitFor(t *testing.T, timeout time.Duration, what string, ok func(conn.StateChange) bool) conn.StateChange {
	t.Helper()
	deadline := time.After(timeout)
	seen := 0
	for {
		all := r.all()
		for _, ch := range all[seen:] {
			if ok(ch) {
				return ch
			}
		}
		seen = len(all)
		select {
		case <-r.signal:
		case <-deadline:
			t.Fatalf("timed out waiting for %s; changes: %v", what, all)
		}
	}
}

func to(s conn.State) func(conn.StateChange) bool {
	return func(ch conn.StateChange) bool { return ch.To == s && ch.From != s }
}

func open(t *testing.T, url string, cfg conn.Config) *conn.Conn {
	t.Helper()
	c, err := conn.New(url, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := c.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := c.Open(ctx); err != nil {
		t.Fatalf("Open: %v", err)
	}
	return c
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// fast is a reconnect policy for tests: immediate, then every 20ms.
func fast() conn.RetryPolicy {
	return conn.RetryPolicy{Backoff: retry.Backoff{InitialInterval: 20 * time.Millisecond, Multiplier: 1, MaxInterval: 20 * time.Millisecond}}
}

// brokerSays is what the shared broker lists in column (rabbitmqctl
// list_connections) for the connection named name (connection_name): the
// broker's own word on what was negotiated.
func brokerSays(t *testing.T, name, column string) string {
	t.Helper()
	ctx := ctxT(t, 30*time.Second)
	var got string
	rabbittest.Eventually(t, 20*time.Second, "the broker listing connection "+name, func() bool {
		out, err := rabbittest.Ctl(ctx, "", "list_connections", column, "client_properties")
		if err != nil {
			t.Fatal(err)
		}
		for line := range strings.Lines(out) {
			if strings.Contains(line, `"`+name+`"`) {
				got, _, _ = strings.Cut(line, "\t")
				return true
			}
		}
		return false
	})
	return got
}
