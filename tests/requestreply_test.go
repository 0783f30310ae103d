package tests

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren"
	"github.com/warrenmq/warren/ack"
	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/internal/lazyctx"
	"github.com/warrenmq/warren/internal/rabbittest"
	"github.com/warrenmq/warren/middleware"
	"github.com/warrenmq/warren/retry"
	"github.com/warrenmq/warren/router"
	"github.com/warrenmq/warren/topology"
)

// responder runs a router whose route answers requests on queue: the
// payload upper-cased; "fail" is an error; "hold" waits for release.
func responder(t *testing.T, url, queue string, release <-chan struct{}) {
	t.Helper()
	r := newRouter(t, url, router.Config{})
	if err := r.AddRoute(router.Route{
		Name: "upper", Queue: topology.QueueSpec{Name: queue, Durable: true}, MaxInFlight: 16,
		Retry: router.RetrySettings{RetryConfig: middleware.RetryConfig{MaxAttempts: 2, Backoff: retry.Backoff{InitialInterval: time.Millisecond}}},
		Respond: func(m *message.Message) (*message.Message, error) {
			switch string(m.Payload) {
			case "fail":
				return nil, ack.Permanent(errors.New("cannot upper-case that"))
			case "hold":
				<-release
			}
			return message.NewMessage(m.UUID+"-reply", []byte(strings.ToUpper(string(m.Payload)))), nil
		},
	}); err != nil {
		t.Fatal(err)
	}
	startRouter(t, r)
}

func requester(t *testing.T, url string) *warren.Requester {
	t.Helper()
	rq, err := warren.NewRequester(openConn(t, url), warren.RequesterConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rq.Close() })
	return rq
}

// TestRequestReply: replies over direct reply-to, many in flight at once,
// each to its own request; a handler failure is a typed error reply; a
// request nobody takes is unroutable at once.
func TestRequestReply(t *testing.T) {
	b := rabbittest.Shared(t)
	q := b.Name("rpc")
	b.Name(q + ".dlq")
	responder(t, b.URL, q, nil)
	rq := requester(t, b.URL)

	var wg sync.WaitGroup
	errs := make(chan error, 16*20)
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 20 {
				body := fmt.Sprintf("req-%d-%d", g, i)
				reply, err := rq.Request(ctxT(t, 30*time.Second), q, message.NewMessage(body, []byte(body)))
				if err != nil {
					errs <- err
					return
				}
				if string(reply.Payload) != strings.ToUpper(body) {
					errs <- fmt.Errorf("request %s got reply %q", body, reply.Payload)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	_, err := rq.Request(ctxT(t, 30*time.Second), q, message.NewMessage("f", []byte("fail")))
	var remote *warren.RemoteError
	if !errors.Is(err, warren.ErrRemote) || !errors.As(err, &remote) || remote.Text != "cannot upper-case that" || remote.Type != "_OTHER" {
		t.Fatalf("failing request: %v (%+v)", err, remote)
	}
	waitQueueDepth(t, b.URL, q, 0, 5*time.Second) // the failed request was acked

	start := time.Now()
	if _, err := rq.Request(ctxT(t, 30*time.Second), b.Name("nobody-listens"), message.NewMessage("n", []byte("x"))); !errors.Is(err, broker.ErrUnroutable) {
		t.Fatalf("request to no queue: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("unroutable request failed after %v", d)
	}
}

// TestRequestsAreTransientUnlessKept: a request's reply can reach only the
// channel that sent it, and a broker restart ends that channel, so by
// default a request goes out transient; a request kept unanswered, or one
// whose metadata asks for persistence, goes out persistent. The responder
// is raw amqp091-go, which reads the delivery mode as the broker delivers
// it.
func TestRequestsAreTransientUnlessKept(t *testing.T) {
	b := rabbittest.Shared(t)
	q := b.Name("rpc-mode")
	raw := rabbittest.RawChannel(t, b.URL)
	if _, err := raw.QueueDeclare(q, true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	deliveries, err := raw.Consume(q, "", true, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	modes := make(chan string, 3)
	go func() {
		for d := range deliveries {
			modes <- fmt.Sprintf("%s=%d", d.Body, d.DeliveryMode)
			_ = raw.Publish("", d.ReplyTo, false, false, amqp.Publishing{CorrelationId: d.CorrelationId, Body: d.Body})
		}
	}()
	plain := requester(t, b.URL)
	kept, err := warren.NewRequester(openConn(t, b.URL), warren.RequesterConfig{KeepUnanswered: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = kept.Close() })
	asked := message.NewMessage("asked", []byte("asked"))
	asked.Metadata.Set(warren.MetaDeliveryMode, "2")
	for _, c := range []struct {
		rq   *warren.Requester
		msg  *message.Message
		want string
	}{
		{plain, message.NewMessage("plain", []byte("plain")), "plain=1"},
		{plain, asked, "asked=2"},
		{kept, message.NewMessage("kept", []byte("kept")), "kept=2"},
	} {
		if _, err := c.rq.Request(ctxT(t, 30*time.Second), q, c.msg); err != nil {
			t.Fatalf("request %s: %v", c.msg.UUID, err)
		}
		if got := <-modes; got != c.want {
			t.Fatalf("the responder read %s, want %s", got, c.want)
		}
	}
}

// TestReturnsAndRepliesFindTheirOwnRequest: on one Requester, requests to
// a queue and requests nobody takes are in flight together, the same
// routing key and message id over and over. A return finds its request by
// its correlation id, so each unroutable request fails with ErrUnroutable
// at once and each answered one gets its own reply.
func TestReturnsAndRepliesFindTheirOwnRequest(t *testing.T) {
	b := rabbittest.Shared(t)
	q := b.Name("rpc-mixed")
	b.Name(q + ".dlq")
	nobody := b.Name("rpc-nobody")
	responder(t, b.URL, q, nil)
	rq := requester(t, b.URL)

	const perSide = 200
	var wg sync.WaitGroup
	errs := make(chan error, 2*perSide)
	start := time.Now()
	for i := range perSide {
		wg.Add(2)
		go func() {
			defer wg.Done()
			body := fmt.Sprintf("req-%d", i)
			reply, err := rq.Request(ctxT(t, 30*time.Second), q, message.NewMessage("same-id", []byte(body)))
			if err != nil || string(reply.Payload) != strings.ToUpper(body) {
				errs <- fmt.Errorf("answered request %s: %v %v", body, reply, err)
			}
		}()
		go func() {
			defer wg.Done()
			if _, err := rq.Request(ctxT(t, 30*time.Second), nobody, message.NewMessage("same-id", []byte("x"))); !errors.Is(err, broker.ErrUnroutable) {
				errs <- fmt.Errorf("request to no queue: %v, want ErrUnroutable", err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Fatalf("%d requests took %v: some waited for a deadline", 2*perSide, d)
	}
}

// TestRequestFailsAtOnceWhenItsReplyIsLost: the requester's connection
// drops while a request waits: it fails with ErrReplyLost at once, not at
// its deadline, and the next request works.
func TestRequestFailsAtOnceWhenItsReplyIsLost(t *testing.T) {
	b := rabbittest.Shared(t)
	q := b.Name("rpc-lost")
	b.Name(q + ".dlq")
	release := make(chan struct{})
	responder(t, b.URL, q, release)
	proxy := rabbittest.NewProxy(t, rabbittest.SharedAddr)
	rq := requester(t, proxy.URL(b.Vhost))

	if _, err := rq.Request(ctxT(t, 30*time.Second), q, message.NewMessage("warm", []byte("warm"))); err != nil {
		t.Fatal(err)
	}
	failed := make(chan error, 1)
	go func() {
		_, err := rq.Request(ctxT(t, time.Minute), q, message.NewMessage("held", []byte("hold")))
		failed <- err
	}()
	// Drop once the request is in the responder's hands.
	waitQueueUnacked(t, b, q, 1, 10*time.Second)
	start := time.Now()
	if err := proxy.Drop(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-failed:
		if !errors.Is(err, warren.ErrReplyLost) {
			t.Fatalf("request across a drop: %v, want ErrReplyLost", err)
		}
		t.Logf("failed %v after the drop", time.Since(start))
	case <-time.After(20 * time.Second):
		t.Fatal("the request waited for its deadline instead of failing at the drop")
	}
	close(release)
	reply, err := rq.Request(ctxT(t, 30*time.Second), q, message.NewMessage("after", []byte("after")))
	if err != nil || string(reply.Payload) != "AFTER" {
		t.Fatalf("request after the reconnect: %v %v", reply, err)
	}
}

// waitQueueUnacked polls until queue has n deliveries unacknowledged.
func waitQueueUnacked(t *testing.T, b *rabbittest.Broker, queue string, n int, within time.Duration) {
	t.Helper()
	var unacked int
	var err error
	rabbittest.Eventually(t, within, fmt.Sprintf("%d unacked in queue %s", n, queue), func() bool {
		_, unacked, err = b.Messages(queue)
		return err == nil && unacked == n
	}, func() string { return fmt.Sprintf("%d unacked (%v)", unacked, err) })
}

// TestRequestEndsAtItsReplyNotAtItsConfirm: a request's confirm can come
// long after its reply (a persistent request waits for the broker's disk,
// or here for a second queue the request also went to). The request ends
// with its reply; without a reply, a nack still fails it at once. On a
// disposable node: one queue's process is suspended (rabbitmqctl eval) to
// hold the confirm back, and a raw amqp091-go client answers.
func TestRequestEndsAtItsReplyNotAtItsConfirm(t *testing.T) {
	n := node.Get(t)
	const (
		x       = "rpc.confirm-held"
		work    = "rpc.confirm-held.work"
		held    = "rpc.confirm-held.slow"
		refuses = "rpc.confirm-held.refuses" // an exchange to a queue that takes nothing
		full    = "rpc.confirm-held.full"
	)
	raw := rabbittest.RawChannel(t, n.URL())
	t.Cleanup(func() {
		for _, q := range []string{work, held, full} {
			_, _ = raw.QueueDelete(q, false, false, false)
		}
		_ = raw.ExchangeDelete(x, false, false)
		_ = raw.ExchangeDelete(refuses, false, false)
	})
	if err := raw.ExchangeDeclare(x, "fanout", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{work, held} {
		if _, err := raw.QueueDeclare(q, true, false, false, false, nil); err != nil {
			t.Fatal(err)
		}
		if err := raw.QueueBind(q, "", x, false, nil); err != nil {
			t.Fatal(err)
		}
	}
	// A queue that takes nothing: a request to it is nacked, never answered.
	if _, err := raw.QueueDeclare(full, true, false, false, false, amqp.Table{"x-max-length": int32(0), "x-overflow": "reject-publish"}); err != nil {
		t.Fatal(err)
	}
	if err := raw.ExchangeDeclare(refuses, "fanout", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := raw.QueueBind(full, "", refuses, false, nil); err != nil {
		t.Fatal(err)
	}
	// The responder, a plain amqp091-go consumer: reply, then ack.
	answer := rabbittest.RawChannel(t, n.URL())
	deliveries, err := answer.Consume(work, "", false, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	answered := make(chan struct{})
	go func() {
		defer close(answered)
		for d := range deliveries {
			_ = answer.Publish("", d.ReplyTo, false, false, amqp.Publishing{CorrelationId: d.CorrelationId, Body: []byte(strings.ToUpper(string(d.Body)))})
			_ = d.Ack(false)
		}
	}()
	t.Cleanup(func() { _ = answer.Close(); <-answered }) // the deliveries end with the channel
	rq, err := warren.NewRequester(openConn(t, n.URL()), warren.RequesterConfig{Mapping: warren.FanoutPerTopic{}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rq.Close() })
	if reply, err := rq.Request(ctxT(t, 30*time.Second), x, message.NewMessage("warm", []byte("warm"))); err != nil || string(reply.Payload) != "WARM" {
		t.Fatalf("request before the hold: %v %v", reply, err)
	}

	resume := n.SuspendQueue(t, held)
	// The request's confirm cannot come while the slow queue's process is
	// suspended; its reply can. It must end before its own deadline.
	reqCtx, reqCancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer reqCancel()
	reply, err := rq.Request(reqCtx, x, message.NewMessage("held", []byte("held")))
	if reqCtx.Err() != nil {
		t.Fatalf("the request waited out its deadline for a confirm its reply had made moot (%v %v)", reply, err)
	}
	if err != nil || string(reply.Payload) != "HELD" {
		t.Fatalf("request with its confirm held back: %v %v", reply, err)
	}
	resume()
	// The confirm was held, not skipped: the slow queue has the request.
	rabbittest.Eventually(t, 10*time.Second, "the held queue to take the request", func() bool {
		q, err := raw.QueueDeclarePassive(held, true, false, false, false, nil)
		return err == nil && q.Messages == 2
	})
	// No reply: the confirm decides, at once.
	nackCtx, nackCancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer nackCancel()
	if _, err := rq.Request(nackCtx, refuses, message.NewMessage("refused", []byte("x"))); !errors.Is(err, broker.ErrNacked) {
		t.Fatalf("request to a queue that refuses it: %v, want ErrNacked", err)
	}
	if nackCtx.Err() != nil {
		t.Fatal("the refused request waited out its deadline")
	}
	if reply, err := rq.Request(ctxT(t, 30*time.Second), x, message.NewMessage("after", []byte("after"))); err != nil || string(reply.Payload) != "AFTER" {
		t.Fatalf("request after: %v %v", reply, err)
	}
}

// TestAHandlersCallsLeaveItsMessageContextUnarmed: a route's handler makes
// a request and publishes with its message's context, as the call's
// context and as the published message's own. A consumed message's
// context makes its deadline's timer only when somebody asks for its Done
// (internal/lazyctx), and none of these calls asks: each waits on the
// message's end and on an alarm's ring for its deadline. So after them the
// message's context is still unarmed, and every call worked.
func TestAHandlersCallsLeaveItsMessageContextUnarmed(t *testing.T) {
	b := rabbittest.Shared(t)
	rpcQ, in, out := b.Name("unarmed-rpc"), b.Name("unarmed-in"), b.Name("unarmed-out")
	b.Name(rpcQ + ".dlq")
	b.Name(in + ".dlq")
	responder(t, b.URL, rpcQ, nil)
	rq := requester(t, b.URL)
	ops := opsOn(t, b.URL)
	if _, err := ops.DeclareQueue(ctxT(t, 5*time.Second), topology.QueueSpec{Name: out, Durable: true}); err != nil {
		t.Fatal(err)
	}
	pub, err := warren.NewPublisher(openConn(t, b.URL), warren.PublisherConfig{Mapping: warren.ExistingQueues{}})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()

	const n = 3 // the first's calls take the slow paths (declare, the reply channel)
	results := make(chan error, n)
	r := newRouter(t, b.URL, router.Config{})
	if err := r.AddRoute(router.Route{
		Name: "caller", Queue: topology.QueueSpec{Name: in, Durable: true},
		Handler: func(m *message.Message) error {
			ctx := m.Context()
			lazy, ok := ctx.(*lazyctx.Context)
			if !ok {
				results <- fmt.Errorf("the message's context is a %T, not internal/lazyctx's", ctx)
				return nil
			}
			reply, err := rq.Request(ctx, rpcQ, message.NewMessage(m.UUID+"-req", m.Payload))
			if err == nil && string(reply.Payload) != strings.ToUpper(string(m.Payload)) {
				err = fmt.Errorf("reply %q", reply.Payload)
			}
			if err == nil {
				carried := message.NewMessage(m.UUID+"-carried", reply.Payload)
				carried.SetContext(ctx)
				err = pub.Publish(out, carried)
			}
			if err == nil {
				err = pub.PublishContext(ctx, out, message.NewMessage(m.UUID+"-bounded", reply.Payload))
			}
			if err == nil && lazy.Armed() {
				err = errors.New("the calls armed the message's timer")
			}
			results <- err
			return nil
		},
	}); err != nil {
		t.Fatal(err)
	}
	startRouter(t, r)
	for i := range n {
		if err := pub.Publish(in, message.NewMessage(fmt.Sprint("m", i), []byte(fmt.Sprint("payload-", i)))); err != nil {
			t.Fatal(err)
		}
	}
	for i := range n {
		select {
		case err := <-results:
			if err != nil {
				t.Fatalf("handler %d: %v", i, err)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("%d of %d handlers did not report in 30s", n-i, n)
		}
	}
	waitQueueDepth(t, b.URL, out, 2*n, 10*time.Second)
}

// TestLateRepliesReachNoOtherRequest: requests that gave up at their
// deadline get their replies afterwards, while other requests are in
// flight on the same line. A late reply finds no request (the Requester
// logs it at Debug) and each request in flight gets its own reply: the
// waiters of requests that ended are reused, and a waiter the line may
// still hold (its request gave up) must never be.
func TestLateRepliesReachNoOtherRequest(t *testing.T) {
	b := rabbittest.Shared(t)
	q := b.Name("rpc-late")
	b.Name(q + ".dlq")
	release := make(chan struct{})
	releaseHeld := sync.OnceFunc(func() { close(release) })
	var holding atomic.Int32
	r := newRouter(t, b.URL, router.Config{})
	if err := r.AddRoute(router.Route{
		Name: "late", Queue: topology.QueueSpec{Name: q, Durable: true}, MaxInFlight: 16,
		Respond: func(m *message.Message) (*message.Message, error) {
			if string(m.Payload) == "hold" {
				holding.Add(1)
				<-release
			}
			return message.NewMessage(m.UUID+"-reply", []byte(strings.ToUpper(string(m.Payload)))), nil
		},
	}); err != nil {
		t.Fatal(err)
	}
	startRouter(t, r)
	t.Cleanup(releaseHeld) // before the router's Close, should the test end early
	logs, log := newLogRecorder()
	rq, err := warren.NewRequester(openConn(t, b.URL), warren.RequesterConfig{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rq.Close() })

	const held = 8
	gaveUp := make(chan error, held)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	for i := range held {
		go func() {
			_, err := rq.Request(ctx, q, message.NewMessage(fmt.Sprint("held-", i), []byte("hold")))
			gaveUp <- err
		}()
	}
	rabbittest.Eventually(t, 10*time.Second, "every held request in its handler", func() bool { return holding.Load() == held })
	for range held {
		if err := <-gaveUp; !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("held request: %v, want its deadline", err)
		}
	}

	releaseHeld() // the late replies come while these run
	var wg sync.WaitGroup
	errs := make(chan error, 16*50)
	for g := range 16 {
		wg.Go(func() {
			for i := range 50 {
				body := fmt.Sprintf("req-%d-%d", g, i)
				reply, err := rq.Request(ctxT(t, 30*time.Second), q, message.NewMessage(body, []byte(body)))
				if err != nil || string(reply.Payload) != strings.ToUpper(body) {
					errs <- fmt.Errorf("request %s: reply %v, error %v", body, reply, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	late := func(l logLine) bool { return strings.Contains(l.Msg, "reply for no waiting request") }
	rabbittest.Eventually(t, 10*time.Second, "every late reply logged as such", func() bool { return len(logs.Lines(true, late)) == held },
		func() string { return fmt.Sprintf("%d late replies logged", len(logs.Lines(true, late))) })
}
