package warrentest_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren"
	"github.com/warrenmq/warren/ack"
	"github.com/warrenmq/warren/conn"
	"github.com/warrenmq/warren/internal/rabbittest"
	"github.com/warrenmq/warren/middleware"
	"github.com/warrenmq/warren/router"
	"github.com/warrenmq/warren/topology"
	"github.com/warrenmq/warren/warrentest"
)

func TestMain(m *testing.M) { warrentest.Main(m) }

// shopRoute is the small service every test here runs: orders from the
// "shop" topic exchange; an order whose body is "bad" can never be
// handled (to the dead-letter queue at once). Its names are b.Name's, so it
// runs in either isolation mode.
func shopRoute(b *warrentest.Broker) router.Route {
	return router.Route{
		Name:      "orders",
		Queue:     topology.QueueSpec{Name: b.Name("orders"), Durable: true},
		Exchanges: []topology.ExchangeSpec{{Name: b.Name("shop"), Type: topology.Topic, Durable: true}},
		Bindings:  []topology.BindSpec{{Source: b.Name("shop"), RoutingKey: "order.*"}},
		Handler: func(m *message.Message) error {
			if string(m.Payload) == "bad" {
				return ack.Permanent(errors.New("unreadable order"))
			}
			return nil
		},
	}
}

// serveOneOrder runs the shop service on b and sees one order, id,
// published from another connection, consumed.
func serveOneOrder(t *testing.T, b *warrentest.Broker, id string) {
	t.Helper()
	rec := warrentest.NewRecorder()
	r := b.Router(router.Config{})
	if err := r.AddRoute(rec.Route(shopRoute(b))); err != nil {
		t.Fatal(err)
	}
	warrentest.Start(t, r)
	if err := shopPublisher(b).Publish("order.created", message.NewMessage(id, []byte("ok"))); err != nil {
		t.Fatal(err)
	}
	rec.WaitConsumed(t, id, 30*time.Second)
}

func shopPublisher(b *warrentest.Broker) *warren.Publisher {
	return b.Publisher(warren.PublisherConfig{Mapping: warren.TopicExchange{Exchange: b.Name("shop")}})
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
				if err := r.AddRoute(rec.Route(shopRoute(b))); err != nil {
					t.Fatal(err)
				}
				warrentest.Start(t, r)
				tap := b.Tap(b.Name("shop"), "#")
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
	if err := r.AddRoute(rec.Route(shopRoute(b))); err != nil {
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
	route := shopRoute(b)
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
		serveOneOrder(t, b, "at-url")
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

// TestBrokerThroughTheManagementAPI: a broker that this machine's
// rabbitmqctl does not reach (a container, a managed broker; here a
// disposable node with the management plugin) gets each test's vhost, and
// the users a test asks for, through its management HTTP API; both are gone
// when the test ends.
func TestBrokerThroughTheManagementAPI(t *testing.T) {
	if testing.Short() {
		t.Skip("needs rabbitmq-server; -short runs unit tests only")
	}
	node := rabbittest.StartNode(t, rabbittest.NodeOptions{Management: true})
	rabbittest.Eventually(t, time.Minute, "the management API answers", func() bool {
		resp, err := http.Get(node.ManagementURL() + "/api/overview")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	t.Setenv(warrentest.URLEnv, node.URL())
	t.Setenv(warrentest.ManagementURLEnv, node.ManagementURL())
	t.Setenv(warrentest.IsolationEnv, "")
	var vhost, user string
	t.Run("service", func(t *testing.T) {
		b := warrentest.New(t)
		vhost = b.Vhost
		// The machine's rabbitmqctl reaches the shared broker, not this
		// node: the vhost is on the node only if the API made it.
		if out, err := node.Ctl(context.Background(), "list_vhosts", "--no-table-headers"); err != nil || !slices.Contains(strings.Fields(out), vhost) {
			t.Fatalf("the test's vhost %s is not on the node: %q %v", vhost, out, err)
		}
		serveOneOrder(t, b, "via-api")
		// A user of the test's, refused what it may not do.
		user = "reader-" + b.Vhost
		readOnly := b.User(user, "pw", warrentest.Permissions{Configure: "^$", Write: "^$", Read: ".*"})
		c, err := amqp.Dial(readOnly)
		if err != nil {
			t.Fatalf("the API's user cannot log in: %v", err)
		}
		defer c.Close()
		ch, _ := c.Channel()
		if _, err := ch.QueueDeclare("not-allowed", false, true, false, false, nil); err == nil || !strings.Contains(err.Error(), "ACCESS_REFUSED") {
			t.Fatalf("a read-only user declared a queue: %v", err)
		}
	})
	out, err := node.Ctl(context.Background(), "list_vhosts", "--no-table-headers")
	if err != nil || slices.Contains(strings.Fields(out), vhost) {
		t.Fatalf("vhost %s left on the node: %q %v", vhost, out, err)
	}
	if out, err := node.Ctl(context.Background(), "list_users", "--no-table-headers"); err != nil || strings.Contains(out, user) {
		t.Fatalf("user %s left on the node: %q %v", user, out, err)
	}
}

// TestPrefixModeOnOneVhost: a user allowed one vhost, and nothing else (no
// vhost to create, no management), runs the same service in parallel tests
// on that vhost: each test's entities carry a prefix of its own, each test
// sees only its own messages, and every entity of every test is deleted
// when it ends.
func TestPrefixModeOnOneVhost(t *testing.T) {
	if testing.Short() {
		t.Skip("needs the broker; -short runs unit tests only")
	}
	vhost := fmt.Sprintf("warrentest-single-%d", time.Now().UnixNano())
	_, remove, err := rabbittest.NewVhost(vhost)
	if err != nil {
		t.Fatal(err)
	}
	defer remove()
	user := "single-" + vhost
	rabbittest.AddUser(t, "", user, "pw", vhost, rabbittest.Permissions{Configure: ".*", Write: ".*", Read: ".*"})
	t.Setenv(warrentest.URLEnv, fmt.Sprintf("amqp://%s:pw@%s/%s", user, rabbittest.SharedAddr, vhost))
	t.Setenv(warrentest.ManagementURLEnv, "")
	t.Setenv(warrentest.IsolationEnv, "prefix")
	const services = 3
	var mu sync.Mutex
	var prefixes []string
	t.Run("services", func(t *testing.T) {
		for i := range services {
			t.Run(fmt.Sprintf("service-%d", i), func(t *testing.T) {
				t.Parallel()
				b := warrentest.New(t)
				if b.Vhost != vhost || b.Prefix == "" || !strings.Contains(b.URL, "/"+vhost) {
					t.Fatalf("prefix mode: vhost %q, prefix %q, URL %s", b.Vhost, b.Prefix, b.URL)
				}
				mu.Lock()
				prefixes = append(prefixes, b.Prefix)
				mu.Unlock()
				rec := warrentest.NewRecorder()
				r := b.Router(router.Config{})
				if err := r.AddRoute(rec.Route(shopRoute(b))); err != nil {
					t.Fatal(err)
				}
				warrentest.Start(t, r)
				pub := shopPublisher(b)
				id := fmt.Sprintf("s%d", i)
				for _, m := range []*message.Message{message.NewMessage(id, []byte("ok")), message.NewMessage(id+"-bad", []byte("bad"))} {
					if err := pub.Publish("order.created", m); err != nil {
						t.Fatal(err)
					}
				}
				rec.WaitConsumed(t, id, 30*time.Second)
				rec.WaitDeadLettered(t, id+"-bad", 30*time.Second)
				for _, e := range rec.Events("") {
					if !strings.HasPrefix(e.MessageID, id) {
						t.Fatalf("service %d saw another service's message: %v", i, e)
					}
				}
			})
		}
	})
	if len(prefixes) != services {
		t.Fatalf("%d services ran, want %d", len(prefixes), services)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, kind := range []string{"list_queues", "list_exchanges"} {
		out, err := rabbittest.Ctl(ctx, "", kind, "-p", vhost, "name", "--no-table-headers")
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range strings.Fields(out) {
			for _, p := range prefixes {
				if strings.HasPrefix(name, p) {
					t.Errorf("%s: %s left in the shared vhost", kind, name)
				}
			}
		}
	}
}
