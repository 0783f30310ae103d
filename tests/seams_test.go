package tests

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren"
	"github.com/warrenmq/warren/ack"
	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/conn"
	"github.com/warrenmq/warren/internal/delay"
	"github.com/warrenmq/warren/internal/headers"
	"github.com/warrenmq/warren/internal/rabbittest"
	"github.com/warrenmq/warren/middleware"
	"github.com/warrenmq/warren/router"
	"github.com/warrenmq/warren/topology"
)

// countingRoute is a route on queue whose handler counts what it sees.
func countingRoute(name, queue string, seen *atomic.Int64) router.Route {
	return router.Route{
		Name:    name,
		Queue:   topology.QueueSpec{Name: queue, Durable: true},
		Handler: func(*message.Message) error { seen.Add(1); return nil },
	}
}

// A producer in another service, on its own connection with the default
// settings, publishes into a queue a router declared: the consumer owns the
// queue's arguments, the producer reaches the queue as it is (no 406), in
// either dead-letter mode.
func TestProducerAfterTheRouterOnAnotherConnection(t *testing.T) {
	for _, mode := range []middleware.DeadLetterMode{middleware.PublishToDLQ, middleware.RejectToDLX} {
		t.Run(mode.String(), func(t *testing.T) {
			b := rabbittest.Shared(t)
			q := b.Name("orders")
			b.Name("orders.dlq")
			var seen atomic.Int64
			r := newRouter(t, b.URL, router.Config{})
			rt := countingRoute("orders", q, &seen)
			rt.DeadLetter.Mode = mode
			if err := r.AddRoute(rt); err != nil {
				t.Fatal(err)
			}
			startRouter(t, r)
			pub, err := warren.NewPublisher(openConn(t, b.URL), warren.PublisherConfig{})
			if err != nil {
				t.Fatal(err)
			}
			defer pub.Close()
			for i := range 3 {
				if err := pub.Publish(q, message.NewMessage(fmt.Sprint(i), []byte("x"))); err != nil {
					t.Fatalf("publish %d into the router's queue: %v", i, err)
				}
			}
			rabbittest.Eventually(t, 20*time.Second, "3 messages handled", func() bool { return seen.Load() == 3 })
		})
	}
}

// The producer comes first and declares the queue from its mapping, then
// the router starts on another connection: with the default dead-letter
// mode the queue is the route's as it is and every message published
// before is handled. A route that wants other arguments (RejectToDLX) gets
// the broker's 406 as a *QueueConflictError that names the setting that
// adopts the queue, having declared nothing else; with Queue.ReadOnly the
// route adopts the queue as it is.
func TestProducerBeforeTheRouterOnAnotherConnection(t *testing.T) {
	// A vhost of its own: the test looks for what a failed start declared.
	url, remove, err := rabbittest.NewVhost(fmt.Sprintf("warren-seams-%d", time.Now().UnixNano()))
	if err != nil {
		t.Fatal(err)
	}
	defer remove()
	b := struct{ URL string }{url}
	q := "orders"
	pub, err := warren.NewPublisher(openConn(t, b.URL), warren.PublisherConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	for i := range 3 {
		if err := pub.Publish(q, message.NewMessage(fmt.Sprint(i), []byte("x"))); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("a route that wants other arguments fails with the way out", func(t *testing.T) {
		var seen atomic.Int64
		r := newRouter(t, b.URL, router.Config{})
		rt := countingRoute("orders", q, &seen)
		rt.DeadLetter.Mode = middleware.RejectToDLX
		rt.DelayedRetry.Levels = []time.Duration{time.Second}
		if err := r.AddRoute(rt); err != nil {
			t.Fatal(err)
		}
		err := r.Run(ctxT(t, 30*time.Second))
		var qc *router.QueueConflictError
		if !errors.As(err, &qc) || !errors.Is(err, conn.ErrPreconditionFailed) || !strings.Contains(err.Error(), "Route.Queue.ReadOnly") ||
			!strings.Contains(err.Error(), "x-dead-letter") {
			t.Fatalf("Run: %v, want a *QueueConflictError naming the argument and Route.Queue.ReadOnly", err)
		}
		ops := opsOn(t, b.URL)
		for _, name := range []string{q + ".dlq", delay.ScheduleDueQueue} {
			if ok, err := ops.QueueExists(ctxT(t, 5*time.Second), name); ok || err != nil {
				t.Fatalf("the failed start declared %s (%v): nothing of a route is declared before its queue works", name, err)
			}
		}
		if ok, _ := ops.ExchangeExists(ctxT(t, 5*time.Second), delay.ScheduleDeliverExchange); ok {
			t.Fatal("the failed start declared the delay levels")
		}
	})

	t.Run("ReadOnly adopts the queue", func(t *testing.T) {
		var seen atomic.Int64
		r := newRouter(t, b.URL, router.Config{})
		rt := countingRoute("orders", q, &seen)
		rt.Queue = topology.QueueSpec{Name: q, ReadOnly: true}
		if err := r.AddRoute(rt); err != nil {
			t.Fatal(err)
		}
		startRouter(t, r)
		rabbittest.Eventually(t, 20*time.Second, "the adopted queue's 3 messages handled", func() bool { return seen.Load() == 3 })
	})

	t.Run("the default route takes the queue as it is", func(t *testing.T) {
		var seen atomic.Int64
		r := newRouter(t, b.URL, router.Config{})
		if err := r.AddRoute(countingRoute("orders", q, &seen)); err != nil {
			t.Fatal(err)
		}
		startRouter(t, r)
		for i := range 2 {
			if err := pub.Publish(q, message.NewMessage(fmt.Sprint("late-", i), []byte("x"))); err != nil {
				t.Fatal(err)
			}
		}
		rabbittest.Eventually(t, 20*time.Second, "2 more messages handled", func() bool { return seen.Load() == 2 })
	})
}

func opsOn(t *testing.T, url string) *broker.Ops {
	t.Helper()
	ops, err := broker.NewOps(openConn(t, url), broker.OpsConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ops.Close(context.Background()) })
	return ops
}

// A request whose requester gave up is never handled: it expires with its
// ctx, so a responder that starts afterwards finds nothing to do.
func TestRequestNobodyWaitsForIsNotProcessed(t *testing.T) {
	b := rabbittest.Shared(t)
	q := b.Name("rpc")
	c := openConn(t, b.URL)
	if _, err := opsOn(t, b.URL).DeclareQueue(ctxT(t, 5*time.Second), topology.QueueSpec{Name: q, Durable: true}); err != nil {
		t.Fatal(err)
	}
	req, err := warren.NewRequester(c, warren.RequesterConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer req.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := req.Request(ctx, q, message.NewMessage("late", []byte("?"))); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("request with nobody answering: %v, want its deadline", err)
	}
	// A request sent with KeepUnanswered stays, and marks when the
	// responder has seen everything there was.
	keep, err := warren.NewRequester(c, warren.RequesterConfig{KeepUnanswered: true})
	if err != nil {
		t.Fatal(err)
	}
	defer keep.Close()
	kctx, kcancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer kcancel()
	if _, err := keep.Request(kctx, q, message.NewMessage("kept", []byte("?"))); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("kept request: %v", err)
	}
	var handled []string
	seen := make(chan string, 2)
	r := newRouter(t, b.URL, router.Config{})
	if err := r.AddRoute(router.Route{Name: "rpc", Queue: topology.QueueSpec{Name: q, Durable: true},
		Respond: func(m *message.Message) (*message.Message, error) { seen <- m.UUID; return nil, nil }}); err != nil {
		t.Fatal(err)
	}
	startRouter(t, r)
	select {
	case id := <-seen:
		handled = append(handled, id)
	case <-time.After(20 * time.Second):
		t.Fatal("the kept request never reached the responder")
	}
	waitQueueDepth(t, b.URL, q, 0, 10*time.Second)
	select {
	case id := <-seen:
		handled = append(handled, id)
	default:
	}
	if !slices.Equal(handled, []string{"kept"}) {
		t.Fatalf("the responder handled %v, want only the request sent with KeepUnanswered", handled)
	}
}

// Copies carry no plumbing: a consumer that is not warren (raw amqp091-go)
// reads a dead letter and a delayed retry's copy with the user's headers
// and warren's documented ones only (the attempt counter and retry round,
// warren-dl-*, warren-original-*; the broker's own x-death of the delay
// hops), never the confirm path's warren-publish-seq nor the delay levels'
// routing headers. (Replays: cmd/warren TestReplayCarriesNoPlumbing.)
func TestCopiesCarryNoPlumbing(t *testing.T) {
	documented := func(k string) bool {
		// The broker's own record of the delay hops, and Watermill's
		// poison metadata (components/requeuer reads warren's dead letters).
		if headers.BrokerDeath(k) || strings.HasSuffix(k, "_poisoned") {
			return true
		}
		return k == "tenant" || k == "traceparent" || k == "tracestate" ||
			strings.HasPrefix(k, "warren-dl-") || strings.HasPrefix(k, "warren-original-") ||
			k == ack.AttemptHeader || k == middleware.HeaderRetryRound || k == middleware.HeaderRetryLevel || k == middleware.HeaderFirstFailure
	}
	check := func(t *testing.T, what string, d amqp.Delivery) {
		t.Helper()
		if d.Headers["tenant"] != "acme" {
			t.Errorf("%s lost the user's header: %v", what, d.Headers)
		}
		for k := range d.Headers {
			if !documented(k) {
				t.Errorf("%s carries %q: %v", what, k, d.Headers)
			}
		}
	}
	publishOne := func(t *testing.T, url, q string) {
		pub, err := warren.NewPublisher(openConn(t, url), warren.PublisherConfig{Mandatory: true})
		if err != nil {
			t.Fatal(err)
		}
		defer pub.Close()
		msg := message.NewMessage("m-1", []byte("x"))
		msg.Metadata.Set("tenant", "acme")
		if err := pub.Publish(q, msg); err != nil {
			t.Fatal(err)
		}
	}
	failing := func(*message.Message) error { return errors.New("always") }

	t.Run("dead letter", func(t *testing.T) {
		b := rabbittest.Shared(t)
		q, dlq := b.Name("work"), b.Name("work.dlq")
		r := newRouter(t, b.URL, router.Config{})
		if err := r.AddRoute(router.Route{Name: "work", Queue: topology.QueueSpec{Name: q, Durable: true}, Handler: failing,
			Retry: router.RetrySettings{Disabled: true}, DelayedRetry: router.DelayedRetrySettings{Disabled: true}}); err != nil {
			t.Fatal(err)
		}
		startRouter(t, r)
		publishOne(t, b.URL, q)
		waitQueueDepth(t, b.URL, dlq, 1, 30*time.Second)
		dead := getOne(t, b.URL, dlq)
		check(t, "the dead letter", dead)
		if dead.Headers[middleware.HeaderDLErrorType] == nil {
			t.Fatalf("the dead letter has no diagnostics: %v", dead.Headers)
		}
	})

	t.Run("delayed retry", func(t *testing.T) {
		b := rabbittest.Shared(t)
		q := b.Name("work")
		b.Name("work.dlq")
		retried := make(chan struct{}, 1)
		r := newRouter(t, b.URL, router.Config{})
		if err := r.AddRoute(router.Route{Name: "work", Queue: topology.QueueSpec{Name: q, Durable: true}, Handler: failing,
			Retry: router.RetrySettings{Disabled: true},
			DelayedRetry: router.DelayedRetrySettings{Levels: []time.Duration{2 * time.Second},
				OnRetry: func(middleware.DelayedRetryEvent) { retried <- struct{}{} }}}); err != nil {
			t.Fatal(err)
		}
		runErr := runRouter(t, r)
		publishOne(t, b.URL, q)
		select {
		case <-retried:
		case <-time.After(30 * time.Second):
			t.Fatal("no delayed retry")
		}
		// The route stops: the copy that comes back is the raw consumer's.
		if err := r.Close(ctxT(t, 30*time.Second)); err != nil {
			t.Fatal(err)
		}
		<-runErr
		waitQueueDepth(t, b.URL, q, 1, 30*time.Second)
		check(t, "the delayed retry's copy", getOne(t, b.URL, q))
	})
}

// TestDeadLetterModeMigration: a route that dead-lettered with RejectToDLX
// (its queue declared with x-dead-letter-routing-key) moves to the default
// PublishToDLQ. The queue's arguments cannot change: the start fails with
// a *QueueConflictError that names the argument and the way out, and the
// way out works: the route declares the arguments the queue has, and its
// dead letters now carry the error, its type, the attempts, the handler and
// where the message came from, beside the older x-death ones in the same
// dead-letter queue.
func TestDeadLetterModeMigration(t *testing.T) {
	t.Parallel()
	b := rabbittest.Shared(t)
	q := b.Name("migrating")
	b.Name("migrating.dlq")
	failing := func(mode middleware.DeadLetterMode, args topology.QueueArgs) router.Route {
		return router.Route{
			Name: "migrating", Queue: topology.QueueSpec{Name: q, Durable: true, Args: args},
			Retry: router.RetrySettings{Disabled: true}, DelayedRetry: router.DelayedRetrySettings{Disabled: true},
			DeadLetter: router.DeadLetterSettings{Mode: mode},
			Handler:    func(*message.Message) error { return ack.Permanent(declinedError{}) },
		}
	}
	before := newRouter(t, b.URL, router.Config{})
	if err := before.AddRoute(failing(middleware.RejectToDLX, topology.QueueArgs{})); err != nil {
		t.Fatal(err)
	}
	startRouter(t, before)
	publish(t, before, q, message.NewMessage("rejected", nil))
	waitQueueDepth(t, b.URL, q+".dlq", 1, 20*time.Second)
	if err := before.Close(ctxT(t, 30*time.Second)); err != nil {
		t.Fatal(err)
	}

	after := newRouter(t, b.URL, router.Config{})
	if err := after.AddRoute(failing(middleware.PublishToDLQ, topology.QueueArgs{})); err != nil {
		t.Fatal(err)
	}
	err := after.Run(ctxT(t, 30*time.Second))
	var qc *router.QueueConflictError
	if !errors.As(err, &qc) || !strings.HasPrefix(qc.Argument, "x-dead-letter-") || !strings.Contains(err.Error(), "Route.Queue.Args") ||
		!strings.Contains(err.Error(), "Route.Queue.ReadOnly") {
		t.Fatalf("Run after a change of mode: %v, want a *QueueConflictError naming the dead-letter argument and the way out", err)
	}

	migrated := newRouter(t, b.URL, router.Config{})
	if err := migrated.AddRoute(failing(middleware.PublishToDLQ, topology.QueueArgs{DeadLetterRoutingKey: q + ".dlq"})); err != nil {
		t.Fatal(err)
	}
	startRouter(t, migrated)
	publish(t, migrated, q, message.NewMessage("published", nil))
	waitQueueDepth(t, b.URL, q+".dlq", 2, 20*time.Second)
	old, published := getOne(t, b.URL, q+".dlq"), getOne(t, b.URL, q+".dlq")
	if old.MessageId != "rejected" || published.MessageId != "published" {
		t.Fatalf("dead letters %q, %q", old.MessageId, published.MessageId)
	}
	for header, want := range map[string]string{
		middleware.HeaderDLError: "card declined", middleware.HeaderDLErrorType: "card_declined", middleware.HeaderDLAttempts: "1",
		middleware.HeaderDLHandler: "migrating", middleware.HeaderDLQueue: q, middleware.HeaderDLRoutingKey: q,
	} {
		if got := headers.String(published.Headers[header]); got != want {
			t.Errorf("the migrated route's dead letter: %s = %q, want %q", header, got, want)
		}
	}
}
