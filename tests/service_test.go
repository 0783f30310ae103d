package tests

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren/internal/rabbittest"
	"github.com/warrenmq/warren/router"
	"github.com/warrenmq/warren/topology"
)

// seen is a set of message IDs safe for concurrent use.
type seen struct {
	mu  sync.Mutex
	ids map[string]int
}

func newSeen() *seen { return &seen{ids: map[string]int{}} }

func (s *seen) add(id string) {
	s.mu.Lock()
	s.ids[id]++
	s.mu.Unlock()
}

func (s *seen) has(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ids[id] > 0
}

func (s *seen) distinct() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.ids)
}

// TestServiceSurvivesCutAndRestart: three routes, one producing for
// another, through a connection cut and a broker restart; then Close under
// load. Nothing is lost.
func TestServiceSurvivesCutAndRestart(t *testing.T) {
	n := node.Get(t)
	p := rabbittest.NewProxy(t, n.Addr())
	r := newRouter(t, p.URL("/"), router.Config{CloseTimeout: 5 * time.Second})
	ingest, enrich, audit := "svc.ingest", "svc.enrich", "svc.audit"
	events := "svc.events"
	enriched, audited := newSeen(), newSeen()
	routes := []router.Route{
		{
			Name: "ingest", Queue: topology.QueueSpec{Name: ingest, Durable: true},
			Produce: func(m *message.Message) ([]*message.Message, error) {
				return []*message.Message{message.NewMessage("enriched-"+m.UUID, m.Payload)}, nil
			},
			PublishTopic: enrich,
		},
		{
			Name: "enrich", Queue: topology.QueueSpec{Name: enrich, Durable: true}, MaxInFlight: 4,
			Handler: func(m *message.Message) error { enriched.add(m.UUID); return nil },
		},
		{
			Name: "audit", Queue: topology.QueueSpec{Name: audit, Durable: true},
			Exchanges: []topology.ExchangeSpec{{Name: events, Type: topology.Fanout, Durable: true}},
			Bindings:  []topology.BindSpec{{Source: events}},
			Handler:   func(m *message.Message) error { audited.add(m.UUID); return nil },
		},
	}
	for _, rt := range routes {
		if err := r.AddRoute(rt); err != nil {
			t.Fatal(err)
		}
	}
	startRouter(t, r)

	const total = 300
	var ids []string
	published := make(chan struct{})
	go func() {
		defer close(published)
		for i := 0; i < total; i++ {
			id := "m-" + strconv.Itoa(i)
			ids = append(ids, id)
			msgs := []*message.Message{message.NewMessage(id, []byte("x"))}
			if err := r.Publisher().Publish(ingest, msgs...); err != nil {
				t.Errorf("publish %s: %v", id, err)
				return
			}
			if err := r.Publisher().Publish(audit, message.NewMessage(id, []byte("x"))); err != nil {
				t.Errorf("publish audit %s: %v", id, err)
				return
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()
	// The faults are placed by progress, never by the clock: a connection
	// cut once a fifth of the messages went through, a broker restart at
	// half.
	progress := func(want int) {
		t.Helper()
		rabbittest.Eventually(t, 60*time.Second, "messages audited before the fault", func() bool { return audited.distinct() >= want },
			func() string { return fmt.Sprintf("%d of %d audited", audited.distinct(), want) })
	}
	progress(total / 5)
	if err := p.Drop(); err != nil { // a connection cut mid-stream
		t.Fatal(err)
	}
	progress(total / 2)
	if err := n.Restart(); err != nil { // and a broker restart
		t.Fatal(err)
	}
	<-published
	rabbittest.Eventually(t, 90*time.Second, "every message enriched and audited after the cut and the restart",
		func() bool { return enriched.distinct() >= total && audited.distinct() >= total },
		func() string {
			return fmt.Sprintf("enriched %d, audited %d of %d", enriched.distinct(), audited.distinct(), total)
		})
	for _, id := range ids {
		if !enriched.has("enriched-"+id) || !audited.has(id) {
			t.Fatalf("message %s lost", id)
		}
	}
	rabbittest.Eventually(t, 30*time.Second, "every route consuming again", func() bool { return r.Health().Ready() },
		func() string { return fmt.Sprintf("%+v", r.Health()) })

	// Close under load: everything published is either processed or still
	// in its queue, and Close returns within its bound.
	var more []string
	for i := 0; i < 200; i++ {
		id := "late-" + strconv.Itoa(i)
		more = append(more, id)
	}
	var msgs []*message.Message
	for _, id := range more {
		msgs = append(msgs, message.NewMessage(id, []byte("x")))
	}
	if err := r.Publisher().Publish(audit, msgs...); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := r.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("Close took %v with a 5s CloseTimeout", d)
	}
	left := drain(t, n.URL(), audit)
	for _, id := range more {
		if !audited.has(id) && !left[id] {
			t.Fatalf("message %s neither processed nor left in the queue after Close", id)
		}
	}
	t.Logf("service: %d + %d messages, none lost across a cut, a restart and Close (%d processed before Close, %d left queued)",
		total, len(more), audited.distinct()-total, len(left))
}

// drain reads what is left in a queue.
func drain(t *testing.T, url, queue string) map[string]bool {
	t.Helper()
	c, err := amqp.Dial(url)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ch, _ := c.Channel()
	out := map[string]bool{}
	for {
		d, ok, err := ch.Get(queue, true)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			return out
		}
		out[d.MessageId] = true
	}
}
