package tests

import (
	"context"
	"errors"
	"fmt"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren"
	"github.com/warrenmq/warren/ack"
	"github.com/warrenmq/warren/conn"
	"github.com/warrenmq/warren/internal/headers"
	"github.com/warrenmq/warren/internal/rabbittest"
	"github.com/warrenmq/warren/middleware"
	"github.com/warrenmq/warren/retry"
	"github.com/warrenmq/warren/router"
	"github.com/warrenmq/warren/topology"
)

// runRouter runs r in the background until it is running, and returns
// what Run returns.
func runRouter(t *testing.T, r *router.Router) <-chan error {
	t.Helper()
	runErr := make(chan error, 1)
	go func() { runErr <- r.Run(context.Background()) }()
	if err := r.WaitRunning(ctxT(t, 30*time.Second)); err != nil {
		t.Fatalf("Run: %v", err)
	}
	return runErr
}

// startRouter runs r in the background; the test's cleanup closes it.
func startRouter(t *testing.T, r *router.Router) {
	t.Helper()
	errc := make(chan error, 1)
	go func() { errc <- r.Run(context.Background()) }()
	if err := r.WaitRunning(ctxT(t, 30*time.Second)); err != nil {
		t.Fatalf("Run: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
		defer cancel()
		if err := r.Close(ctx); err != nil {
			t.Errorf("router Close: %v", err)
		}
	})
}

func newRouter(t *testing.T, url string, cfg router.Config) *router.Router {
	t.Helper()
	c := openConn(t, url)
	if cfg.Output.Mapping == nil {
		cfg.Output.Mapping = warren.ExistingQueues{}
	}
	r, err := router.New(c, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func publish(t *testing.T, r *router.Router, queue string, msgs ...*message.Message) {
	t.Helper()
	if err := r.Publisher().Publish(queue, msgs...); err != nil {
		t.Fatal(err)
	}
}

// dlq reads the dead-letter queue from the outside.
func waitQueueDepth(t *testing.T, url, queue string, want int, within time.Duration) {
	t.Helper()
	c, err := amqp.Dial(url)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var q amqp.Queue
	rabbittest.Eventually(t, within, fmt.Sprintf("%d message(s) in queue %s", want, queue), func() bool {
		ch, err := c.Channel()
		if err != nil {
			t.Fatal(err)
		}
		defer ch.Close()
		q, err = ch.QueueDeclarePassive(queue, true, false, false, false, nil)
		return err == nil && q.Messages == want
	}, func() string { return fmt.Sprintf("it holds %d", q.Messages) })
}

// getOne takes the head of queue from the outside.
func getOne(t *testing.T, url, queue string) amqp.Delivery { return getHead(t, url, queue, false) }

// getOnePeek reads the head of queue from the outside and puts it back.
func getOnePeek(t *testing.T, url, queue string) amqp.Delivery { return getHead(t, url, queue, true) }

func getHead(t *testing.T, url, queue string, putBack bool) amqp.Delivery {
	t.Helper()
	c, err := amqp.Dial(url)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ch, _ := c.Channel()
	d, ok, err := ch.Get(queue, !putBack)
	if err != nil || !ok {
		t.Fatalf("get from %s: %v %v", queue, ok, err)
	}
	if putBack {
		if err := d.Nack(false, true); err != nil {
			t.Fatal(err)
		}
	}
	return d
}

func fastRetry() router.RetrySettings {
	return router.RetrySettings{RetryConfig: middleware.RetryConfig{MaxAttempts: 2, Backoff: retry.Backoff{InitialInterval: 5 * time.Millisecond}}}
}

func TestRouteFailsThreeTimesThenSucceeds(t *testing.T) {
	b := rabbittest.Shared(t)
	r := newRouter(t, b.URL, router.Config{})
	q := b.Prefix + "fails3"
	var mu sync.Mutex
	var attempts []int
	calls := 0
	if err := r.AddRoute(router.Route{
		Name: "fails3", Queue: topology.QueueSpec{Name: q, Durable: true},
		Retry: fastRetry(), DelayedRetry: router.DelayedRetrySettings{Levels: []time.Duration{time.Second}},
		Handler: func(m *message.Message) error {
			mu.Lock()
			defer mu.Unlock()
			calls++
			attempts = append(attempts, ack.Attempt(m))
			if calls <= 3 {
				return errors.New("not yet")
			}
			return nil
		},
	}); err != nil {
		t.Fatal(err)
	}
	startRouter(t, r)
	publish(t, r, q, message.NewMessage(watermill.NewUUID(), []byte("x")))
	rabbittest.Eventually(t, 20*time.Second, "4 runs of the handler", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return calls >= 4
	}, func() string { mu.Lock(); defer mu.Unlock(); return fmt.Sprintf("it ran %d times", calls) })
	waitQueueDepth(t, b.URL, q+".dlq", 0, time.Second)
	waitQueueDepth(t, b.URL, q, 0, 5*time.Second)
	mu.Lock()
	defer mu.Unlock()
	// One meaning of attempt: executions of the handler. Two in-process
	// attempts of delivery 1, then two of the copy back from the delay queue
	// (warren's header carries the count across).
	if fmt.Sprint(attempts) != "[1 2 3 4]" {
		t.Fatalf("attempts seen %v, want [1 2 3 4]", attempts)
	}
}

func TestRouteAlwaysFailingEndsInDeadLetterQueue(t *testing.T) {
	t.Parallel()
	b := rabbittest.Shared(t)
	for _, mode := range []middleware.DeadLetterMode{middleware.PublishToDLQ, middleware.RejectToDLX} {
		t.Run(strconv.Itoa(int(mode)), func(t *testing.T) {
			r := newRouter(t, b.URL, router.Config{})
			q := fmt.Sprintf("%sdl%d", b.Prefix, mode)
			var dead atomic.Int32
			levels := []time.Duration{time.Second, 2 * time.Second}
			if err := r.AddRoute(router.Route{
				Name: "always-fails", Queue: topology.QueueSpec{Name: q, Durable: true},
				Retry: fastRetry(), DelayedRetry: router.DelayedRetrySettings{Levels: levels},
				DeadLetter: router.DeadLetterSettings{Mode: mode, OnDeadLetter: func(middleware.DeadLetterEvent) { dead.Add(1) }},
				Handler:    func(*message.Message) error { return errors.New("always broken") },
			}); err != nil {
				t.Fatal(err)
			}
			startRouter(t, r)
			start := time.Now()
			publish(t, r, q, message.NewMessage("doomed", []byte("payload")))
			waitQueueDepth(t, b.URL, q+".dlq", 1, 20*time.Second)
			if d := time.Since(start); d < 3*time.Second {
				t.Fatalf("dead-lettered after %v, before the configured delays (3s)", d)
			}
			d := getOne(t, b.URL, q+".dlq")
			if d.MessageId != "doomed" || string(d.Body) != "payload" || dead.Load() != 1 {
				t.Fatalf("dead letter %s %q, hook ran %d times", d.MessageId, d.Body, dead.Load())
			}
			if mode == middleware.PublishToDLQ {
				for k, want := range map[string]string{
					middleware.HeaderDLAttempts: "6", // 2 in-process attempts × (first delivery + 2 delay levels)
					middleware.HeaderDLQueue:    q, middleware.HeaderDLHandler: "always-fails",
					middleware.HeaderDLErrorType: "_OTHER", // the handler's own error: a plain text, no kind of its own
				} {
					if got := headers.String(d.Headers[k]); got != want {
						t.Errorf("%s = %q, want %q", k, got, want)
					}
				}
				for _, k := range []string{middleware.HeaderDLError, middleware.HeaderDLFirstFail, middleware.HeaderDLLastFail} {
					if headers.String(d.Headers[k]) == "" {
						t.Errorf("header %s missing", k)
					}
				}
			} else if n, ok := headers.DeathCount(d.Headers, q, "rejected"); !ok || n != 1 {
				t.Fatalf("rejected to the DLX: x-death %v", d.Headers["x-death"])
			}
		})
	}
}

type pickyMarshaler struct{ warren.DefaultMarshaler }

func (p pickyMarshaler) Unmarshal(d *amqp.Delivery) (*message.Message, error) {
	if string(d.Body) == "poison" {
		return nil, errors.New("cannot decode")
	}
	return p.DefaultMarshaler.Unmarshal(d)
}

func TestPoisonMessageReachesDeadLetterQueueOnce(t *testing.T) {
	b := rabbittest.Shared(t)
	r := newRouter(t, b.URL, router.Config{})
	q := b.Prefix + "poison"
	var handled, dead atomic.Int32
	if err := r.AddRoute(router.Route{
		Name: "poison", Queue: topology.QueueSpec{Name: q, Durable: true}, Marshaler: pickyMarshaler{},
		DeadLetter: router.DeadLetterSettings{Mode: middleware.PublishToDLQ, OnDeadLetter: func(middleware.DeadLetterEvent) { dead.Add(1) }},
		Handler:    func(*message.Message) error { handled.Add(1); return nil },
	}); err != nil {
		t.Fatal(err)
	}
	startRouter(t, r)
	publish(t, r, q, message.NewMessage("bad", []byte("poison")), message.NewMessage("good", []byte("fine")))
	waitQueueDepth(t, b.URL, q+".dlq", 1, 10*time.Second)
	// Settled for good: nothing of it is ready or unacknowledged in the work
	// queue any more, so no requeue loop can follow.
	b.WaitSettled(t, q, 10*time.Second)
	waitQueueDepth(t, b.URL, q+".dlq", 1, time.Second)
	if handled.Load() != 1 || dead.Load() != 1 {
		t.Fatalf("handled %d, dead-lettered %d", handled.Load(), dead.Load())
	}
	if d := getOne(t, b.URL, q+".dlq"); d.MessageId != "bad" || headers.String(d.Headers[middleware.HeaderDLError]) == "" {
		t.Fatalf("poison dead letter %s %v", d.MessageId, d.Headers)
	}
}

// Failures settle with basic.reject, so a quorum queue's delivery limit
// counts them (PITFALLS 17).
func TestQuorumDeliveryLimitCountsFailures(t *testing.T) {
	b := rabbittest.Shared(t)
	r := newRouter(t, b.URL, router.Config{})
	q := b.Prefix + "quorum"
	var mu sync.Mutex
	var attempts []int
	if err := r.AddRoute(router.Route{
		Name: "quorum",
		Queue: topology.QueueSpec{Name: q, Durable: true, Args: topology.QueueArgs{
			Type: topology.Quorum, DeliveryLimit: 2, DeadLetterRoutingKey: q + ".dlq",
		}},
		Retry: router.RetrySettings{Disabled: true}, DelayedRetry: router.DelayedRetrySettings{Disabled: true},
		DeadLetter: router.DeadLetterSettings{Disabled: true},
		Handler: func(m *message.Message) error {
			mu.Lock()
			attempts = append(attempts, ack.Attempt(m))
			mu.Unlock()
			return errors.New("fails")
		},
	}); err != nil {
		t.Fatal(err)
	}
	ops := r.Ops()
	if _, err := ops.DeclareQueue(context.Background(), topology.QueueSpec{Name: q + ".dlq", Durable: true}); err != nil {
		t.Fatal(err)
	}
	startRouter(t, r)
	publish(t, r, q, message.NewMessage("limited", nil))
	waitQueueDepth(t, b.URL, q+".dlq", 1, 20*time.Second)
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(attempts) != "[1 2 3]" {
		t.Fatalf("attempts %v, want [1 2 3]: each failure counted by x-delivery-count until the limit", attempts)
	}
}

func TestRunRefusesMissingDeadLetterExchange(t *testing.T) {
	b := rabbittest.Shared(t)
	r := newRouter(t, b.URL, router.Config{})
	q := b.Prefix + "nodlx"
	if err := r.AddRoute(router.Route{
		Name: "nodlx", Queue: topology.QueueSpec{Name: q, Args: topology.QueueArgs{DeadLetterExchange: b.Prefix + "missing"}},
		Handler: func(*message.Message) error { return nil },
	}); err != nil {
		t.Fatal(err)
	}
	err := r.Run(ctxT(t, 30*time.Second))
	if !errors.Is(err, router.ErrDeadLetterMissing) {
		t.Fatalf("Run with a missing DLX: %v", err)
	}
	_ = r.Close(context.Background())
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func TestRouteValidation(t *testing.T) {
	c, _ := conn.New("amqp://127.0.0.1:1/", conn.Config{})
	r, err := router.New(c, router.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close(context.Background())
	h := func(*message.Message) error { return nil }
	for _, rt := range []router.Route{
		{Queue: topology.QueueSpec{Name: "q"}, Handler: h},
		{Name: "n", Handler: h},
		{Name: "n", Queue: topology.QueueSpec{Name: "q"}},
		{Name: "n", Queue: topology.QueueSpec{Name: "q"}, Handler: h, Produce: func(*message.Message) ([]*message.Message, error) { return nil, nil }},
		{Name: "n", Queue: topology.QueueSpec{Name: "q"}, Produce: func(*message.Message) ([]*message.Message, error) { return nil, nil }},
		{Name: "n", Queue: topology.QueueSpec{Name: "q"}, Handler: h, DelayedRetry: router.DelayedRetrySettings{Levels: []time.Duration{0}}},
		{Name: "n", Queue: topology.QueueSpec{Name: "q", Args: topology.QueueArgs{Type: topology.Quorum}}, Handler: h},
	} {
		if err := r.AddRoute(rt); !errors.Is(err, router.ErrInvalidRoute) && !errors.Is(err, topology.ErrInvalidSpec) {
			t.Errorf("%+v accepted: %v", rt.Name, err)
		}
	}
	if err := r.AddRoute(router.Route{Name: "ok", Queue: topology.QueueSpec{Name: "q"}, Handler: h}); err != nil {
		t.Fatal(err)
	}
	if err := r.AddRoute(router.Route{Name: "ok", Queue: topology.QueueSpec{Name: "q2"}, Handler: h}); !errors.Is(err, router.ErrInvalidRoute) {
		t.Fatalf("duplicate name: %v", err)
	}
}

// A connection that gives up reconnecting ends Run with conn.ErrClosed
// and the connection's reason: a router must not run on consuming nothing
// (its process would look alive to a supervisor).
func TestRunEndsWhenTheConnectionGivesUp(t *testing.T) {
	b := rabbittest.Shared(t)
	p := rabbittest.NewProxy(t, rabbittest.SharedAddr)
	c, err := conn.New(p.URL(b.Vhost), conn.Config{Reconnect: conn.RetryPolicy{MaxAttempts: 2, Backoff: retry.Backoff{InitialInterval: 10 * time.Millisecond, Multiplier: 1, MaxInterval: 10 * time.Millisecond}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Open(ctxT(t, 20*time.Second)); err != nil {
		t.Fatal(err)
	}
	r, err := router.New(c, router.Config{CloseConnection: true, Output: warren.PublisherConfig{Mapping: warren.ExistingQueues{}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.AddRoute(router.Route{Name: "gives-up", Queue: topology.QueueSpec{Name: b.Prefix + "gives-up"}, Handler: func(*message.Message) error { return nil }}); err != nil {
		t.Fatal(err)
	}
	ran := make(chan error, 1)
	go func() { ran <- r.Run(context.Background()) }()
	if err := r.WaitRunning(ctxT(t, 30*time.Second)); err != nil {
		t.Fatal(err)
	}
	p.Cut() // the one retry the policy allows fails too
	select {
	case err := <-ran:
		if !errors.Is(err, conn.ErrClosed) || !errors.Is(err, conn.ErrGaveUp) {
			t.Fatalf("Run returned %v, want conn.ErrClosed with the connection's ErrGaveUp", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("Run still running 30s after its connection gave up (state %v)", c.State())
	}
	// Close after that is a no-op that reports nothing new.
	if err := r.Close(ctxT(t, 10*time.Second)); err != nil && !errors.Is(err, conn.ErrClosed) {
		t.Fatalf("Close after the connection gave up: %v", err)
	}
}

func TestHealth(t *testing.T) {
	b := rabbittest.Shared(t)
	p := rabbittest.NewProxy(t, rabbittest.SharedAddr)
	r := newRouter(t, p.URL(b.Vhost), router.Config{})
	q := b.Prefix + "health"
	if err := r.AddRoute(router.Route{Name: "health", Queue: topology.QueueSpec{Name: q}, Handler: func(*message.Message) error { return nil }}); err != nil {
		t.Fatal(err)
	}
	startRouter(t, r)
	srv := httptest.NewServer(r.ReadinessHandler())
	defer srv.Close()
	status := func() int {
		resp, err := srv.Client().Get(srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if h := r.Health(); !h.Ready() || status() != 200 {
		t.Fatalf("not ready after Run: %+v", h)
	}
	p.Cut()
	rabbittest.Eventually(t, 10*time.Second, "the router to see the broker unreachable", func() bool { return !r.Health().Connected })
	if h := r.Health(); h.Ready() || status() != 503 {
		t.Fatalf("ready with the broker unreachable: %+v", h)
	}
	if err := p.Restore(); err != nil {
		t.Fatal(err)
	}
	rabbittest.Eventually(t, 20*time.Second, "the router ready again after the reconnect", func() bool { return r.Health().Ready() },
		func() string { return fmt.Sprintf("%+v", r.Health()) })
}

type missingKey struct{}

// A route's messages derive their contexts from Run's without its
// cancellation. context.WithoutCancel there cost an allocation on every
// lookup that reached it (a span when tracing is off, a logger's key): at
// least one a message.
func TestRouteMessageContextLookupsDoNotAllocate(t *testing.T) {
	b := rabbittest.Shared(t)
	r := newRouter(t, b.URL, router.Config{})
	q := b.Prefix + "lookups"
	allocs := make(chan float64, 1)
	if err := r.AddRoute(router.Route{
		Name: "lookups", Queue: topology.QueueSpec{Name: q, Durable: true},
		Handler: func(m *message.Message) error {
			ctx := m.Context()
			n := testing.AllocsPerRun(100, func() { _ = ctx.Value(missingKey{}) })
			select {
			case allocs <- n:
			default:
			}
			return nil
		},
	}); err != nil {
		t.Fatal(err)
	}
	startRouter(t, r)
	publish(t, r, q, message.NewMessage(watermill.NewUUID(), []byte("x")))
	select {
	case n := <-allocs:
		if n != 0 {
			t.Fatalf("a lookup in a route handler's context allocates %v times", n)
		}
	case <-ctxT(t, 30*time.Second).Done():
		t.Fatal("the handler did not run within 30 s")
	}
}
