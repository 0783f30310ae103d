package conn_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren/conn"
	"github.com/warrenmq/warren/internal/rabbittest"
	"github.com/warrenmq/warren/telemetry"
	"github.com/warrenmq/warren/telemetry/telemetrytest"
)

func TestBrokerKilledMidOperationAndRestarted(t *testing.T) {
	n := node.Get(t)
	c := open(t, n.URL(), conn.Config{Reconnect: fast()})
	rec := record(c)
	var hookRuns int
	c.OnRestore(func(context.Context) error { hookRuns++; return nil })
	ch, err := c.NewChannel(ctxT(t, 5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	q, err := ch.QueueDeclare(context.Background(), "", false, true, true, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	msgs, err := ch.Consume(context.Background(), q.Name, "", false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	n.Kill()
	rec.waitFor(t, 10*time.Second, "reconnecting", to(conn.StateReconnecting))
	// The consumer's delivery channel ends with the connection; a channel's
	// Done fires even though amqp091 may not notify it (issue 241).
	select {
	case <-ch.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("channel Done did not fire when the broker died")
	}
	for range msgs {
	}
	// Callers wait while the broker is down instead of failing at once.
	short := ctxT(t, 300*time.Millisecond)
	if _, err := c.Channel(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Channel while the broker is down: %v, want to wait until ctx ends", err)
	}
	if err := n.Start(); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitConnected(ctxT(t, 30*time.Second)); err != nil {
		t.Fatal(err)
	}
	if hookRuns != 1 {
		t.Fatalf("restore hook ran %d times after one reconnect", hookRuns)
	}
	if _, err := c.Channel(ctxT(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
}

func TestOperatorClosingConnectionsReconnects(t *testing.T) {
	n := node.Get(t)
	c := open(t, n.URL(), conn.Config{Reconnect: fast()})
	rec := record(c)
	if err := n.CloseAllConnections(ctxT(t, 30*time.Second)); err != nil {
		t.Fatal(err)
	}
	ch := rec.waitFor(t, 10*time.Second, "reconnecting", to(conn.StateReconnecting))
	var ae *amqp.Error
	if !errors.As(ch.Err, &ae) || ae.Code != amqp.ConnectionForced {
		t.Fatalf("cause %v, want 320 CONNECTION_FORCED", ch.Err)
	}
	rec.waitFor(t, 10*time.Second, "connected again", func(ch conn.StateChange) bool {
		return ch.From == conn.StateReconnecting && ch.To == conn.StateConnected
	})
}

func TestMemoryAlarmBlocksWritersAndResetsOnNewConnection(t *testing.T) {
	n := node.Get(t)
	rec := telemetrytest.New(t, telemetry.Config{})
	c := open(t, n.URL(), conn.Config{Reconnect: fast(), Telemetry: rec.Telemetry})
	ctx := ctxT(t, 60*time.Second)
	if err := n.RaiseMemoryAlarm(ctx); err != nil {
		t.Fatal(err)
	}
	defer n.ClearMemoryAlarm(context.Background())
	ch, err := c.NewChannel(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// RabbitMQ blocks a connection when it first publishes during an alarm.
	_ = ch.Publish(ctx, "", "nowhere", amqp.Publishing{Body: []byte("x")})
	rabbittest.Eventually(t, 20*time.Second, "Blocked() during a memory alarm", c.Blocked)
	err = c.WaitUnblocked(ctxT(t, 200*time.Millisecond))
	if !errors.Is(err, conn.ErrBlocked) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitUnblocked while blocked: %v, want ErrBlocked and DeadlineExceeded", err)
	}
	// A new connection starts unblocked: it will never get the old one's
	// connection.unblocked.
	if err := c.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if c.Blocked() {
		t.Fatal("blocked flag carried over to a new connection")
	}
	ch, err = c.NewChannel(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_ = ch.Publish(ctx, "", "nowhere", amqp.Publishing{Body: []byte("x")})
	rabbittest.Eventually(t, 20*time.Second, "Blocked() on the new connection during the alarm", c.Blocked)
	waited := make(chan error, 1)
	go func() { waited <- c.WaitUnblocked(ctx) }()
	if err := n.ClearMemoryAlarm(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-waited; err != nil {
		t.Fatalf("WaitUnblocked after the alarm cleared: %v", err)
	}
	if c.Blocked() {
		t.Fatal("still blocked after the alarm cleared")
	}
	// Both blocks are measured: the one that ended with its connection
	// (the refresh) and the one the broker lifted; the refresh is a
	// reconnect.
	if got := rec.HistogramCount(t, telemetry.MetricBlockedDuration); got != 2 {
		t.Fatalf("%s recorded %d blocks, want 2", telemetry.MetricBlockedDuration, got)
	}
	if got := rec.Counter(t, telemetry.MetricReconnects); got != 1 {
		t.Fatalf("%s = %d, want 1 (the refresh)", telemetry.MetricReconnects, got)
	}
}

// TestCredentialsProviderFollowsPasswordRotation: the password of a
// service's user is changed on the broker while the service runs; the
// provider gives the new one, the next reconnect logs in with it, and
// nothing published before or after is lost.
func TestCredentialsProviderFollowsPasswordRotation(t *testing.T) {
	n := node.Get(t)
	ctx := ctxT(t, 60*time.Second)
	rabbittest.AddUser(t, n.Name, "rotating", "first-secret", "/", rabbittest.Permissions{Configure: ".*", Write: ".*", Read: ".*"})
	var secret atomic.Value
	secret.Store("first-secret")
	var calls atomic.Int32
	c := open(t, "amqp://"+n.Addr()+"/", conn.Config{Reconnect: fast(), Credentials: func(context.Context) (conn.Credentials, error) {
		calls.Add(1)
		return conn.Credentials{Username: "rotating", Password: secret.Load().(string)}, nil
	}})
	ch, err := c.NewChannel(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare(ctx, "rotation", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if ch, err := c.NewChannel(context.Background()); err == nil {
			_, _ = ch.QueueDelete(context.Background(), "rotation", false, false, false)
		}
	}()
	if err := ch.Publish(ctx, "", "rotation", amqp.Publishing{Body: []byte("before")}); err != nil {
		t.Fatal(err)
	}
	if _, err := rabbittest.Ctl(ctx, n.Name, "change_password", "rotating", "second-secret"); err != nil {
		t.Fatal(err)
	}
	secret.Store("second-secret")
	if err := c.Refresh(ctx); err != nil {
		t.Fatalf("reconnect after the rotation: %v", err)
	}
	if calls.Load() < 2 {
		t.Fatalf("the provider was asked %d times, want once per dial", calls.Load())
	}
	ch, err = c.NewChannel(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.Publish(ctx, "", "rotation", amqp.Publishing{Body: []byte("after")}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"before", "after"} {
		var d amqp.Delivery
		var ok bool
		rabbittest.Eventually(t, 10*time.Second, "message "+want+" in the queue", func() bool {
			if d, ok, err = ch.Get(ctx, "rotation", true); err != nil {
				t.Fatal(err)
			}
			return ok
		})
		if string(d.Body) != want {
			t.Fatalf("got %q (%v), want %q: a message was lost over the rotation", d.Body, ok, want)
		}
	}
}

// TestExpiringSecretIsRenewedOnTheLiveConnection: a secret that expires
// is renewed with connection.update-secret before it does, on the same
// connection (no reconnect).
func TestExpiringSecretIsRenewedOnTheLiveConnection(t *testing.T) {
	n := node.Get(t)
	ctx := ctxT(t, 60*time.Second)
	c := open(t, "amqp://"+n.Addr()+"/", conn.Config{Reconnect: fast(), CredentialsRefreshBefore: 500 * time.Millisecond,
		Credentials: func(context.Context) (conn.Credentials, error) {
			return conn.Credentials{Username: "guest", Password: "guest", Expires: time.Now().Add(time.Second)}, nil
		}})
	gen := c.Generation()
	rabbittest.Eventually(t, 20*time.Second, "two secret updates (one per second)", func() bool { return c.SecretUpdates() >= 2 })
	if c.Generation() != gen {
		t.Fatal("the renewal reconnected instead of updating the live connection")
	}
	if _, err := c.NewChannel(ctx); err != nil {
		t.Fatalf("the connection after two renewals: %v", err)
	}
}
