package tests

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren/ack"
	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/conn"
	"github.com/warrenmq/warren/internal/rabbittest"
	"github.com/warrenmq/warren/router"
	"github.com/warrenmq/warren/topology"
)

// TestQueueDeletedUnderARunningRouter: an operator deletes a route's queue.
// The route declares it again from its spec and consumes within 2s; the
// router keeps running; messages published afterwards are handled; the
// hook sees each step.
func TestQueueDeletedUnderARunningRouter(t *testing.T) {
	b := rabbittest.Shared(t)
	var mu sync.Mutex
	var events []broker.ConsumerEvent
	r := newRouter(t, b.URL, router.Config{OnConsumerEvent: func(route string, e broker.ConsumerEvent) {
		mu.Lock()
		events = append(events, e)
		mu.Unlock()
	}})
	q := b.Prefix + "deleted"
	got := make(chan string, 10)
	if err := r.AddRoute(router.Route{
		Name: "deleted", Queue: topology.QueueSpec{Name: q, Durable: true, Args: topology.QueueArgs{MaxLength: 100000}},
		Handler: func(m *message.Message) error { got <- m.UUID; return nil },
	}); err != nil {
		t.Fatal(err)
	}
	runErr := runRouter(t, r)
	t.Cleanup(func() { _ = r.Close(context.Background()) })
	raw := b.Dial()
	ch, err := raw.Channel()
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := ch.QueueDelete(q, false, false, false); err != nil {
		t.Fatal(err)
	}
	var back time.Duration
	for {
		mu.Lock()
		var kinds []broker.ConsumerEventKind
		for _, e := range events {
			kinds = append(kinds, e.Kind)
		}
		mu.Unlock()
		if len(kinds) > 0 && kinds[len(kinds)-1] == broker.ConsumerResumed {
			back = time.Since(start)
			if kinds[0] != broker.ConsumerInterrupted {
				t.Fatalf("events %v", kinds)
			}
			break
		}
		if time.Since(start) > 10*time.Second {
			t.Fatalf("not consuming again; events %v; health %+v", kinds, r.Health())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if back > 2*time.Second {
		t.Fatalf("consuming again after %v, want within 2s", back)
	}
	if !r.Health().Ready() {
		t.Fatalf("health after the queue came back: %+v", r.Health())
	}
	select {
	case err := <-runErr:
		t.Fatalf("the router stopped: %v", err)
	default:
	}
	publish(t, r, q, message.NewMessage("after", nil))
	select {
	case id := <-got:
		if id != "after" {
			t.Fatalf("got %s", id)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("message published after the deletion not handled")
	}
	// Its arguments came back with it: the broker refuses a plain
	// declaration of the same name.
	ch2, _ := raw.Channel()
	if _, err := ch2.QueueDeclare(q, true, false, false, false, nil); err == nil {
		t.Fatal("queue declared again without its route's arguments")
	}
	t.Logf("queue deleted under a running router: consuming again after %v", back)
}

// TestShutdownLetsHandlersFinish: 4 handlers in flight that honour
// m.Context() and take 500ms. With a 2s budget all four finish and ack;
// with 100ms they are cancelled and the broker redelivers them: none lost.
func TestShutdownLetsHandlersFinish(t *testing.T) {
	for _, tc := range []struct {
		budget   time.Duration
		finished int32
	}{{2 * time.Second, 4}, {100 * time.Millisecond, 0}} {
		t.Run(tc.budget.String(), func(t *testing.T) {
			b := rabbittest.Shared(t)
			r := newRouter(t, b.URL, router.Config{})
			q := b.Prefix + "drain"
			inFlight := make(chan struct{}, 4)
			var finished, cancelled atomic.Int32
			if err := r.AddRoute(router.Route{
				Name: "drain", Queue: topology.QueueSpec{Name: q, Durable: true}, MaxInFlight: 4,
				Retry: router.RetrySettings{Disabled: true}, DelayedRetry: router.DelayedRetrySettings{Disabled: true},
				Handler: func(m *message.Message) error {
					inFlight <- struct{}{}
					select {
					case <-time.After(500 * time.Millisecond):
						finished.Add(1)
						return nil
					case <-m.Context().Done():
						cancelled.Add(1)
						return ackRequeue(m.Context().Err())
					}
				},
			}); err != nil {
				t.Fatal(err)
			}
			runErr := runRouter(t, r)
			for i := 0; i < 4; i++ {
				publish(t, r, q, message.NewMessage("m"+string(rune('0'+i)), nil))
			}
			for i := 0; i < 4; i++ {
				select {
				case <-inFlight:
				case <-time.After(10 * time.Second):
					t.Fatal("handlers did not start")
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), tc.budget)
			defer cancel()
			err := r.Close(ctx)
			<-runErr
			if finished.Load() != tc.finished {
				t.Fatalf("%d handlers finished, %d cancelled, want %d finished (Close: %v)", finished.Load(), cancelled.Load(), tc.finished, err)
			}
			ready, unacked, qerr := b.Messages(q)
			if qerr != nil {
				t.Fatal(qerr)
			}
			if want := 4 - int(tc.finished); ready != want || unacked != 0 {
				t.Fatalf("after Close: %d ready, %d unacked; want %d back in the queue", ready, unacked, want)
			}
			t.Logf("budget %v: %d finished and acked, %d cancelled and back in the queue", tc.budget, finished.Load(), ready)
		})
	}
}

// TestStartFailureReachesTheWaiter: a Run that fails at start (a route's
// queue exists on the broker with other arguments) reports to WaitRunning
// at once.
func TestStartFailureReachesTheWaiter(t *testing.T) {
	b := rabbittest.Shared(t)
	q := b.Name("conflict")
	ch, err := b.Dial().Channel()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare(q, true, false, false, false, amqp.Table{"x-max-length": int32(5)}); err != nil { // other arguments
		t.Fatal(err)
	}
	r := newRouter(t, b.URL, router.Config{})
	if err := r.AddRoute(router.Route{Name: "conflict", Queue: topology.QueueSpec{Name: q, Durable: true}, Handler: func(*message.Message) error { return nil }}); err != nil {
		t.Fatal(err)
	}
	failed := make(chan time.Time, 1)
	go func() {
		_ = r.Run(context.Background())
		failed <- time.Now()
	}()
	err = r.WaitRunning(ctxT(t, 30*time.Second))
	woke := time.Now()
	if !errors.Is(err, conn.ErrPreconditionFailed) {
		t.Fatalf("WaitRunning: %v, want the 406", err)
	}
	select {
	case at := <-failed:
		if d := woke.Sub(at); d > time.Second {
			t.Fatalf("waiter woke %v after Run failed", d)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return")
	}
	_ = r.Close(context.Background())
}

// TestRouterLeavesTheConnectionOpen: nothing closes what it did not open.
func TestRouterLeavesTheConnectionOpen(t *testing.T) {
	b := rabbittest.Shared(t)
	c := openConn(t, b.URL)
	r, err := router.New(c, router.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitConnected(ctxT(t, time.Second)); err != nil {
		t.Fatalf("the router closed the caller's connection: %v", err)
	}
}

// ackRequeue marks a handler's cancellation as not the message's fault.
func ackRequeue(err error) error { return ack.AsRequeue(err) }
