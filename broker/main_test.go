package broker_test

import (
	"context"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/conn"
	"github.com/warrenmq/warren/internal/rabbittest"
	"github.com/warrenmq/warren/retry"
)

var node = &rabbittest.LazyNode{}

func TestMain(m *testing.M) { rabbittest.Main(m) }

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// setup opens a connection to url and Ops on it, both closed with the test.
func setup(t *testing.T, url string, cfg broker.OpsConfig) (*conn.Conn, *broker.Ops) {
	t.Helper()
	return setupWith(t, url, cfg, nil)
}

// setupWith is setup, with beforeOps (when set) run on the open connection
// before Ops makes its registry: a restore hook it registers runs before
// the registry's.
func setupWith(t *testing.T, url string, cfg broker.OpsConfig, beforeOps func(*conn.Conn)) (*conn.Conn, *broker.Ops) {
	t.Helper()
	return setupConn(t, url, conn.Config{}, cfg, beforeOps)
}

// setupConn is setupWith on a connection configured by ccfg, whose
// reconnects it makes quick (20 ms apart).
func setupConn(t *testing.T, url string, ccfg conn.Config, cfg broker.OpsConfig, beforeOps func(*conn.Conn)) (*conn.Conn, *broker.Ops) {
	t.Helper()
	ccfg.Reconnect = conn.RetryPolicy{Backoff: retry.Backoff{InitialInterval: 20 * time.Millisecond, Multiplier: 1, MaxInterval: 20 * time.Millisecond}}
	c, err := conn.New(url, ccfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Open(ctxT(t, 20*time.Second)); err != nil {
		t.Fatal(err)
	}
	if beforeOps != nil {
		beforeOps(c)
	}
	ops, err := broker.NewOps(c, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := ops.Close(ctx); err != nil {
			t.Errorf("ops.Close: %v", err)
		}
		if err := c.Close(ctx); err != nil {
			t.Errorf("conn.Close: %v", err)
		}
	})
	return c, ops
}

// rawChannel is a plain amqp091 channel for checking from the outside.
func rawChannel(t *testing.T, url string) *amqp.Channel { return rabbittest.RawChannel(t, url) }

// receiver is a consumer handler that forwards bodies.
func receiver(out chan<- string) broker.Handler {
	return func(ctx context.Context, d *broker.Delivery) {
		out <- string(d.Body)
		_ = d.Ack()
	}
}

func expect(t *testing.T, ch <-chan string, want string) {
	t.Helper()
	select {
	case got := <-ch:
		if got != want {
			t.Fatalf("received %q, want %q", got, want)
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("did not receive %q", want)
	}
}

func msg(body string) amqp.Publishing { return amqp.Publishing{Body: []byte(body)} }

// restoreReports collects the reports of every restore run of ops'
// connection.
func restoreReports(t *testing.T, ops *broker.Ops) <-chan broker.RestoreReport {
	t.Helper()
	out := make(chan broker.RestoreReport, 10)
	ops.Registry().OnRestored(func(r broker.RestoreReport) { out <- r })
	return out
}

// nextReport is the next restore run's report, waited for until ctx ends.
func nextReport(t *testing.T, ctx context.Context, reports <-chan broker.RestoreReport) broker.RestoreReport {
	t.Helper()
	select {
	case r := <-reports:
		return r
	case <-ctx.Done():
		t.Fatal("no restore report")
		return broker.RestoreReport{}
	}
}

// restoreFailures collects the failures of every restore run of ops'
// connection.
func restoreFailures(t *testing.T, ops *broker.Ops) <-chan *broker.RestoreError {
	t.Helper()
	out := make(chan *broker.RestoreError, 100)
	ops.Registry().OnRestored(func(r broker.RestoreReport) {
		for _, f := range r.Failed {
			out <- f
		}
	})
	return out
}
