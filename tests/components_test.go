package tests

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/components/requeuer"
	"github.com/ThreeDotsLabs/watermill/message"
	wmw "github.com/ThreeDotsLabs/watermill/message/router/middleware"

	"github.com/warrenmq/warren"
	"github.com/warrenmq/warren/internal/headers"
	"github.com/warrenmq/warren/internal/rabbittest"
	"github.com/warrenmq/warren/middleware"
	"github.com/warrenmq/warren/router"
	"github.com/warrenmq/warren/topology"
)

// TestRequeuerSendsADeadLetterBack: a warren dead letter carries
// Watermill's poison metadata, so Watermill's requeuer component moves it
// from the dead-letter queue back to its queue, where the (now fixed)
// handler takes it.
func TestRequeuerSendsADeadLetterBack(t *testing.T) {
	b := rabbittest.Shared(t)
	q := b.Name("requeue")
	b.Name(q + ".dlq")
	var broken atomic.Bool
	broken.Store(true)
	handled := make(chan string, 1)
	r := newRouter(t, b.URL, router.Config{})
	if err := r.AddRoute(router.Route{
		Name: "billing", Queue: topology.QueueSpec{Name: q, Durable: true},
		Retry: router.RetrySettings{Disabled: true}, DelayedRetry: router.DelayedRetrySettings{Disabled: true},
		DeadLetter: router.DeadLetterSettings{Mode: middleware.PublishToDLQ},
		Handler: func(m *message.Message) error {
			if broken.Load() {
				return errors.New("card service down")
			}
			handled <- m.UUID
			return nil
		},
	}); err != nil {
		t.Fatal(err)
	}
	startRouter(t, r)
	publish(t, r, q, message.NewMessage("invoice-7", []byte("{}")))
	waitQueueDepth(t, b.URL, q+".dlq", 1, 20*time.Second)

	d := getOnePeek(t, b.URL, q+".dlq")
	for k, want := range map[string]string{wmw.PoisonedTopicKey: q, wmw.PoisonedHandlerKey: "billing", wmw.ReasonForPoisonedKey: "card service down", wmw.PoisonedSubscriberKey: "warren.Subscriber"} {
		if got := headers.String(d.Headers[k]); got != want {
			t.Errorf("dead letter's %s = %q, want %q", k, got, want)
		}
	}

	broken.Store(false)
	c := openConn(t, b.URL)
	sub, err := warren.NewSubscriber(c, warren.SubscriberConfig{Mapping: warren.ExistingQueues{}})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	pub, err := warren.NewPublisher(c, warren.PublisherConfig{Mapping: warren.ExistingQueues{}})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	rq, err := requeuer.NewRequeuer(requeuer.Config{
		Subscriber: sub, SubscribeTopic: q + ".dlq", Publisher: pub,
		GeneratePublishTopic: func(p requeuer.GeneratePublishTopicParams) (string, error) {
			return p.Message.Metadata.Get(wmw.PoisonedTopicKey), nil
		},
	}, watermill.NopLogger{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- rq.Run(ctx) }()
	defer func() { cancel(); <-done }()
	select {
	case id := <-handled:
		if id != "invoice-7" {
			t.Fatalf("handled %s", id)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the requeued message never reached the handler")
	}
	waitQueueDepth(t, b.URL, q+".dlq", 0, 10*time.Second)
}
