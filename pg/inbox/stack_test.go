package inbox_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"

	"github.com/warrenmq/warren/ack"
	"github.com/warrenmq/warren/middleware"
	kit "github.com/warrenmq/warren/middleware/middlewaretest"
	"github.com/warrenmq/warren/router"
	"github.com/warrenmq/warren/router/routertest"
	"github.com/warrenmq/warren/topology"
)

// TestInboxInARouteStack: innermost in a route's production stack, each
// in-process attempt is a transaction of its own; the failed attempts
// leave nothing, the attempt count is the stack's, and the delivery is
// acked once the effect committed.
func TestInboxInARouteStack(t *testing.T) {
	pool, ib := setup(t)
	failures := 2
	var attempts []int
	route := router.Route{
		Name: "billing", Queue: topology.QueueSpec{Name: "orders"},
		Retry:      router.RetrySettings{RetryConfig: middleware.RetryConfig{MaxAttempts: 3}},
		Middleware: []message.HandlerMiddleware{ib.Middleware},
		Handler: func(m *message.Message) error {
			attempts = append(attempts, ack.Attempt(m))
			if _, err := apply(nil)(m); err != nil {
				return err
			}
			if failures > 0 {
				failures--
				return errors.New("downstream not ready")
			}
			return nil
		},
	}
	res, err := routertest.Run(route, kit.NewMessage("x", kit.WithUUID("order-9")))
	if err != nil {
		t.Fatal(err)
	}
	if res.Disposition != ack.Ack || res.Calls != 3 || effect(t, pool, "order-9") != 1 {
		t.Fatalf("disposition %v after %d calls, effect %d", res.Disposition, res.Calls, effect(t, pool, "order-9"))
	}
	if len(attempts) != 3 || attempts[0] != 1 || attempts[2] != 3 {
		t.Fatalf("attempts seen %v, want 1 2 3", attempts)
	}
	// The same message again (a redelivery): acked, the handler not run.
	res, err = routertest.Run(route, kit.NewMessage("x", kit.WithUUID("order-9"), kit.WithRedelivered()))
	if err != nil || res.Disposition != ack.Ack || res.Calls != 0 || ib.Duplicates() != 1 {
		t.Fatalf("duplicate: %+v (%v), duplicates %d", res, err, ib.Duplicates())
	}
}

// TestInboxOnAPlainWatermillRouter: the middleware on Watermill's own
// router and Pub/Sub.
func TestInboxOnAPlainWatermillRouter(t *testing.T) {
	pool, ib := setup(t)
	logger := watermill.NopLogger{}
	ps := gochannel.NewGoChannel(gochannel.Config{}, logger)
	defer ps.Close()
	wr, err := message.NewRouter(message.RouterConfig{}, logger)
	if err != nil {
		t.Fatal(err)
	}
	handled := make(chan struct{}, 10)
	wr.AddConsumerHandler("billing", "orders", ps, func(m *message.Message) error {
		_, err := ib.Middleware(apply(nil))(m)
		handled <- struct{}{}
		return err
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = wr.Run(ctx) }()
	<-wr.Running()
	for range 2 {
		if err := ps.Publish("orders", message.NewMessage("order-10", []byte("{}"))); err != nil {
			t.Fatal(err)
		}
	}
	for range 2 {
		select {
		case <-handled:
		case <-time.After(10 * time.Second):
			t.Fatal("message not handled")
		}
	}
	if n := effect(t, pool, "order-10"); n != 1 || ib.Duplicates() != 1 {
		t.Fatalf("effect applied %d times, %d duplicates", n, ib.Duplicates())
	}
	_ = wr.Close()
}
