package warrentest

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/warrenmq/warren/conn"
	"github.com/warrenmq/warren/internal/rabbittest"
)

// The environment that points the tests at a broker of your own instead of
// a disposable node (the package doc says what each mode needs).
const (
	// URLEnv is the broker's AMQP URL; its vhost is the one prefix mode
	// shares.
	URLEnv = "WARREN_TEST_URL"
	// ManagementURLEnv is the broker's management API,
	// http(s)://user:password@host:port, whose user may create vhosts (the
	// administrator tag). Without it, the API at the broker's host on port
	// 15672 (15671 for amqps) is tried with the AMQP URL's user, then
	// rabbitmqctl on this machine.
	ManagementURLEnv = "WARREN_TEST_MANAGEMENT_URL"
	// IsolationEnv is "vhost" (the default: a vhost per test) or "prefix":
	// every test shares the URL's vhost, its entities named with
	// Broker.Name, and deleted when it ends. For a user allowed one vhost.
	IsolationEnv = "WARREN_TEST_ISOLATION"
)

// Broker is a real RabbitMQ as one test sees it: a vhost of its own, removed
// when the test ends, so tests run in parallel without seeing each other.
type Broker struct {
	// URL logs in to the test's vhost.
	URL string
	// Vhost is the test's own vhost; in prefix mode, the vhost every test
	// shares.
	Vhost string
	// Prefix starts the name of every entity of the test in prefix mode
	// (Name adds it); "" with a vhost per test.
	Prefix string

	t     testing.TB
	node  *rabbittest.Node // nil on the WARREN_TEST_URL broker
	own   bool             // the node is this test's alone (Own)
	admin admin            // nil in prefix mode on a broker that offers none
	base  *url.URL
	proxy *rabbittest.Proxy
	mu    sync.Mutex
	names []string     // Name's, deleted in prefix mode
	conns []*conn.Conn // the test's connections, whose declarations prefix mode deletes
}

// Option shapes New.
type Option func(*options)

type options struct{ own bool }

// Own gives the test a disposable node of its own (a few seconds to start),
// for faults that reach every connection of a node: Restart, Block. Without
// it, tests share one node per package (or the WARREN_TEST_URL broker).
func Own() Option { return func(o *options) { o.own = true } }

var (
	shared   rabbittest.LazyNode
	vhostSeq atomic.Int64

	// sharedNode is the package's node (a seam: a test makes its boot slow).
	sharedNode = func(t testing.TB) *rabbittest.Node { return shared.Get(t) }
)

// New gives t a broker: the one at WARREN_TEST_URL when it is set, else a
// disposable node that rabbitmq-server runs for the package's tests (started
// by the first test that asks, destroyed by Main, or killed when the test
// binary exits). t gets a vhost of its own, deleted with everything in it
// when t ends: made through the broker's management API, or rabbitmqctl.
// With WARREN_TEST_ISOLATION=prefix t shares the URL's vhost instead, and
// its entities (named with Name, or declared through the Broker's
// connections) are deleted when t ends. Under -short, t is skipped: -short
// is the broker-free run.
func New(t testing.TB, opts ...Option) *Broker {
	t.Helper()
	if testing.Short() {
		t.Skip("warrentest: needs a broker; -short runs unit tests only")
	}
	var o options
	for _, opt := range opts {
		if opt != nil {
			opt(&o)
		}
	}
	b := &Broker{t: t, own: o.own}
	raw := os.Getenv(URLEnv)
	prefixMode := false
	switch iso := os.Getenv(IsolationEnv); iso {
	case "", "vhost":
	case "prefix":
		prefixMode = !o.own // a node of the test's own is the test's to use
	default:
		t.Fatalf("warrentest: %s=%q: want vhost or prefix", IsolationEnv, iso)
	}
	began := time.Now()
	switch {
	case o.own:
		b.node = rabbittest.StartNode(t, rabbittest.NodeOptions{})
		raw = b.node.URL()
	case raw == "":
		if _, err := exec.LookPath(serverBinary()); err != nil {
			t.Fatalf("warrentest: no broker: set %s, or install rabbitmq-server (scripts/broker.sh does)", URLEnv)
		}
		b.node = sharedNode(t)
		raw = b.node.URL()
	}
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatalf("warrentest: %s: %v", URLEnv, err)
	}
	b.base = u
	gotBroker := time.Since(began)
	// The admin's minute starts once the broker is there. It used to start
	// before the node's boot, which a loaded machine stretches (26-28 s here
	// while make test compiled, each rabbitmqctl 4-10 s): in CI the boot
	// used up the minute, and the vhost's set_permissions was killed
	// (PITFALLS 50).
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if b.node != nil {
		b.admin = ctlAdmin{node: b.node.Name}
	} else if b.admin, err = adminFor(ctx, u, os.Getenv(ManagementURLEnv)); err != nil && !prefixMode {
		t.Fatal(err)
	}
	if prefixMode {
		b.Vhost = vhostOf(u)
		b.Prefix = fmt.Sprintf("wt-%d-%d-%s.", os.Getpid(), vhostSeq.Add(1), sanitize(t.Name()))
		b.URL = b.base.String()
		t.Cleanup(b.deletePrefixed)
		return b
	}
	b.Vhost = fmt.Sprintf("warrentest-%d-%d-%s", os.Getpid(), vhostSeq.Add(1), sanitize(t.Name()))
	if err := b.admin.addVhost(ctx, b.Vhost, b.user()); err != nil {
		t.Fatalf("warrentest: make the test's vhost through %v (%v after the broker, which took %v): %v",
			b.admin, (time.Since(began) - gotBroker).Round(time.Millisecond), gotBroker.Round(time.Millisecond), err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if b.node != nil && !b.node.Running() {
			return // an Own node stopped by the test: nothing left to delete
		}
		if err := b.admin.deleteVhost(ctx, b.Vhost); err != nil {
			t.Errorf("warrentest: delete the test's vhost: %v", err)
		}
	})
	b.URL = b.urlFor(u.Host)
	return b
}

// vhostOf is the vhost an AMQP URL names ("/" when none).
func vhostOf(u *url.URL) string {
	v := strings.TrimPrefix(u.Path, "/")
	if v == "" {
		return "/"
	}
	return v
}

// Name is the name of an entity of the test: base itself with a vhost per
// test; Prefix+base in prefix mode, deleted (as a queue and as an exchange)
// when the test ends. Name every queue and exchange a test declares with
// it, and the test runs in either mode.
func (b *Broker) Name(base string) string {
	if b.Prefix == "" {
		return base
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.names = append(b.names, b.Prefix+base)
	return b.Prefix + base
}

func serverBinary() string { return "/usr/lib/rabbitmq/bin/rabbitmq-server" }

func (b *Broker) user() string {
	if b.base.User == nil || b.base.User.Username() == "" {
		return "guest"
	}
	return b.base.User.Username()
}

// urlFor is the test's vhost URL through host (the broker, or the fault
// proxy in front of it).
func (b *Broker) urlFor(host string) string {
	u := *b.base
	u.Host = host
	if b.Prefix != "" {
		return u.String() // the URL's own vhost, shared
	}
	u.Path = "/" + b.Vhost
	u.RawPath = "/" + url.PathEscape(b.Vhost)
	return u.String()
}

// Conn opens a warren connection to the test's vhost (through the fault
// proxy once Proxy was called), closed when the test ends. In prefix mode
// what it declares with the test's Prefix is deleted when the test ends.
func (b *Broker) Conn(cfg conn.Config) *conn.Conn {
	b.t.Helper()
	c := rabbittest.OpenConn(b.t, b.ConnURL(), cfg)
	b.mu.Lock()
	b.conns = append(b.conns, c)
	b.mu.Unlock()
	return c
}

// ConnURL is the URL a service under test should use: the broker's, or the
// fault proxy's once Proxy was called.
func (b *Broker) ConnURL() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.proxy != nil {
		return b.urlFor(b.proxy.Addr())
	}
	return b.URL
}

// Ctl runs rabbitmqctl against the broker, for what a test checks from the
// outside (list_queues -p <Vhost>, say). It needs rabbitmqctl on this
// machine, reaching the broker.
func (b *Broker) Ctl(ctx context.Context, args ...string) (string, error) {
	if b.node != nil {
		return b.node.Ctl(ctx, args...)
	}
	return rabbittest.Ctl(ctx, "", args...)
}

func sanitize(s string) string {
	var sb strings.Builder
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '.':
			sb.WriteRune(r)
		default:
			sb.WriteByte('_')
		}
	}
	if sb.Len() > 60 {
		return sb.String()[:60]
	}
	return sb.String()
}

// Main runs a package's tests (call it from TestMain), then destroys the
// shared disposable node and fails the run if goroutines leaked: warren's
// own goroutines end with Close, so any left are the tests' or a bug.
//
//	func TestMain(m *testing.M) { warrentest.Main(m) }
func Main(m *testing.M, ignore ...goleak.Option) {
	code := m.Run()
	shared.Destroy()
	if code == 0 {
		if err := goleak.Find(append(rabbittest.LeakOptions(), ignore...)...); err != nil {
			fmt.Fprintf(os.Stderr, "warrentest: goroutines leaked: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// VerifyNoLeaks fails t if goroutines other than the test framework's are
// still running: call it after closing what the test opened.
func VerifyNoLeaks(t testing.TB, ignore ...goleak.Option) {
	t.Helper()
	goleak.VerifyNone(t, append(rabbittest.LeakOptions(), ignore...)...)
}

// Permissions are a user's configure, write and read regular expressions
// in the test's vhost.
type Permissions = rabbittest.Permissions

// User adds a broker user with perms in the test's vhost (deleted when the
// test ends) and returns the URL that logs in as it: for testing what a
// service does when the broker refuses it (403 ACCESS_REFUSED).
//
// In prefix mode, the user's name gets the test's Prefix; a broker that
// offers neither the management API nor rabbitmqctl cannot add users, and
// the test fails saying so.
func (b *Broker) User(name, password string, perms Permissions) string {
	b.t.Helper()
	if b.admin == nil {
		b.t.Fatal(errNoAdmin)
	}
	name = b.Prefix + name
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := b.admin.addUser(ctx, name, password, b.Vhost, perms); err != nil {
		b.t.Fatalf("warrentest: add user %s through %v: %v", name, b.admin, err)
	}
	b.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := b.admin.deleteUser(ctx, name); err != nil {
			b.t.Logf("warrentest: delete user %s: %v", name, err)
		}
	})
	u := *b.base
	u.User = url.UserPassword(name, password)
	u.Path = "/" + b.Vhost
	u.RawPath = "/" + url.PathEscape(b.Vhost)
	return u.String()
}
