// Package warrentest gives integration tests of a warren service a real
// RabbitMQ, never a mock: a vhost per test on a disposable node (or on the
// broker at WARREN_TEST_URL), helpers that run routers, publishers and
// subscribers in the test, waits for outcomes with a deadline that say what
// did happen when they fail, fault injection, and leak checks.
//
//	func TestMain(m *testing.M) { warrentest.Main(m) }
//
//	func TestOrdersAreShipped(t *testing.T) {
//		t.Parallel()
//		b := warrentest.New(t) // a vhost of its own, deleted at the end
//		rec := warrentest.NewRecorder()
//		r := b.Router(router.Config{})
//		if err := r.AddRoute(rec.Route(ordersRoute())); err != nil {
//			t.Fatal(err)
//		}
//		warrentest.Start(t, r)
//		// Another connection, the default mapping: the route's queue as it is.
//		pub := b.Publisher(warren.PublisherConfig{})
//		if err := pub.Publish("orders", message.NewMessage("order-1", payload)); err != nil {
//			t.Fatal(err)
//		}
//		rec.WaitConsumed(t, "order-1", 10*time.Second)
//	}
//
// That is TestOrdersAreShipped of this package's example_test.go, which runs
// with the package's tests (and a test checks the two stay the same).
//
// # Brokers and isolation
//
// Without WARREN_TEST_URL the tests run on a disposable node (rabbitmq-server
// on the machine). With it, each test's vhost is made through the broker's
// management HTTP API (WARREN_TEST_MANAGEMENT_URL, or the API at the URL's
// host on port 15672, as the URL's user) or, failing that, the machine's
// rabbitmqctl. WARREN_TEST_ISOLATION=prefix shares the URL's vhost
// instead, for a user allowed one vhost and nothing else: each test's
// entities carry a prefix of its own (Broker.Name) and are deleted over AMQP
// when it ends; warren's own infrastructure (warren.*, the delay levels)
// is shared and stays. Name queues and exchanges with Broker.Name and a
// test runs in every mode.
//
// Faults: Proxy puts a fault proxy in the path (Cut, Drop, Restore); a test
// with a node of its own (New(t, Own())) can also Restart it and Block it
// with a memory alarm.
//
// Unit tests of a route's middleware stack need no broker: see package
// router/routertest. warren's own suites run on internal/rabbittest, the
// engine under this package.
package warrentest
