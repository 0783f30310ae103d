package routertest_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/warrenmq/warren/ack"
	"github.com/warrenmq/warren/middleware"
	kit "github.com/warrenmq/warren/middleware/middlewaretest"
	"github.com/warrenmq/warren/router"
	"github.com/warrenmq/warren/router/routertest"
	"github.com/warrenmq/warren/topology"
)

func route(h message.NoPublishHandlerFunc) router.Route {
	return router.Route{Name: "orders", Queue: topology.QueueSpec{Name: "work", Durable: true}, Handler: h}
}

var errBroken = errors.New("broken")

func fails(*message.Message) error { return errBroken }

// TestRouteStackBrokerFree walks a route's production stack with its
// defaults: success, in-process retries, the delay levels, the dead-letter
// queue, permanent errors, panics and a refused republish.
func TestRouteStackBrokerFree(t *testing.T) {
	tests := []struct {
		name      string
		route     router.Route
		msg       *message.Message
		pub       *kit.Publisher
		disp      ack.Disposition
		calls     int
		waits     int
		published string // topic of the one message published, "" for none
	}{
		{name: "success", route: route(func(*message.Message) error { return nil }), disp: ack.Ack, calls: 1},
		{name: "failing: 3 attempts, then the first delay level", route: route(fails), disp: ack.Ack, calls: 3, waits: 2, published: "work"},
		{name: "back from delay round 1: the next level", route: route(fails), msg: kit.NewMessage("x", kit.WithRetryRound(1), kit.WithAttempt(4)), disp: ack.Ack, calls: 3, waits: 2, published: "work"},
		{name: "every level used: a copy to the DLQ", route: route(fails), msg: kit.NewMessage("x", kit.WithRetryRound(len(middleware.DefaultDelayLevels))), disp: ack.Ack, calls: 3, waits: 2, published: "work.dlq"},
		{name: "every level used, RejectToDLX: rejected to the dead-letter exchange", route: func() router.Route {
			r := route(fails)
			r.DeadLetter.Mode = middleware.RejectToDLX
			return r
		}(), msg: kit.NewMessage("x", kit.WithRetryRound(len(middleware.DefaultDelayLevels))), disp: ack.Reject, calls: 3, waits: 2},
		{name: "permanent error: no retry, dead-lettered", route: route(func(*message.Message) error { return ack.Permanent(errBroken) }), disp: ack.Ack, calls: 1, published: "work.dlq"},
		{name: "a panic is a bug: permanent, dead-lettered", route: route(func(*message.Message) error { panic("bug") }), disp: ack.Ack, calls: 1, published: "work.dlq"},
		{name: "a panic, RejectToDLX: rejected to the dead-letter exchange", route: func() router.Route {
			r := route(func(*message.Message) error { panic("bug") })
			r.DeadLetter.Mode = middleware.RejectToDLX
			return r
		}(), disp: ack.Reject, calls: 1},
		{name: "a panic, dead-lettering disabled: kept, never rejected into a queue without a dead-letter exchange", route: func() router.Route {
			r := route(func(*message.Message) error { panic("bug") })
			r.DeadLetter.Disabled = true
			return r
		}(), disp: ack.RejectRequeue, calls: 1},
		{name: "delay queue refuses the copy: requeued, not lost", route: route(fails), pub: &kit.Publisher{Fail: errors.New("broker said no")}, disp: ack.Requeue, calls: 3, waits: 2},
		{name: "retries disabled", route: func() router.Route {
			r := route(fails)
			r.Retry.Disabled, r.DelayedRetry.Disabled = true, true
			return r
		}(), disp: ack.Ack, calls: 1, published: "work.dlq"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			msg := tc.msg
			if msg == nil {
				msg = kit.NewMessage("x")
			}
			var opts []routertest.Option
			if tc.pub != nil {
				opts = append(opts, routertest.WithPublisher(tc.pub))
			}
			res, err := routertest.Run(tc.route, msg, opts...)
			if err != nil {
				t.Fatal(err)
			}
			if res.Disposition != tc.disp || res.Calls != tc.calls || len(res.Waits) != tc.waits {
				t.Fatalf("disposition %v, %d calls, waits %v (err %v); want %v, %d calls, %d waits", res.Disposition, res.Calls, res.Waits, res.Err, tc.disp, tc.calls, tc.waits)
			}
			switch {
			case tc.published == "" && len(res.Published) != 0:
				t.Fatalf("published %v, want nothing", res.Published)
			case tc.published != "" && (len(res.Published) != 1 || res.Published[0].Topic != tc.published):
				t.Fatalf("published %v, want one message to %s", res.Published, tc.published)
			}
		})
	}
}

// TestRouteStackProduces: a producing route's messages come back from Run;
// the first attempt carries the route's timeout.
func TestRouteStackProduces(t *testing.T) {
	var deadline time.Time
	r := router.Route{
		Name: "enrich", Queue: topology.QueueSpec{Name: "in"}, PublishTopic: "out", Timeout: 5 * time.Second,
		Produce: func(m *message.Message) ([]*message.Message, error) {
			deadline, _ = m.Context().Deadline()
			return []*message.Message{message.NewMessage("out-1", m.Payload)}, nil
		},
	}
	start := time.Now()
	res, err := routertest.Run(r, kit.NewMessage("payload"))
	if err != nil {
		t.Fatal(err)
	}
	if res.Disposition != ack.Ack || len(res.Produced) != 1 || string(res.Produced[0].Payload) != "payload" {
		t.Fatalf("result %+v", res)
	}
	if deadline.IsZero() || deadline.Before(start.Add(4*time.Second)) || deadline.After(time.Now().Add(5*time.Second)) {
		t.Fatalf("first attempt's deadline %v, want the route's 5s timeout", deadline)
	}
}

// TestInvalidRouteIsTheError: Run refuses what AddRoute refuses.
func TestInvalidRouteIsTheError(t *testing.T) {
	if _, err := routertest.Run(router.Route{Name: "no-queue", Handler: fails}, kit.NewMessage("x")); !errors.Is(err, router.ErrInvalidRoute) {
		t.Fatalf("invalid route: %v", err)
	}
}

// TestRespondRoute: a request's reply goes to its reply-to address with its
// correlation id; a failure, after the in-process retries, is an error
// reply and the request is acked (no delay queue, no dead letter).
func TestRespondRoute(t *testing.T) {
	respond := func(fail bool) router.Route {
		return router.Route{Name: "rpc", Queue: topology.QueueSpec{Name: "rpc"},
			Respond: func(m *message.Message) (*message.Message, error) {
				if fail {
					return nil, errBroken
				}
				return message.NewMessage("r", []byte("pong")), nil
			}}
	}
	request := func() *message.Message {
		return kit.NewMessage("ping", kit.WithMetadata("amqp.reply_to", "amq.rabbitmq.reply-to.abc"), kit.WithMetadata("amqp.correlation_id", "corr-1"))
	}
	res, err := routertest.Run(respond(false), request())
	if err != nil {
		t.Fatal(err)
	}
	if res.Disposition != ack.Ack || len(res.Published) != 1 || res.Published[0].Topic != "amq.rabbitmq.reply-to.abc" ||
		res.Published[0].Msg.Metadata.Get("amqp.correlation_id") != "corr-1" || string(res.Published[0].Msg.Payload) != "pong" {
		t.Fatalf("reply: %+v", res)
	}
	res, err = routertest.Run(respond(true), request())
	if err != nil {
		t.Fatal(err)
	}
	if res.Disposition != ack.Ack || res.Calls != 3 || len(res.Published) != 1 ||
		res.Published[0].Msg.Metadata.Get("warren-reply-error") != "broken" {
		t.Fatalf("error reply: disposition %v, %d calls, published %+v", res.Disposition, res.Calls, res.Published)
	}
}

// A panicking handler's dead letter says what panicked and where: the
// error, the error type "panic" and the stack.
func TestPanicDeadLetterCarriesTheStack(t *testing.T) {
	res, err := routertest.Run(route(func(*message.Message) error { panic("nil order") }), kit.NewMessage("x"))
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Published) != 1 {
		t.Fatalf("published %v, want the dead letter", res.Published)
	}
	md := res.Published[0].Msg.Metadata
	if md.Get(middleware.HeaderDLErrorType) != "panic" || !strings.Contains(md.Get(middleware.HeaderDLError), "nil order") {
		t.Fatalf("dead letter says %q (%q), want the panic", md.Get(middleware.HeaderDLError), md.Get(middleware.HeaderDLErrorType))
	}
	if stack := md.Get(middleware.HeaderDLStack); !strings.Contains(stack, "goroutine") || !strings.Contains(stack, "run_test.go") {
		t.Fatalf("dead letter's stack %q, want the handler's", stack)
	}
}

// A batch route's message has a single message's stack: here a batch of
// one; a whole-batch error is its error (retried in process, then the
// first delay level), a BatchError entry its own.
func TestBatchRouteStack(t *testing.T) {
	batch := func(h router.BatchHandler) router.Route {
		return router.Route{Name: "orders", Queue: topology.QueueSpec{Name: "work", Durable: true},
			Batch: router.BatchSettings{Handler: h, Wait: time.Millisecond}}
	}
	res, err := routertest.Run(batch(func(context.Context, []*message.Message) error { return errBroken }), kit.NewMessage("x"))
	if err != nil {
		t.Fatal(err)
	}
	if res.Disposition != ack.Ack || res.Calls != 3 || len(res.Published) != 1 || res.Published[0].Topic != "work" {
		t.Fatalf("a whole-batch error: %v, %d calls, %v", res.Disposition, res.Calls, res.Published)
	}
	res, err = routertest.Run(batch(func(_ context.Context, msgs []*message.Message) error {
		return &router.BatchError{Errs: []error{ack.Permanent(errBroken)}}
	}), kit.NewMessage("x"))
	if err != nil {
		t.Fatal(err)
	}
	if res.Calls != 1 || len(res.Published) != 1 || res.Published[0].Topic != "work.dlq" {
		t.Fatalf("a permanent entry: %d calls, %v", res.Calls, res.Published)
	}
	if _, err := routertest.Run(router.Route{Name: "x", Queue: topology.QueueSpec{Name: "q"}, Handler: func(*message.Message) error { return nil },
		Batch: router.BatchSettings{Handler: func(context.Context, []*message.Message) error { return nil }}}, kit.NewMessage("x")); !errors.Is(err, router.ErrInvalidRoute) {
		t.Fatalf("Handler and Batch.Handler both set: %v", err)
	}
}
