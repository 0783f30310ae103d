package tests

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	wmw "github.com/ThreeDotsLabs/watermill/message/router/middleware"

	"github.com/warrenmq/warren"
	"github.com/warrenmq/warren/internal/rabbittest"
	"github.com/warrenmq/warren/middleware"
	kit "github.com/warrenmq/warren/middleware/middlewaretest"
	"github.com/warrenmq/warren/router"
	"github.com/warrenmq/warren/topology"
)

// TestPanicReachesTheDeadLetterQueue: a handler that panics loses no
// message, whatever the dead-letter mode, on a warren router and on a
// plain Watermill router with warren's middleware: each of three panicking
// messages ends in the dead-letter queue once (with the panic and its stack
// where warren writes the diagnostics), none is dropped by the broker.
func TestPanicReachesTheDeadLetterQueue(t *testing.T) {
	const n = 3
	panics := func(*message.Message) error { panic("nil pointer in the handler") }
	publishN := func(t *testing.T, url, queue string) {
		pub, err := warren.NewPublisher(openConn(t, url), warren.PublisherConfig{Mapping: warren.ExistingQueues{}})
		if err != nil {
			t.Fatal(err)
		}
		defer pub.Close()
		for i := range n {
			if err := pub.Publish(queue, message.NewMessage(watermill.NewUUID(), []byte{byte(i)})); err != nil {
				t.Fatal(err)
			}
		}
	}
	checkDeadLetters := func(t *testing.T, url, queue, dlq string, withStack bool) {
		waitQueueDepth(t, url, dlq, n, 30*time.Second)
		waitQueueDepth(t, url, queue, 0, 10*time.Second)
		d := getOnePeek(t, url, dlq)
		stack, _ := d.Headers[middleware.HeaderDLStack].(string)
		if withStack && (d.Headers[middleware.HeaderDLErrorType] != "panic" || !strings.Contains(stack, "panic_test.go")) {
			t.Fatalf("dead letter of a panic: type %v, stack %q", d.Headers[middleware.HeaderDLErrorType], stack)
		}
	}
	for _, mode := range []middleware.DeadLetterMode{middleware.PublishToDLQ, middleware.RejectToDLX} {
		t.Run("router "+mode.String(), func(t *testing.T) {
			b := rabbittest.Shared(t)
			q, dlq := b.Name("panics"), b.Name("panics.dlq")
			r := newRouter(t, b.URL, router.Config{})
			if err := r.AddRoute(router.Route{Name: "panics", Queue: topology.QueueSpec{Name: q, Durable: true}, Handler: panics,
				DeadLetter: router.DeadLetterSettings{Mode: mode}}); err != nil {
				t.Fatal(err)
			}
			startRouter(t, r)
			publishN(t, b.URL, q)
			checkDeadLetters(t, b.URL, q, dlq, mode == middleware.PublishToDLQ)
		})
	}
	t.Run("plain Watermill router", func(t *testing.T) {
		b := rabbittest.Shared(t)
		q, dlq := b.Name("panics"), b.Name("panics.dlq")
		c := openConn(t, b.URL)
		ops := opsOn(t, b.URL)
		for _, name := range []string{q, dlq} {
			if _, err := ops.DeclareQueue(ctxT(t, 10*time.Second), topology.QueueSpec{Name: name, Durable: true}); err != nil {
				t.Fatal(err)
			}
		}
		sub, err := warren.NewSubscriber(c, warren.SubscriberConfig{Mapping: warren.ExistingQueues{}})
		if err != nil {
			t.Fatal(err)
		}
		dlPub, err := warren.NewPublisher(c, warren.PublisherConfig{Mapping: warren.ExistingQueues{}})
		if err != nil {
			t.Fatal(err)
		}
		wr, err := message.NewRouter(message.RouterConfig{}, watermill.NopLogger{})
		if err != nil {
			t.Fatal(err)
		}
		// The order a user writes them in: Ack outermost, then DeadLetter.
		wr.AddMiddleware(kit.Must(middleware.Ack(middleware.AckConfig{})), kit.Must(middleware.DeadLetter(middleware.DeadLetterConfig{Publisher: dlPub})))
		wr.AddConsumerHandler("panics", q, sub, panics)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- wr.Run(ctx) }()
		t.Cleanup(func() {
			cancel()
			<-done
			_ = dlPub.Close()
			_ = sub.Close()
		})
		<-wr.Running()
		publishN(t, b.URL, q)
		checkDeadLetters(t, b.URL, q, dlq, true)
	})
}

// TestWatermillMiddlewareAppliesToRoutes: middleware added to the
// underlying Watermill router (here Watermill's CorrelationID and one that
// counts) runs for the router's routes, with the default config: it is
// never skipped without a word.
func TestWatermillMiddlewareAppliesToRoutes(t *testing.T) {
	b := rabbittest.Shared(t)
	q := b.Name("wm")
	b.Name("wm.dlq")
	var seen atomic.Int64
	got := make(chan string, 1)
	r := newRouter(t, b.URL, router.Config{})
	r.Watermill().AddMiddleware(wmw.CorrelationID, func(h message.HandlerFunc) message.HandlerFunc {
		return func(m *message.Message) ([]*message.Message, error) {
			seen.Add(1)
			return h(m)
		}
	})
	if err := r.AddRoute(router.Route{Name: "wm", Queue: topology.QueueSpec{Name: q, Durable: true},
		Handler: func(m *message.Message) error { got <- wmw.MessageCorrelationID(m); return nil }}); err != nil {
		t.Fatal(err)
	}
	startRouter(t, r)
	msg := message.NewMessage("wm-1", nil)
	wmw.SetCorrelationID("corr-7", msg)
	publish(t, r, q, msg)
	select {
	case corr := <-got:
		if corr != "corr-7" || seen.Load() != 1 {
			t.Fatalf("correlation id %q, middleware ran %d times: the Watermill router's middleware was skipped", corr, seen.Load())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("not handled")
	}
}
