package warrentest_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/warrenmq/warren"
	"github.com/warrenmq/warren/ack"
	"github.com/warrenmq/warren/conn"
	"github.com/warrenmq/warren/middleware"
	"github.com/warrenmq/warren/router"
	"github.com/warrenmq/warren/topology"
	"github.com/warrenmq/warren/warrentest"
)

func TestMain(m *testing.M) { warrentest.Main(m) }

// shopRoute is the small service every test here runs: orders from the
// "shop" topic exchange; an order whose body is "bad" can never be
// handled (to the dead-letter queue at once).
func shopRoute() router.Route {
	return router.Route{
		Name:      "orders",
		Queue:     topology.QueueSpec{Name: "orders", Durable: true},
		Exchanges: []topology.ExchangeSpec{{Name: "shop", Type: topology.Topic, Durable: true}},
		Bindings:  []topology.BindSpec{{Source: "shop", RoutingKey: "order.*"}},
		Handler: func(m *message.Message) error {
			if string(m.Payload) == "bad" {
				return ack.Permanent(errors.New("unreadable order"))
			}
			return nil
		},
	}
}

func shopPublisher(b *warrentest.Broker) *warren.Publisher {
	return b.Publisher(warren.PublisherConfig{Mapping: warren.TopicExchange{Exchange: "shop"}})
}

// TestParallelServicesDoNotInterfere runs the same service (same queue and
// exchange names) in 8 parallel tests, each in its own vhost: each sees its
// own messages only, and nothing is left on the broker afterwards.
func TestParallelServicesDoNotInterfere(t *testing.T) {
	const services, orders = 8, 20
	var mu sync.Mutex
	var vhosts []string
	var ctl func(ctx context.Context, args ...string) (string, error)
	t.Run("services", func(t *testing.T) {
		for i := range services {
			t.Run(fmt.Sprintf("service-%d", i), func(t *testing.T) {
				t.Parallel()
				b := warrentest.New(t)
				mu.Lock()
				vhosts = append(vhosts, b.Vhost)
				ctl = b.Ctl
				mu.Unlock()
				rec := warrentest.NewRecorder()
				r := b.Router(router.Config{})
				if err := r.AddRoute(rec.Route(shopRoute())); err != nil {
					t.Fatal(err)
				}
				warrentest.Start(t, r)
				tap := b.Tap("shop", "#")
				pub := shopPublisher(b)
				prefix := fmt.Sprintf("s%d-", i)
				for n := range orders {
					if err := pub.Publish("order.created", message.NewMessage(fmt.Sprintf("%s%d", prefix, n), []byte("ok"))); err != nil {
						t.Fatal(err)
					}
				}
				if err := pub.Publish("order.created", message.NewMessage(prefix+"bad", []byte("bad"))); err != nil {
					t.Fatal(err)
				}
				for n := range orders {
					rec.WaitConsumed(t, fmt.Sprintf("%s%d", prefix, n), 30*time.Second)
				}
				dead := rec.WaitDeadLettered(t, prefix+"bad", 30*time.Second)
				if !strings.Contains(fmt.Sprint(dead.Err), "unreadable order") {
					t.Fatalf("dead-lettered for %v", dead.Err)
				}
				if got := tap.Wait(t, orders+1, 30*time.Second); len(got) != orders+1 {
					t.Fatalf("tap saw %d", len(got))
				}
				for _, e := range rec.Events("") {
					if !strings.HasPrefix(e.MessageID, prefix) {
						t.Fatalf("service %d saw another service's message: %v", i, e)
					}
				}
			})
		}
	})
	if t.Failed() || ctl == nil {
		return
	}
	// Every service's cleanup has run: nothing of theirs is left.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := ctl(ctx, "list_vhosts", "--no-table-headers")
	if err != nil {
		t.Fatal(err)
	}
	left := strings.Fields(out)
	for _, v := range vhosts {
		if slices.Contains(left, v) {
			t.Errorf("vhost %s left on the broker", v)
		}
	}
	if len(vhosts) != services {
		t.Fatalf("%d vhosts made, want %d", len(vhosts), services)
	}
}

// TestFaultsOnANodeOfItsOwn: a service survives a dropped connection, a
// restart of its node and a memory alarm, each placed by the harness.
func TestFaultsOnANodeOfItsOwn(t *testing.T) {
	b := warrentest.New(t, warrentest.Own())
	b.Proxy()
	rec := warrentest.NewRecorder()
	r := b.Router(router.Config{})
	if err := r.AddRoute(rec.Route(shopRoute())); err != nil {
		t.Fatal(err)
	}
	warrentest.Start(t, r)
	pub := shopPublisher(b)

	b.Drop()
	if err := pub.Publish("order.created", message.NewMessage("after-drop", []byte("ok"))); err != nil {
		t.Fatal(err)
	}
	rec.WaitConsumed(t, "after-drop", 30*time.Second)

	// A publish made while the network is down waits for it, then lands.
	b.Cut()
	published := make(chan error, 1)
	go func() { published <- pub.Publish("order.created", message.NewMessage("across-cut", []byte("ok"))) }()
	b.Restore()
	if err := <-published; err != nil {
		t.Fatal(err)
	}
	rec.WaitConsumed(t, "across-cut", 30*time.Second)

	b.Restart()
	if err := pub.Publish("order.created", message.NewMessage("after-restart", []byte("ok"))); err != nil {
		t.Fatal(err)
	}
	rec.WaitConsumed(t, "after-restart", 60*time.Second)

	b.Block()
	blocked := message.NewMessage("while-blocked", []byte("ok"))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	blocked.SetContext(ctx)
	if err := pub.Publish("order.created", blocked); !errors.Is(err, conn.ErrBlocked) && !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("publish under a memory alarm: %v, want it held until its context ended", err)
	}
	b.Unblock()
	if err := pub.Publish("order.created", message.NewMessage("after-unblock", []byte("ok"))); err != nil {
		t.Fatal(err)
	}
	rec.WaitConsumed(t, "after-unblock", 30*time.Second)
}

// TestDelayedRetryIsSeen: the recorder sees each delayed retry and each
// attempt.
func TestDelayedRetryIsSeen(t *testing.T) {
	t.Parallel()
	b := warrentest.New(t)
	rec := warrentest.NewRecorder()
	route := shopRoute()
	var mu sync.Mutex
	failures := 2
	route.Handler = func(*message.Message) error {
		mu.Lock()
		defer mu.Unlock()
		if failures > 0 {
			failures--
			return errors.New("not yet")
		}
		return nil
	}
	route.Retry = router.RetrySettings{RetryConfig: middleware.RetryConfig{MaxAttempts: 1}}
	route.DelayedRetry = router.DelayedRetrySettings{Levels: []time.Duration{time.Second, time.Second}}
	r := b.Router(router.Config{})
	if err := r.AddRoute(rec.Route(route)); err != nil {
		t.Fatal(err)
	}
	warrentest.Start(t, r)
	if err := shopPublisher(b).Publish("order.created", message.NewMessage("late", []byte("ok"))); err != nil {
		t.Fatal(err)
	}
	rec.WaitConsumed(t, "late", 30*time.Second)
	rec.WaitRetried(t, "late", 2, 0)
	rec.WaitAttempts(t, "late", 3, 0)
}

// TestBrokerAtURL: with WARREN_TEST_URL set, the test's vhost is made on
// that broker and removed from it when the test ends.
func TestBrokerAtURL(t *testing.T) {
	if testing.Short() {
		t.Skip("needs the broker; -short runs unit tests only")
	}
	t.Setenv(warrentest.URLEnv, "amqp://guest:guest@127.0.0.1:5672/")
	var vhost string
	var ctl func(context.Context, ...string) (string, error)
	t.Run("service", func(t *testing.T) {
		b := warrentest.New(t)
		vhost, ctl = b.Vhost, b.Ctl
		if !strings.Contains(b.URL, "127.0.0.1:5672/"+vhost) {
			t.Fatalf("URL %s is not the test's vhost on the broker at the URL", b.URL)
		}
		rec := warrentest.NewRecorder()
		r := b.Router(router.Config{})
		if err := r.AddRoute(rec.Route(shopRoute())); err != nil {
			t.Fatal(err)
		}
		warrentest.Start(t, r)
		if err := shopPublisher(b).Publish("order.created", message.NewMessage("at-url", []byte("ok"))); err != nil {
			t.Fatal(err)
		}
		rec.WaitConsumed(t, "at-url", 30*time.Second)
		out, err := b.Ctl(context.Background(), "list_queues", "-p", vhost, "name", "--no-table-headers")
		if err != nil || !strings.Contains(out, "orders") {
			t.Fatalf("queues of the test's vhost on that broker: %q %v", out, err)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if ctl == nil {
		t.Fatal("the service test did not run")
	}
	out, err := ctl(ctx, "list_vhosts", "--no-table-headers")
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(strings.Fields(out), vhost) {
		t.Fatalf("vhost %s left on the broker", vhost)
	}
}
