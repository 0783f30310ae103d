package tests

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/warrenmq/warren"
	"github.com/warrenmq/warren/internal/lazyctx"
	"github.com/warrenmq/warren/internal/rabbittest"
	"github.com/warrenmq/warren/topology"
)

// timedResult is one call's error and how long it took.
type timedResult struct {
	err  error
	took time.Duration
}

// endedAtTimeout takes n calls' results and checks that each failed with
// want, after timeout and well within ten of it; it fails the test if one
// has not come within 30 s (a call that outlived its timeout: a wake-up
// lost).
func endedAtTimeout(t *testing.T, results <-chan timedResult, n int, want error, timeout time.Duration) {
	t.Helper()
	bound := time.After(30 * time.Second)
	for i := range n {
		select {
		case r := <-results:
			if !errors.Is(r.err, want) {
				t.Errorf("call %d: %v, want %v", i, r.err, want)
			}
			if r.took < timeout || r.took > 10*timeout {
				t.Errorf("call %d ended after %v, want its timeout, %v", i, r.took, timeout)
			}
		case <-bound:
			t.Fatalf("%d of %d calls still running after 30s: their timeout never ended them", n-i, n)
		}
	}
}

// TestPublishTimeoutEndsPublishesWhoseConfirmIsHeld: on a disposable node, a
// queue's process is suspended (rabbitmqctl eval), so nothing published to
// it is confirmed. Publishes whose context has no deadline (their one bound
// is PublishTimeout, which one alarm rings for every publish of the
// Publisher, internal/lazyctx) fail with ErrPublishTimeout at it; the
// Publisher publishes on once the queue is back. So do publishes of
// messages whose own context (a consumed message's) ends before it, at
// that context's deadline. (internal/lazyctx's tests
// hold the alarm's orderings: a call that wakes early waits again.)
func TestPublishTimeoutEndsPublishesWhoseConfirmIsHeld(t *testing.T) {
	n := node.Get(t)
	const held = "timeouts.held"
	raw := rabbittest.RawChannel(t, n.URL())
	t.Cleanup(func() { _, _ = raw.QueueDelete(held, false, false, false) })
	if _, err := raw.QueueDeclare(held, true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	const timeout = time.Second
	pub, err := warren.NewPublisher(openConn(t, n.URL()), warren.PublisherConfig{Mapping: warren.ExistingQueues{}, PublishTimeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	if err := pub.Publish(held, message.NewMessage("warm", nil)); err != nil {
		t.Fatal(err)
	}
	// A Publisher whose PublishTimeout is far off, for publishes of
	// messages carrying a consumed message's context (below).
	patient, err := warren.NewPublisher(openConn(t, n.URL()), warren.PublisherConfig{Mapping: warren.ExistingQueues{}, PublishTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer patient.Close()
	if err := patient.Publish(held, message.NewMessage("warm-patient", nil)); err != nil {
		t.Fatal(err)
	}
	resume := n.SuspendQueue(t, held)

	const publishes = 8
	results := make(chan timedResult, publishes)
	for i := range publishes {
		go func() {
			start := time.Now()
			err := pub.Publish(held, message.NewMessage(fmt.Sprint("held-", i), nil))
			results <- timedResult{err, time.Since(start)}
		}()
	}
	endedAtTimeout(t, results, publishes, warren.ErrPublishTimeout, timeout)

	// A handler's publish: each message carries a consumed message's
	// context (internal/lazyctx), whose deadline comes long before the
	// Publisher's PublishTimeout. The wait ends at the message's deadline,
	// which the alarm rings for: nothing arms the message's timer.
	for i := range publishes {
		go func() {
			consumed := lazyctx.New(context.Background(), timeout)
			defer consumed.Cancel()
			m := message.NewMessage(fmt.Sprint("handler-", i), nil)
			m.SetContext(consumed)
			start := time.Now()
			err := patient.Publish(held, m)
			if consumed.Armed() {
				err = fmt.Errorf("the publish armed the message's timer (it ended with %v)", err)
			}
			results <- timedResult{err, time.Since(start)}
		}()
	}
	endedAtTimeout(t, results, publishes, context.DeadlineExceeded, timeout)
	resume()
	if err := pub.Publish(held, message.NewMessage("after", nil)); err != nil {
		t.Fatalf("publish once the queue is back: %v", err)
	}
}

// TestRequesterTimeoutEndsRequestsNobodyAnswers: requests whose context has
// no deadline, to a queue nobody consumes, end at the Requester's Timeout
// with context.DeadlineExceeded (one alarm rings for all of them), and
// expire in the queue at it (their expiration is what is left of it).
func TestRequesterTimeoutEndsRequestsNobodyAnswers(t *testing.T) {
	b := rabbittest.Shared(t)
	q := b.Name("rpc-unanswered")
	if _, err := opsOn(t, b.URL).DeclareQueue(ctxT(t, 5*time.Second), topology.QueueSpec{Name: q, Durable: true}); err != nil {
		t.Fatal(err)
	}
	const timeout = time.Second
	rq, err := warren.NewRequester(openConn(t, b.URL), warren.RequesterConfig{Timeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	defer rq.Close()
	// Declaring the route and opening the reply channel wait on the
	// context's Done (arming a timer of its own): a first request does
	// both, so that the requests after it wait on the alarm alone.
	warm, cancelWarm := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancelWarm()
	if _, err := rq.Request(warm, q, message.NewMessage("warm", nil)); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("warm-up request: %v, want its deadline", err)
	}
	const requests = 8
	results := make(chan timedResult, requests)
	for i := range requests {
		go func() {
			start := time.Now()
			_, err := rq.Request(context.Background(), q, message.NewMessage(fmt.Sprint("unanswered-", i), nil))
			results <- timedResult{err, time.Since(start)}
		}()
	}
	endedAtTimeout(t, results, requests, context.DeadlineExceeded, timeout)
	waitQueueDepth(t, b.URL, q, 0, 10*time.Second)
}
