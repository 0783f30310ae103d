package interop

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wamqp "github.com/ThreeDotsLabs/watermill-amqp/v3/pkg/amqp"
	"github.com/ThreeDotsLabs/watermill/message"
	wmw "github.com/ThreeDotsLabs/watermill/message/router/middleware"

	"github.com/warrenmq/warren"
	"github.com/warrenmq/warren/internal/delay"
	"github.com/warrenmq/warren/internal/rabbittest"
	"github.com/warrenmq/warren/middleware"
	"github.com/warrenmq/warren/retry"
	"github.com/warrenmq/warren/router"
	"github.com/warrenmq/warren/topology"
)

// ledger accounts for every message of the migration: who handled it,
// successfully, and how often.
type ledger struct {
	mu        sync.Mutex
	published map[string]string // id -> kind (ok, fail, panic)
	handled   map[string][]string
}

func newLedger() *ledger {
	return &ledger{published: map[string]string{}, handled: map[string][]string{}}
}

func (l *ledger) publish(id, kind string) {
	l.mu.Lock()
	l.published[id] = kind
	l.mu.Unlock()
}

func (l *ledger) done(id, by string) {
	l.mu.Lock()
	l.handled[id] = append(l.handled[id], by)
	l.mu.Unlock()
}

// handler is the one business logic both services run: "fail" always
// fails, "panic" panics, anything else succeeds.
func (l *ledger) handler(by string) func(*message.Message) error {
	return func(m *message.Message) error {
		switch string(m.Payload) {
		case "fail":
			return errors.New("card declined")
		case "panic":
			panic("nil order")
		}
		l.done(m.UUID, by)
		return nil
	}
}

// errorLog is a Watermill logger that keeps the errors watermill-amqp
// logs: a message it cannot decode shows up here (and loops).
type errorLog struct {
	watermill.NopLogger
	mu     sync.Mutex
	errors []string
}

func (e *errorLog) Error(msg string, err error, fields watermill.LogFields) {
	e.mu.Lock()
	e.errors = append(e.errors, fmt.Sprintf("%s: %v %v", msg, err, fields))
	e.mu.Unlock()
}

func (e *errorLog) With(watermill.LogFields) watermill.LoggerAdapter { return e }

func (e *errorLog) all() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.errors...)
}

// TestMigrationFromWatermillAMQP plays a rolling deploy from a watermill-amqp
// service to warren and back: the old service (watermill-amqp's durable
// pub/sub preset, a Watermill router with Retry, PoisonQueue and Recoverer)
// leaves a backlog; a warren route takes over the same queue with no 406;
// for a while both consume it and both produce into it, with retries, dead
// letters and a panicking message flowing both ways; the old side stops;
// then, in a rollback, it starts again and warren stops. Every message is
// accounted for: each good one handled exactly once, each bad one in exactly
// one of the dead-letter queues (readable by watermill-amqp), nothing left
// behind, and the old consumer never met a message it could not decode.
func TestMigrationFromWatermillAMQP(t *testing.T) {
	url := vhost(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	const topic, queue, poison = "orders", "orders_billing", "orders_poison"
	l := newLedger()
	oldLog := &errorLog{}
	wcfg := wamqp.NewDurablePubSubConfig(url, wamqp.GenerateQueueNameTopicNameWithSuffix("billing"))

	// The old service's producer, and its poison queue (a durable queue).
	oldPub, err := wamqp.NewPublisher(wcfg, oldLog)
	if err != nil {
		t.Fatal(err)
	}
	defer oldPub.Close()
	qcfg := wamqp.NewDurableQueueConfig(url)
	poisonPub, err := wamqp.NewPublisher(qcfg, oldLog)
	if err != nil {
		t.Fatal(err)
	}
	defer poisonPub.Close()
	qsub, err := wamqp.NewSubscriber(qcfg, oldLog)
	if err != nil {
		t.Fatal(err)
	}
	defer qsub.Close()
	for _, q := range []string{poison, queue + ".dlq"} {
		if err := qsub.SubscribeInitialize(q); err != nil {
			t.Fatal(err)
		}
	}

	// startOld runs the old consumer: a Watermill router with the
	// middleware such a service has.
	startOld := func() (stop func()) {
		sub, err := wamqp.NewSubscriber(wcfg, oldLog)
		if err != nil {
			t.Fatal(err)
		}
		r, err := message.NewRouter(message.RouterConfig{CloseTimeout: 10 * time.Second}, oldLog)
		if err != nil {
			t.Fatal(err)
		}
		pq, err := wmw.PoisonQueue(poisonPub, poison)
		if err != nil {
			t.Fatal(err)
		}
		r.AddMiddleware(pq, wmw.Retry{MaxRetries: 2, InitialInterval: 5 * time.Millisecond, Logger: oldLog}.Middleware, wmw.Recoverer)
		r.AddConsumerHandler("billing", topic, sub, l.handler("old"))
		rctx, rcancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { _ = r.Run(rctx); close(done) }()
		select {
		case <-r.Running():
		case <-ctx.Done():
			t.Fatal("the old router did not start")
		}
		return func() {
			rcancel()
			<-done
			_ = sub.Close()
		}
	}
	oldSend := func(prefix string, n int, bad ...string) {
		for i := range n {
			id, kind := fmt.Sprintf("%s-%02d", prefix, i), "ok"
			if i < len(bad) {
				kind = bad[i]
			}
			l.publish(id, kind)
			if err := oldPub.Publish(topic, message.NewMessage(id, []byte(kind))); err != nil {
				t.Fatal(err)
			}
		}
	}

	// Phase 0: the old service alone, then stopped with a backlog left.
	stopOld := startOld()
	oldSend("before", 20, "fail", "panic")
	waitAccounted(t, ctx, url, l, "before")
	stopOld()
	oldSend("backlog", 30, "fail", "panic")

	// Phase 1: warren takes the same queue over, declared as the old
	// service declared it; the old consumer comes back beside it.
	c := openConn(t, url)
	compat := warren.DefaultMarshaler{WatermillAMQP: true}
	r, err := router.New(c, router.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.AddRoute(router.Route{
		Name:         "billing",
		Queue:        topology.QueueSpec{Name: queue, Durable: true},
		Exchanges:    []topology.ExchangeSpec{{Name: topic, Type: topology.Fanout, Durable: true}},
		Bindings:     []topology.BindSpec{{Source: topic}},
		Marshaler:    compat,
		Retry:        router.RetrySettings{RetryConfig: middleware.RetryConfig{MaxAttempts: 2, Backoff: retry.Backoff{InitialInterval: 5 * time.Millisecond}}},
		DelayedRetry: router.DelayedRetrySettings{Levels: []time.Duration{time.Second}},
		Handler:      l.handler("warren"),
	}); err != nil {
		t.Fatal(err)
	}
	runErr := make(chan error, 1)
	go func() { runErr <- r.Run(ctx) }()
	if err := r.WaitRunning(ctx); err != nil {
		t.Fatalf("warren's route on the old service's queue: %v", err)
	}
	stopOld = startOld()
	newPub, err := warren.NewPublisher(c, warren.PublisherConfig{Mapping: warren.WatermillAMQPDurablePubSub(warren.WatermillAMQPQueueSuffix("billing")), Marshaler: compat})
	if err != nil {
		t.Fatal(err)
	}
	defer newPub.Close()
	newSend := func(prefix string, n int, bad ...string) {
		for i := range n {
			id, kind := fmt.Sprintf("%s-%02d", prefix, i), "ok"
			if i < len(bad) {
				kind = bad[i]
			}
			l.publish(id, kind)
			if err := newPub.Publish(topic, message.NewMessage(id, []byte(kind))); err != nil {
				t.Fatal(err)
			}
		}
	}
	oldSend("mixed-old", 20, "fail")
	newSend("mixed-new", 20, "fail", "panic")
	waitAccounted(t, ctx, url, l, "backlog", "mixed-old", "mixed-new")

	// Phase 2: the old side stops; warren alone.
	stopOld()
	newSend("warren", 10, "fail")
	waitAccounted(t, ctx, url, l, "warren")

	// Phase 3, a rollback: the old consumer comes back, and warren stops
	// once nothing of its own is pending (docs/MIGRATING.md's checklist:
	// its delayed retries all due and handed over).
	stopOld = startOld()
	defer stopOld()
	waitEmpty(t, ctx, url, delay.ScheduleDueQueue, delay.ScheduleQueue(0))
	if err := r.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-runErr; err != nil {
		t.Fatal(err)
	}
	oldSend("rollback", 10, "fail")
	waitAccounted(t, ctx, url, l, "rollback")

	// Everything accounted for, nothing left, no loop.
	dead := drainIDs(t, ctx, url, queue+".dlq", poison)
	l.mu.Lock()
	defer l.mu.Unlock()
	for id, kind := range l.published {
		switch {
		case kind == "ok" && len(l.handled[id]) != 1:
			t.Errorf("%s handled %d times (%v), want once", id, len(l.handled[id]), l.handled[id])
		case kind != "ok" && (dead[id] != 1 || len(l.handled[id]) != 0):
			t.Errorf("%s (%s) is %d times in the dead-letter queues and handled %v, want once and never", id, kind, dead[id], l.handled[id])
		}
	}
	for id := range dead {
		if _, ok := l.published[id]; !ok {
			t.Errorf("dead letter %q was never published", id)
		}
	}
	for _, e := range oldLog.all() {
		if strings.Contains(e, "not a string") || strings.Contains(e, "unmarshal") {
			t.Errorf("the old consumer could not decode a message: %s", e)
		}
	}
	waitEmpty(t, ctx, url, queue, delay.ScheduleDueQueue, delay.ScheduleUnroutableQueue)
	t.Logf("%d messages accounted for; %d dead letters", len(l.published), len(dead))
}

// waitAccounted waits until every message published with one of prefixes
// is handled or dead-lettered (counted by the dead-letter queues' depth).
func waitAccounted(t *testing.T, ctx context.Context, url string, l *ledger, prefixes ...string) {
	t.Helper()
	ch := rabbittest.RawChannel(t, url)
	depth := func(q string) int {
		d, err := ch.QueueDeclarePassive(q, true, false, false, false, nil)
		if err != nil {
			t.Fatal(err)
		}
		return d.Messages
	}
	for {
		l.mu.Lock()
		pending, bad := 0, 0
		for id, kind := range l.published {
			if kind != "ok" {
				bad++
				continue
			}
			for _, p := range prefixes {
				if strings.HasPrefix(id, p+"-") && len(l.handled[id]) == 0 {
					pending++
				}
			}
		}
		l.mu.Unlock()
		if pending == 0 && depth("orders_poison")+depth("orders_billing.dlq") >= bad {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%d good messages of %v never handled; %d bad ones published, %d+%d dead-lettered", pending, prefixes, bad,
				depth("orders_poison"), depth("orders_billing.dlq"))
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// waitEmpty waits until each queue holds nothing.
func waitEmpty(t *testing.T, ctx context.Context, url string, queues ...string) {
	t.Helper()
	ch := rabbittest.RawChannel(t, url)
	for _, q := range queues {
		for {
			d, err := ch.QueueDeclarePassive(q, true, false, false, false, nil)
			if err != nil {
				t.Fatal(err)
			}
			if d.Messages == 0 {
				break
			}
			select {
			case <-ctx.Done():
				t.Fatalf("%s still holds %d", q, d.Messages)
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
}

// drainIDs reads every message of queues with a watermill-amqp subscriber
// (so each must be readable by one) and counts them by UUID.
func drainIDs(t *testing.T, ctx context.Context, url string, queues ...string) map[string]int {
	t.Helper()
	log := &errorLog{}
	sub, err := wamqp.NewSubscriber(wamqp.NewDurableQueueConfig(url), log)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	ch := rabbittest.RawChannel(t, url)
	out := map[string]int{}
	for _, q := range queues {
		d, err := ch.QueueDeclarePassive(q, true, false, false, false, nil)
		if err != nil {
			t.Fatal(err)
		}
		msgs, err := sub.Subscribe(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		for range d.Messages {
			select {
			case m := <-msgs:
				out[m.UUID]++
				m.Ack()
			case <-ctx.Done():
				t.Fatalf("%s: read %v of %d; watermill-amqp errors: %v", q, out, d.Messages, log.all())
			}
		}
	}
	if errs := log.all(); len(errs) > 0 {
		t.Errorf("watermill-amqp could not read a dead letter: %v", errs)
	}
	return out
}
