package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	wmw "github.com/ThreeDotsLabs/watermill/message/router/middleware"

	"github.com/warrenmq/warren"
	"github.com/warrenmq/warren/conn"
	"github.com/warrenmq/warren/internal/rabbittest"
	"github.com/warrenmq/warren/middleware"
	"github.com/warrenmq/warren/retry"
	"github.com/warrenmq/warren/router"
	"github.com/warrenmq/warren/topology"
)

// drillPassword is the operator's password: no output may hold it.
const drillPassword = "Dr1ll-s3cr3t"

// service is the service of the drill: three queues, each dead-lettering in
// one dialect. A message whose body is "bad" fails until its id is fixed.
type service struct {
	mu      sync.Mutex
	fixed   map[string]bool
	handled map[string]int
}

func (s *service) handle(m *message.Message) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if string(m.Payload) == "bad" && !s.fixed[m.UUID] {
		return errors.New("card declined")
	}
	s.handled[m.UUID]++
	return nil
}

func (s *service) fix(ids ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, id := range ids {
		s.fixed[id] = true
	}
}

func (s *service) count(id string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.handled[id]
}

// startService runs the service on url: "orders" dead-letters by
// publishing (warren's dialect), "billing" by rejecting to its dead-letter
// exchange after a delayed retry (the broker's x-death), and "shipping" is
// a plain Watermill router with PoisonQueue (Watermill's dialect).
func startService(t *testing.T, url string, s *service) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	c := rabbittest.OpenConn(t, url, conn.Config{})
	r, err := router.New(c, router.Config{})
	if err != nil {
		t.Fatal(err)
	}
	fast := router.RetrySettings{RetryConfig: middleware.RetryConfig{MaxAttempts: 2, Backoff: retry.Backoff{InitialInterval: time.Millisecond}}}
	for _, rt := range []router.Route{
		{Name: "orders", Queue: topology.QueueSpec{Name: "orders", Durable: true}, Handler: s.handle, Retry: fast,
			DelayedRetry: router.DelayedRetrySettings{Disabled: true}},
		{Name: "billing", Queue: topology.QueueSpec{Name: "billing", Durable: true}, Handler: s.handle, Retry: fast,
			DelayedRetry: router.DelayedRetrySettings{Levels: []time.Duration{time.Second}},
			DeadLetter:   router.DeadLetterSettings{Mode: middleware.RejectToDLX}},
	} {
		if err := r.AddRoute(rt); err != nil {
			t.Fatal(err)
		}
	}
	runErr := make(chan error, 1)
	go func() { runErr <- r.Run(ctx) }()
	if err := r.WaitRunning(ctx); err != nil {
		t.Fatal(err)
	}
	// shipping: warren's Subscriber and Publisher under a Watermill router
	// with the middleware a Watermill service has.
	m := warren.QueuePerTopic{}
	sub, err := warren.NewSubscriber(c, warren.SubscriberConfig{Mapping: m})
	if err != nil {
		t.Fatal(err)
	}
	pub, err := warren.NewPublisher(c, warren.PublisherConfig{Mapping: m})
	if err != nil {
		t.Fatal(err)
	}
	if err := sub.SubscribeInitialize("shipping_poison"); err != nil {
		t.Fatal(err)
	}
	wr, err := message.NewRouter(message.RouterConfig{}, watermill.NopLogger{})
	if err != nil {
		t.Fatal(err)
	}
	pq, err := wmw.PoisonQueue(pub, "shipping_poison")
	if err != nil {
		t.Fatal(err)
	}
	wr.AddMiddleware(pq, wmw.Retry{MaxRetries: 1, InitialInterval: time.Millisecond}.Middleware)
	wr.AddConsumerHandler("shipping", "shipping", sub, s.handle)
	wrDone := make(chan struct{})
	go func() { _ = wr.Run(ctx); close(wrDone) }()
	<-wr.Running()
	t.Cleanup(func() {
		cancel()
		<-runErr
		<-wrDone
		_ = sub.Close()
		_ = pub.Close()
	})
}

// TestOperatorDrill: a service dead-letters messages in all three dialects;
// with the service still running, an operator lists, shows, filters,
// replays, moves and purges them with the command, authenticated with a
// password. Every message id is accounted for at the end (handled once,
// parked, or purged as the command said), nothing replayed is deleted
// unless sent, and no output holds the password.
func TestOperatorDrill(t *testing.T) {
	vurl, vhost := newVhost(t)
	// Users are the broker's, not the vhost's: one named after the vhost,
	// so that a run killed before its cleanup leaves no name the next run
	// collides with.
	operator := "operator-" + vhost
	rabbittest.AddUser(t, "", operator, drillPassword, vhost, rabbittest.Permissions{Configure: ".*", Write: ".*", Read: ".*"})
	u, err := url.Parse(vurl)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword(operator, drillPassword)
	opURL := u.String()
	s := &service{fixed: map[string]bool{}, handled: map[string]int{}}
	startService(t, vurl, s)
	var outputs []string
	run := func(args ...string) result {
		t.Helper()
		r := cli(t, opURL, "", args...)
		outputs = append(outputs, r.stdout, r.stderr)
		return r
	}
	ch := dial(t, vurl)

	// Messages: 3 good and 3 bad on each queue.
	pub, err := warren.NewPublisher(rabbittest.OpenConn(t, vurl, conn.Config{}), warren.PublisherConfig{Mapping: warren.ExistingQueues{}})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	ids := map[string]string{} // id -> queue
	for _, q := range []string{"orders", "billing", "shipping"} {
		for i := range 6 {
			body, id := "good", fmt.Sprintf("%s-good-%d", q, i)
			if i >= 3 {
				body, id = "bad", fmt.Sprintf("%s-bad-%d", q, i-3)
			}
			ids[id] = q
			if err := pub.Publish(q, message.NewMessage(id, []byte(body))); err != nil {
				t.Fatal(err)
			}
		}
	}
	dlqs := map[string]string{"orders": "orders.dlq", "billing": "billing.dlq", "shipping": "shipping_poison"}
	for _, dlq := range dlqs {
		rabbittest.Eventually(t, 30*time.Second, "3 dead letters in "+dlq, func() bool { return depth(t, ch, dlq) == 3 })
	}

	// ls: every dialect's reasons.
	r := run("dlq", "ls", "orders.dlq", "billing.dlq", "shipping_poison", "-o", "json")
	var ls []queueSummary
	if err := json.Unmarshal([]byte(r.stdout), &ls); err != nil || len(ls) != 3 {
		t.Fatalf("ls: %v %s%s", err, r.stdout, r.stderr)
	}
	reasons := map[string]string{}
	for _, q := range ls {
		if q.Messages != 3 || len(q.TopReasons) == 0 {
			t.Fatalf("ls %s: %+v", q.Queue, q)
		}
		reasons[q.Queue] = q.TopReasons[0].Reason
	}
	if reasons["orders.dlq"] != "_OTHER" || reasons["billing.dlq"] != "x-death:rejected" || reasons["shipping_poison"] != "poisoned" {
		t.Fatalf("ls reasons %v, want each dialect's", reasons)
	}
	// show: the broker's dialect says where the message came from (not
	// the delay levels it passed through) and how often it was tried.
	r = run("dlq", "show", "billing.dlq", "--limit", "1", "-o", "json")
	var shown struct {
		Shown []struct {
			diagnosis
			Body any `json:"body"`
		} `json:"shown"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &shown); err != nil || len(shown.Shown) != 1 {
		t.Fatalf("show billing.dlq: %v %s", err, r.stdout)
	}
	if d := shown.Shown[0].diagnosis; d.Dialect != dialectBroker || d.Exchange != "" || d.RoutingKey != "billing" || d.Attempts < 3 || !d.AttemptsAtLeast {
		t.Fatalf("billing dead letter: %+v; want from the default exchange to billing, at least 3 attempts (the 2 runs of the first delivery, and the last delivery)", d)
	}
	r = run("dlq", "show", "shipping_poison")
	if r.code != 0 || !regexp.MustCompile(`from +topic "shipping"`).MatchString(r.stdout) || !regexp.MustCompile(`dialect +watermill`).MatchString(r.stdout) {
		t.Fatalf("show shipping_poison: %s%s", r.stdout, r.stderr)
	}

	// A fix is deployed for two of each three bad messages; the third is
	// still broken. The service keeps running through the replays.
	for _, q := range []string{"orders", "billing", "shipping"} {
		s.fix(q+"-bad-0", q+"-bad-1")
	}
	r = run("dlq", "replay", "orders.dlq", "--dry-run")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "would replay 3 message(s) from orders.dlq on 127.0.0.1:5672") || depth(t, ch, "orders.dlq") != 3 {
		t.Fatalf("dry run: exit %d, %s; %d left", r.code, r.stdout, depth(t, ch, "orders.dlq"))
	}
	for _, dlq := range []string{"orders.dlq", "billing.dlq"} {
		r = run("dlq", "replay", dlq, "-o", "json")
		var sum replaySummary
		if err := json.Unmarshal([]byte(r.stdout), &sum); err != nil || r.code != 0 || sum.Replayed != 3 {
			t.Fatalf("replay %s: exit %d, %+v %v %s", dlq, r.code, sum, err, r.stderr)
		}
	}
	r = run("dlq", "replay", "shipping_poison", "--topic-mapping", "queue")
	if r.code != 0 || !strings.Contains(r.stdout, `to exchange "", routing key "shipping" (3)`) {
		t.Fatalf("replay shipping_poison: exit %d, %s%s", r.code, r.stdout, r.stderr)
	}
	// The still-broken ones come back to their dead-letter queues; none is
	// lost on the way.
	for q, dlq := range dlqs {
		for _, id := range []string{q + "-bad-0", q + "-bad-1"} {
			rabbittest.Eventually(t, 30*time.Second, id+" handled after the replay", func() bool { return s.count(id) == 1 })
		}
		rabbittest.Eventually(t, 30*time.Second, "the still-broken message back in "+dlq, func() bool { return depth(t, ch, dlq) == 1 })
	}
	// Park orders' (filtered by its reason), purge billing's, leave shipping's.
	r = run("dlq", "move", "orders.dlq", "orders.dlq.parked", "--reason", "_OTHER")
	if r.code == 0 {
		t.Fatalf("move to a queue that does not exist: exit 0: %s", r.stdout)
	}
	if _, err := ch.QueueDeclare("orders.dlq.parked", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	r = run("dlq", "move", "orders.dlq", "orders.dlq.parked", "--reason", "_OTHER")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "moved 1 message(s) from orders.dlq") || depth(t, ch, "orders.dlq.parked") != 1 {
		t.Fatalf("move: exit %d, %s%s", r.code, r.stdout, r.stderr)
	}
	parked, ok, err := ch.Get("orders.dlq.parked", false)
	if err != nil || !ok || parked.MessageId != "orders-bad-2" || parked.Headers[middleware.HeaderDLErrorType] != "_OTHER" {
		t.Fatalf("parked message %q %v (%v %v): its diagnostics must stay", parked.MessageId, parked.Headers, ok, err)
	}
	_ = parked.Nack(false, true)
	r = run("dlq", "purge", "billing.dlq", "--yes")
	if r.code != 0 || !strings.Contains(r.stdout, "purged 1 message(s) from billing.dlq") {
		t.Fatalf("purge: exit %d, %s%s", r.code, r.stdout, r.stderr)
	}

	// Every id accounted for.
	for id, q := range ids {
		handled := s.count(id)
		switch {
		case strings.Contains(id, "-good-"), strings.HasSuffix(id, "-bad-0"), strings.HasSuffix(id, "-bad-1"):
			if handled != 1 {
				t.Errorf("%s handled %d times, want once", id, handled)
			}
		case q == "orders":
			if depth(t, ch, "orders.dlq.parked") != 1 || depth(t, ch, "orders.dlq") != 0 {
				t.Errorf("%s is not parked alone", id)
			}
		case q == "billing":
			if depth(t, ch, "billing.dlq") != 0 {
				t.Errorf("%s was not purged", id)
			}
		case q == "shipping":
			if depth(t, ch, "shipping_poison") != 1 {
				t.Errorf("%s is not in shipping_poison", id)
			}
		}
	}
	for _, out := range outputs {
		if strings.Contains(out, drillPassword) || strings.Contains(out, url.QueryEscape(drillPassword)) {
			t.Fatalf("an output holds the password:\n%s", out)
		}
	}
}

// TestReplayNeverDeletesWhatItDidNotReplay: replaying dead letters whose
// handler still fails, while the service runs, in both dead-letter modes:
// the service dead-letters each replayed message again during the replay,
// and the replay leaves those (same ids, new dead letters) where they are.
// At the end every id is in the dead-letter queue exactly once: none gone,
// none doubled.
func TestReplayNeverDeletesWhatItDidNotReplay(t *testing.T) {
	for _, mode := range []middleware.DeadLetterMode{middleware.PublishToDLQ, middleware.RejectToDLX} {
		t.Run(mode.String(), func(t *testing.T) {
			url, _ := newVhost(t)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			c := rabbittest.OpenConn(t, url, conn.Config{})
			r, err := router.New(c, router.Config{})
			if err != nil {
				t.Fatal(err)
			}
			if err := r.AddRoute(router.Route{Name: "orders", Queue: topology.QueueSpec{Name: "orders", Durable: true},
				Handler: func(*message.Message) error { return errors.New("still broken") },
				Retry:   router.RetrySettings{Disabled: true}, DelayedRetry: router.DelayedRetrySettings{Disabled: true},
				DeadLetter: router.DeadLetterSettings{Mode: mode}}); err != nil {
				t.Fatal(err)
			}
			runErr := make(chan error, 1)
			go func() { runErr <- r.Run(ctx) }()
			defer func() { cancel(); <-runErr }()
			if err := r.WaitRunning(ctx); err != nil {
				t.Fatal(err)
			}
			const n = 5
			for i := range n {
				if err := r.Publisher().Publish("orders", message.NewMessage(fmt.Sprintf("m-%d", i), []byte("x"))); err != nil {
					t.Fatal(err)
				}
			}
			ch := dial(t, url)
			rabbittest.Eventually(t, 30*time.Second, "the dead letters", func() bool { return depth(t, ch, "orders.dlq") == n })
			// Slow enough that the service dead-letters the first ones
			// again before the replay ends.
			res := cli(t, url, "", "dlq", "replay", "orders.dlq", "--rate", "4", "-o", "json")
			var sum replaySummary
			if err := json.Unmarshal([]byte(res.stdout), &sum); err != nil || res.code != 0 {
				t.Fatalf("replay: exit %d, %v, %s%s", res.code, err, res.stdout, res.stderr)
			}
			if sum.Replayed != n || sum.AckedAgain != 0 || sum.CameBack == 0 {
				t.Fatalf("summary %+v: want %d replayed, some back again while it ran, none removed without being sent", sum, n)
			}
			rabbittest.Eventually(t, 30*time.Second, "every message dead-lettered again", func() bool {
				return depth(t, ch, "orders") == 0 && depth(t, ch, "orders.dlq") == n
			})
			seen := map[string]int{}
			for range n {
				d, ok, err := ch.Get("orders.dlq", true)
				if err != nil || !ok {
					t.Fatal(ok, err)
				}
				seen[d.MessageId]++
			}
			for i := range n {
				if id := fmt.Sprintf("m-%d", i); seen[id] != 1 {
					t.Errorf("%s is %d times in the dead-letter queue, want once: %v", id, seen[id], seen)
				}
			}
			t.Logf("summary: %+v", sum)
		})
	}
}
