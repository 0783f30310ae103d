package tests

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren"
	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/internal/delay"
	"github.com/warrenmq/warren/internal/rabbittest"
	"github.com/warrenmq/warren/router"
	"github.com/warrenmq/warren/topology"
)

// TestOneRestorePerReconnect: a router with 20 routes and an output
// publisher restores in one run per reconnect, in the documented order
// across every component (it used to run N+4 restores).
func TestOneRestorePerReconnect(t *testing.T) {
	b := rabbittest.Shared(t)
	p := rabbittest.NewProxy(t, rabbittest.SharedAddr)
	reports := make(chan broker.RestoreReport, 10)
	r := newRouter(t, p.URL(b.Vhost), router.Config{
		Output:    warren.PublisherConfig{Mapping: warren.TopicExchange{Exchange: b.Prefix + "out", Prefix: b.Prefix}},
		OnRestore: func(rep broker.RestoreReport) { reports <- rep },
	})
	var handled atomic.Int32
	for i := 0; i < 20; i++ {
		name := fmt.Sprintf("r%02d", i)
		if err := r.AddRoute(router.Route{
			Name:      name,
			Queue:     topology.QueueSpec{Name: b.Prefix + name, Durable: true},
			Exchanges: []topology.ExchangeSpec{{Name: b.Prefix + "events", Type: topology.Topic, Durable: true}},
			Bindings:  []topology.BindSpec{{Source: b.Prefix + "events", RoutingKey: name}},
			Handler:   func(*message.Message) error { handled.Add(1); return nil },
		}); err != nil {
			t.Fatal(err)
		}
	}
	startRouter(t, r)
	// The output publisher declares its own exchange into the same registry.
	if err := r.Publisher().Publish("orders.created", message.NewMessage("o1", nil)); err != nil {
		t.Fatal(err)
	}
	reg := r.Ops().Registry()
	before := reg.Restores()
	for round := 1; round <= 2; round++ {
		if err := p.Drop(); err != nil {
			t.Fatal(err)
		}
		var rep broker.RestoreReport
		select {
		case rep = <-reports:
		case <-time.After(30 * time.Second):
			t.Fatal("no restore run")
		}
		if err := r.Ops().Conn().WaitConnected(ctxT(t, 30*time.Second)); err != nil {
			t.Fatal(err)
		}
		select {
		case extra := <-reports:
			t.Fatalf("a second restore run for one reconnect: %+v", extra)
		default:
		}
		if n := reg.Restores() - before; n != uint64(round) {
			t.Fatalf("%d restore runs after %d reconnects", n, round)
		}
		if !rep.OK() {
			t.Fatalf("restore: %+v", rep)
		}
		order := map[broker.EntityKind]int{broker.KindExchange: 0, broker.KindQueue: 1, broker.KindBinding: 2, broker.KindConsumer: 3}
		count := map[broker.EntityKind]int{}
		last := 0
		for _, e := range rep.Restored {
			if order[e.Kind] < last {
				t.Fatalf("restore order broken at %v: %v", e, rep.Restored)
			}
			last = order[e.Kind]
			count[e.Kind]++
		}
		// 2 exchanges (events, the output's) + the delay levels' 10 (the
		// default delayed retries' longest, 10m, needs levels 0 to 9) and
		// their deliver exchange; 20 queues + 20 dead-letter queues + 10
		// delay-level queues; 20 bindings + the levels' 20 + 20 that
		// deliver each route's delayed retries; 20 consumers and the
		// hand-over of due messages. The levels are the connection's,
		// declared once for every route.
		levels := delay.ScheduleTopology(10)
		if count[broker.KindExchange] != 2+len(levels.Exchanges) || count[broker.KindQueue] != 40+len(levels.Queues) ||
			count[broker.KindBinding] != 40+len(levels.Bindings) || count[broker.KindConsumer] != 21 {
			t.Fatalf("restored %v", count)
		}
		t.Logf("reconnect %d: one restore run, %d entities in %v", round, len(rep.Restored), rep.Duration)
	}
	for i := 0; i < 20; i++ {
		pubToRoute(t, r, b.Prefix+"events", fmt.Sprintf("r%02d", i))
	}
	rabbittest.Eventually(t, 20*time.Second, "every route handling a message after the reconnects", func() bool { return handled.Load() >= 20 },
		func() string { return fmt.Sprintf("%d of 20 routes handled one", handled.Load()) })
}

func pubToRoute(t *testing.T, r *router.Router, exchange, key string) {
	t.Helper()
	if err := r.Ops().Publish(context.Background(), exchange, key, amqpBody("x"), broker.PublishOptions{Mandatory: true}); err != nil {
		t.Fatal(err)
	}
}

func amqpBody(s string) amqp.Publishing { return amqp.Publishing{Body: []byte(s)} }
