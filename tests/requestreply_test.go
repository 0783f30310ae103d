package tests

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/warrenmq/warren"
	"github.com/warrenmq/warren/ack"
	"github.com/warrenmq/warren/broker"
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
