package broker_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/internal/rabbittest"
	"github.com/warrenmq/warren/topology"
)

// holdingHandler holds every delivery it gets until release is closed
// (the first message, "m0", until releaseFirst is), then acks it; it records
// how many it held at once at most, and every ack's error. With Handlers
// above 1 the first message is the one the consumer's own goroutine
// holds: it is the only reader until it has taken a delivery.
type holdingHandler struct {
	inHand       chan string
	releaseFirst chan struct{}
	release      chan struct{}
	holding      atomic.Int32
	most         atomic.Int32

	mu      sync.Mutex
	handled map[string]int
	ackErrs []error
}

func newHoldingHandler(n int) *holdingHandler {
	return &holdingHandler{inHand: make(chan string, n), releaseFirst: make(chan struct{}), release: make(chan struct{}), handled: map[string]int{}}
}

func (h *holdingHandler) handle(_ context.Context, d *broker.Delivery) {
	now := h.holding.Add(1)
	for {
		most := h.most.Load()
		if now <= most || h.most.CompareAndSwap(most, now) {
			break
		}
	}
	body := string(d.Body)
	h.inHand <- body
	if body == "m0" {
		<-h.releaseFirst
	} else {
		<-h.release
	}
	err := d.Ack()
	h.mu.Lock()
	h.handled[body]++
	if err != nil {
		h.ackErrs = append(h.ackErrs, err)
	}
	h.mu.Unlock()
	h.holding.Add(-1)
}

// acked reports whether body was handled (and its ack sent).
func (h *holdingHandler) acked(body string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.handled[body] > 0
}

// queueWith declares a queue and puts n messages in it ("m0", "m1", ...).
func queueWith(t *testing.T, ctx context.Context, ops *broker.Ops, name string, n int) string {
	t.Helper()
	q, err := ops.DeclareQueue(ctx, topology.QueueSpec{Name: name})
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if err := ops.Publish(ctx, "", q.Name, msg(fmt.Sprintf("m%d", i)), broker.PublishOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	return q.Name
}

// TestHandlersHoldDeliveriesAtOnceAndStopWaitsForThem: with Handlers 4 and
// 20 messages prefetched, the handler holds exactly 4 deliveries at once
// (never more, although 16 more wait), and Stop returns only once all 4
// are finished and acked on their channel, even when the consumer's own
// goroutine finishes first; the 16 never handed out go back to the queue.
func TestHandlersHoldDeliveriesAtOnceAndStopWaitsForThem(t *testing.T) {
	b := rabbittest.Shared(t)
	_, ops := setup(t, b.URL, broker.OpsConfig{})
	ctx := ctxT(t, 60*time.Second)
	q := queueWith(t, ctx, ops, b.Name("handlers"), 20)
	h := newHoldingHandler(20)
	c, err := ops.Consume(ctx, broker.ConsumerSpec{Queue: q, PrefetchCount: 20, Handlers: 4, Handler: h.handle})
	if err != nil {
		t.Fatal(err)
	}
	for range 4 {
		select {
		case <-h.inHand:
		case <-ctx.Done():
			t.Fatalf("the handler holds %d deliveries at once, want 4", h.holding.Load())
		}
	}
	stopped := make(chan error, 1)
	var heldAtReturn atomic.Int32
	go func() {
		err := c.Stop(ctx)
		heldAtReturn.Store(h.holding.Load())
		stopped <- err
	}()
	rabbittest.Eventually(t, 10*time.Second, "the consumer cancelled", func() bool {
		info, err := ops.Inspect(ctx, q)
		return err == nil && info.Consumers == 0
	})
	// The consumer's own goroutine finishes first; the other three still
	// hold theirs.
	close(h.releaseFirst)
	rabbittest.Eventually(t, 10*time.Second, "the first message acked", func() bool { return h.acked("m0") })
	select {
	case err := <-stopped:
		t.Fatalf("Stop returned (%v) with 3 deliveries in hand", err)
	default:
	}
	close(h.release)
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
	if n := heldAtReturn.Load(); n != 0 {
		t.Fatalf("Stop returned with %d deliveries in hand", n)
	}
	if most := h.most.Load(); most != 4 {
		t.Fatalf("the handler held %d deliveries at once, want 4 (Handlers)", most)
	}
	h.mu.Lock()
	handled, ackErrs := len(h.handled), h.ackErrs
	h.mu.Unlock()
	if handled != 4 || len(ackErrs) != 0 {
		t.Fatalf("handled %d, ack errors %v; want the 4 in hand acked", handled, ackErrs)
	}
	var info broker.QueueInfo
	rabbittest.Eventually(t, 10*time.Second, "the 16 never handed out back in the queue", func() bool {
		info, err = ops.Inspect(ctx, q)
		return err == nil && info.Messages == 16
	}, func() string { return fmt.Sprintf("it holds %+v", info) })
}

// TestHandlersPauseAndResumeHandleEveryMessageOnce: paused with 4
// deliveries in hand, the consumer finishes them before it parks and gives
// the rest back; resumed, it handles every message exactly once.
func TestHandlersPauseAndResumeHandleEveryMessageOnce(t *testing.T) {
	b := rabbittest.Shared(t)
	_, ops := setup(t, b.URL, broker.OpsConfig{})
	ctx := ctxT(t, 60*time.Second)
	const total = 30
	q := queueWith(t, ctx, ops, b.Name("handlers-pause"), total)
	h := newHoldingHandler(total)
	c, err := ops.Consume(ctx, broker.ConsumerSpec{Queue: q, PrefetchCount: total, Handlers: 4, Handler: h.handle})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Stop(context.Background()) }()
	for range 4 {
		<-h.inHand
	}
	paused := make(chan error, 1)
	go func() { paused <- c.Pause(ctx) }()
	rabbittest.Eventually(t, 10*time.Second, "the consumer cancelled", func() bool {
		info, err := ops.Inspect(ctx, q)
		return err == nil && info.Consumers == 0
	})
	select {
	case err := <-paused:
		t.Fatalf("Pause returned (%v) with 4 deliveries in hand", err)
	default:
	}
	close(h.releaseFirst)
	close(h.release) // from now on the handler acks at once
	if err := <-paused; err != nil {
		t.Fatal(err)
	}
	var info broker.QueueInfo
	rabbittest.Eventually(t, 10*time.Second, "the 26 never handed out back in the queue", func() bool {
		info, err = ops.Inspect(ctx, q)
		return err == nil && info.Messages == total-4
	}, func() string { return fmt.Sprintf("it holds %+v", info) })
	if err := c.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	rabbittest.Eventually(t, 20*time.Second, "every message handled", func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		return len(h.handled) == total
	}, func() string { h.mu.Lock(); defer h.mu.Unlock(); return fmt.Sprintf("handled %v", h.handled) })
	rabbittest.Eventually(t, 10*time.Second, "the queue empty", func() bool {
		info, err = ops.Inspect(ctx, q)
		return err == nil && info.Messages == 0
	}, func() string { return fmt.Sprintf("it holds %+v", info) })
	h.mu.Lock()
	defer h.mu.Unlock()
	for body, n := range h.handled {
		if n != 1 {
			t.Errorf("%s handled %d times, want once", body, n)
		}
	}
	if len(h.ackErrs) != 0 {
		t.Errorf("ack errors: %v", h.ackErrs)
	}
}
