package rabbittest

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/goleak"
)

// SharedAddr is where scripts/broker.sh makes sure a broker answers.
const SharedAddr = "127.0.0.1:5672"

var (
	nameSeq atomic.Int64
	mainRan bool

	// The package's vhost, made by the first test that needs the broker
	// (packageVhost), so that `go test -list` and -short cost nothing;
	// deleted by Main after the tests.
	vhostOnce sync.Once
	vhost     = "/"
	vhostMade bool
)

// packageVhost is the package's own vhost on the shared broker, made on
// first use; "/" when Main does not run (nobody would delete it) or
// rabbitmqctl may not create one (the tests still isolate themselves by
// name prefix).
func packageVhost() string {
	vhostOnce.Do(func() {
		if !mainRan {
			return
		}
		name := fmt.Sprintf("warren-test-%d-%d", os.Getpid(), time.Now().UnixNano()%1e6)
		if err := createVhost(name); err != nil {
			fmt.Fprintf(os.Stderr, "rabbittest: using vhost / (could not create one: %v)\n", err)
			return
		}
		vhost, vhostMade = name, true
	})
	return vhost
}

// Main runs a test package: the tests (the first that needs the broker
// makes the package's vhost), then the vhost's deletion, then a check for
// leaked goroutines. Call it from TestMain:
//
//	func TestMain(m *testing.M) { rabbittest.Main(m) }
func Main(m *testing.M, leakOptions ...goleak.Option) {
	os.Exit(run(m, leakOptions))
}

func run(m *testing.M, leakOptions []goleak.Option) int {
	mainRan = true
	code := m.Run()
	if vhostMade {
		deleteVhost(vhost)
	}
	destroyLazyNodes()
	if code == 0 {
		if err := goleak.Find(append(LeakOptions(), leakOptions...)...); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			return 1
		}
	}
	return code
}

// isShort reports -short without requiring flag.Parse to have run before
// testing.M parsed the flags.
func isShort() bool {
	for _, a := range os.Args[1:] {
		if a == "-test.short" || a == "-test.short=true" {
			return true
		}
	}
	return false
}

func createVhost(name string) error { return AddVhost(context.Background(), "", name, "guest") }

func deleteVhost(name string) {
	if err := DeleteVhost(context.Background(), "", name); err != nil {
		fmt.Fprintf(os.Stderr, "rabbittest: %v\n", err)
	}
}

// AddVhost adds vhost on node ("" is the machine's default node, the shared
// broker) and gives user every permission in it.
func AddVhost(ctx context.Context, node, vhost, user string) error {
	if _, err := rabbitmqctl(ctx, node, "add_vhost", vhost); err != nil {
		return err
	}
	_, err := rabbitmqctl(ctx, node, "set_permissions", "-p", vhost, user, ".*", ".*", ".*")
	return err
}

// DeleteVhost deletes vhost on node, with everything in it.
func DeleteVhost(ctx context.Context, node, vhost string) error {
	_, err := rabbitmqctl(ctx, node, "delete_vhost", vhost)
	return err
}

// Vhosts lists the vhosts of node.
func Vhosts(ctx context.Context, node string) ([]string, error) {
	out, err := rabbitmqctl(ctx, node, "list_vhosts", "--no-table-headers")
	if err != nil {
		return nil, err
	}
	var names []string
	for _, l := range strings.Split(out, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			names = append(names, l)
		}
	}
	return names, nil
}

// LeakOptions are the goleak options every package needs for goroutines
// of the harness that end on their own schedule: none (the fault proxy's
// Close waits for its own), kept as the one place to add them.
func LeakOptions() []goleak.Option { return nil }

// Broker is the shared broker as one test sees it.
type Broker struct {
	// URL reaches the package's vhost as guest.
	URL string
	// Vhost is the vhost URL points at.
	Vhost string
	// Prefix is unique to the test; every name the test declares should start
	// with it (see Name).
	Prefix string

	t     testing.TB
	mu    sync.Mutex
	names []string
}

// Shared returns the shared broker for t. Tests that need no broker should not
// call it: under -short it skips t, since -short is the broker-free run.
func Shared(t testing.TB) *Broker {
	t.Helper()
	if isShort() {
		t.Skip("rabbittest: needs the broker; -short runs unit tests only")
	}
	if !mainRan {
		t.Log("rabbittest: TestMain does not call rabbittest.Main; using vhost /")
	}
	b := &Broker{
		URL:    SharedURL(packageVhost()),
		Vhost:  packageVhost(),
		Prefix: fmt.Sprintf("wt.%s.%d.", sanitize(t.Name()), nameSeq.Add(1)),
		t:      t,
	}
	t.Cleanup(b.cleanup)
	return b
}

// PackageURL is the URL of the package's own vhost on the shared broker
// (made by Main, deleted when the package's tests end), for examples,
// which get no *testing.T.
func PackageURL() string { return SharedURL(packageVhost()) }

// SharedURL is the URL of the shared broker for vhost.
func SharedURL(vhost string) string {
	return "amqp://guest:guest@" + SharedAddr + "/" + url.PathEscape(vhost)
}

// Name returns Prefix+base and remembers it: a queue or an exchange of that
// name is deleted when the test ends.
func (b *Broker) Name(base string) string {
	n := b.Prefix + base
	b.mu.Lock()
	b.names = append(b.names, n)
	b.mu.Unlock()
	return n
}

// Dial opens a plain amqp091 connection to the shared broker, closed when the
// test ends: for checking what warren did from the outside.
func (b *Broker) Dial() *amqp.Connection {
	b.t.Helper()
	c, err := amqp.Dial(b.URL)
	if err != nil {
		b.t.Fatalf("rabbittest: dial shared broker: %v", err)
	}
	b.t.Cleanup(func() { _ = c.Close() })
	return c
}

func (b *Broker) cleanup() {
	b.mu.Lock()
	names := b.names
	b.mu.Unlock()
	if len(names) == 0 {
		return
	}
	c, err := amqp.Dial(b.URL)
	if err != nil {
		b.t.Logf("rabbittest: cleanup: %v", err)
		return
	}
	defer c.Close()
	for _, n := range names {
		// A failed delete closes the channel, so each gets its own.
		for _, del := range []func(*amqp.Channel) error{
			func(ch *amqp.Channel) error { _, err := ch.QueueDelete(n, false, false, false); return err },
			func(ch *amqp.Channel) error { return ch.ExchangeDelete(n, false, false) },
		} {
			ch, err := c.Channel()
			if err != nil {
				b.t.Logf("rabbittest: cleanup: %v", err)
				return
			}
			_ = del(ch)
			_ = ch.Close()
		}
	}
}

func sanitize(s string) string {
	s = strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_':
			return r
		}
		return '_'
	}, s)
	if len(s) > 60 {
		s = s[len(s)-60:]
	}
	return s
}

// Messages returns how many messages queue holds ready and unacknowledged
// (rabbitmqctl list_queues), -1, -1 when it does not exist.
func (b *Broker) Messages(queue string) (ready, unacked int, err error) {
	out, err := rabbitmqctl(context.Background(), "", "list_queues", "-q", "--no-table-headers", "-p", b.Vhost, "name", "messages_ready", "messages_unacknowledged")
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 3 && f[0] == queue {
			ready, _ = strconv.Atoi(f[1])
			unacked, _ = strconv.Atoi(f[2])
			return ready, unacked, nil
		}
	}
	return -1, -1, nil
}

// WaitSettled waits until queue holds nothing, ready or unacknowledged:
// every message that was in it has been settled for good.
func (b *Broker) WaitSettled(t testing.TB, queue string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		ready, unacked, err := b.Messages(queue)
		if err == nil && ready == 0 && unacked == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("queue %s: %d ready, %d unacknowledged (err %v), want it settled", queue, ready, unacked, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// NewVhost makes a vhost of its own on the shared broker (for a benchmark
// or a test that must not disturb anything else) and returns its URL and a
// function that deletes it.
func NewVhost(name string) (url string, remove func(), err error) {
	if err := createVhost(name); err != nil {
		return "", nil, err
	}
	return SharedURL(name), func() { deleteVhost(name) }, nil
}
