package rabbittest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

func TestMain(m *testing.M) {
	if os.Getenv(watchdogChildEnv) != "" {
		watchdogChild()
		return
	}
	Main(m)
}

func dialNode(t *testing.T, url string) *amqp.Connection {
	t.Helper()
	c, err := amqp.Dial(url)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	return c
}

func TestNodeLifecycle(t *testing.T) {
	if isShort() {
		t.Skip("needs the broker; -short runs unit tests only")
	}
	var port, pid int
	t.Run("node", func(t *testing.T) {
		n := StartNode(t, NodeOptions{})
		port = n.Port
		n.mu.Lock()
		pid = n.cmd.Process.Pid
		n.mu.Unlock()

		c := dialNode(t, n.URL())
		closed := c.NotifyClose(make(chan *amqp.Error, 1))
		if err := n.CloseAllConnections(context.Background()); err != nil {
			t.Fatal(err)
		}
		select {
		case e := <-closed:
			if e == nil || e.Code != amqp.ConnectionForced {
				t.Fatalf("close_all_connections: got %v, want 320", e)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("connection not closed by close_all_connections")
		}

		if err := n.Restart(); err != nil {
			t.Fatal(err)
		}
		c2 := dialNode(t, n.URL())
		ch, err := c2.Channel()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ch.QueueDeclare("", false, true, true, false, nil); err != nil {
			t.Fatalf("declare after restart: %v", err)
		}
		c2.Close()
	})
	// After the subtest its cleanup has killed the node: nothing listens on
	// its port and its process group is gone.
	if c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", itoa(port)), time.Second); err == nil {
		c.Close()
		t.Fatalf("port %d still accepts connections after cleanup", port)
	}
	if err := syscall.Kill(-pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Fatalf("process group %d still exists after cleanup: %v", pid, err)
	}
}

func itoa(i int) string { return (&net.TCPAddr{Port: i}).String()[1:] }

func TestMemoryAlarmBlocksPublishers(t *testing.T) {
	n := StartNode(t, NodeOptions{})
	c := dialNode(t, n.URL())
	defer c.Close()
	blocked := c.NotifyBlocked(make(chan amqp.Blocking, 4))
	ctx := context.Background()
	if err := n.RaiseMemoryAlarm(ctx); err != nil {
		t.Fatal(err)
	}
	// The broker only tells a connection it is blocked once it publishes.
	ch, err := c.Channel()
	if err != nil {
		t.Fatal(err)
	}
	_ = ch.PublishWithContext(ctx, "", "nowhere", false, false, amqp.Publishing{Body: []byte("x")})
	select {
	case b := <-blocked:
		if !b.Active {
			t.Fatalf("got %+v, want blocked", b)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no connection.blocked after the memory alarm")
	}
	if err := n.ClearMemoryAlarm(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case b := <-blocked:
		if b.Active {
			t.Fatalf("got %+v, want unblocked", b)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no connection.unblocked after clearing the alarm")
	}
}

func TestProxyCutsLiveConnection(t *testing.T) {
	b := Shared(t)
	p := NewProxy(t, SharedAddr)
	c := dialNode(t, p.URL(b.Vhost))
	closed := c.NotifyClose(make(chan *amqp.Error, 1))
	p.Cut()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("connection through the proxy survived Cut")
	}
	if _, err := amqp.DialConfig(p.URL(b.Vhost), amqp.Config{Dial: amqp.DefaultDial(time.Second)}); err == nil {
		t.Fatal("dial through a cut proxy succeeded")
	}
	if err := p.Restore(); err != nil {
		t.Fatal(err)
	}
	c2 := dialNode(t, p.URL(b.Vhost))
	c2.Close()
}

func TestProxyStallIsNoticedByHeartbeat(t *testing.T) {
	b := Shared(t)
	p := NewProxy(t, SharedAddr)
	c, err := amqp.DialConfig(p.URL(b.Vhost), amqp.Config{Heartbeat: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// amqp091 arms its heartbeat read deadline when a frame arrives after
	// connection.open-ok (it clears the handshake's deadline then): a
	// network that stalls before any later frame is never noticed. A
	// channel's open-ok is such a frame.
	if _, err := c.Channel(); err != nil {
		t.Fatal(err)
	}
	closed := c.NotifyClose(make(chan *amqp.Error, 1))
	if err := p.Stall(); err != nil {
		t.Fatal(err)
	}
	defer p.Heal() // before c.Close, which would wait on the stalled network
	select {
	case <-closed:
	case <-time.After(15 * time.Second):
		t.Fatal("a stalled connection was not noticed")
	}
}

func TestSharedCleansUp(t *testing.T) {
	if isShort() {
		t.Skip("needs the broker; -short runs unit tests only")
	}
	var url, name string
	t.Run("declare", func(t *testing.T) {
		b := Shared(t)
		url, name = b.URL, b.Name("q")
		if b.Vhost == "/" {
			t.Fatal("Main did not give the package a vhost of its own")
		}
		ch, err := b.Dial().Channel()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ch.QueueDeclare(name, true, false, false, false, nil); err != nil {
			t.Fatal(err)
		}
	})
	c := dialNode(t, url)
	defer c.Close()
	ch, err := c.Channel()
	if err != nil {
		t.Fatal(err)
	}
	_, err = ch.QueueDeclarePassive(name, true, false, false, false, nil)
	var ae *amqp.Error
	if !errors.As(err, &ae) || ae.Code != amqp.NotFound {
		t.Fatalf("queue %s survived the test's cleanup: %v", name, err)
	}
}

// watchdogChildEnv makes the test binary a child that starts a node, reports
// it and waits to be killed (TestWatchdogKillsTheNodeOfADeadTestBinary).
const watchdogChildEnv = "RABBITTEST_WATCHDOG_CHILD"

func watchdogChild() {
	n, err := NewNode(NodeOptions{})
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	n.mu.Lock()
	pgid := n.cmd.Process.Pid
	n.mu.Unlock()
	fmt.Printf("node %d %d %s\n", pgid, n.Port, n.dir)
	select {} // until the parent kills this process: no cleanup runs
}

func TestWatchdogKillsTheNodeOfADeadTestBinary(t *testing.T) {
	if isShort() {
		t.Skip("rabbittest: a disposable node needs rabbitmq-server; -short runs unit tests only")
	}
	child := exec.Command(os.Args[0], "-test.run=^$")
	child.Env = append(os.Environ(), watchdogChildEnv+"=1")
	out, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = child.Process.Kill(); _ = child.Wait() }()
	var pgid, port int
	var dir string
	line, err := bufio.NewReader(out).ReadString('\n')
	if _, scanErr := fmt.Sscanf(line, "node %d %d %s", &pgid, &port, &dir); err != nil || scanErr != nil {
		t.Fatalf("child did not report its node: %q (%v)", line, err)
	}
	defer os.RemoveAll(dir)
	if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 5*time.Second); err != nil {
		t.Fatalf("the child's node does not answer: %v", err)
	} else {
		c.Close()
	}

	// The test binary dies the hard way: no cleanup, no Kill.
	if err := child.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = child.Wait()

	deadline := time.Now().Add(30 * time.Second)
	for syscall.Kill(-pgid, 0) == nil {
		if time.Now().After(deadline) {
			_ = syscall.Kill(-pgid, syscall.SIGKILL) // our own node: do not leave it behind
			t.Fatalf("node process group %d still alive 30s after its test binary died", pgid)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestFreePortIsBelowTheEphemeralRange: a port that an outgoing connection
// cannot take as its local port between the choice and the node's bind.
func TestFreePortIsBelowTheEphemeralRange(t *testing.T) {
	lo, hi := portsBelowEphemeral()
	if lo >= hi {
		t.Fatalf("range %d-%d", lo, hi)
	}
	for range 50 {
		p, err := freePort()
		if err != nil {
			t.Fatal(err)
		}
		if p < lo || p >= hi {
			t.Fatalf("port %d outside %d-%d", p, lo, hi)
		}
	}
}

// TestBootTriesOtherPortsWhenOneIsTaken: the distribution port a node was
// given is taken before it boots (as happened when suites ran side by
// side); boot sees RabbitMQ's dist_port_already_used and boots it on other
// ports.
func TestBootTriesOtherPortsWhenOneIsTaken(t *testing.T) {
	if isShort() {
		t.Skip("needs rabbitmq-server; -short runs unit tests only")
	}
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	takenPort := taken.Addr().(*net.TCPAddr).Port
	calls := 0
	choosePort = func() (int, error) {
		calls++
		if calls == 2 { // the first node's distribution port
			return takenPort, nil
		}
		return freePort()
	}
	defer func() { choosePort = freePort }()
	n, err := boot(reachableTempDir(t), NodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Destroy()
	if calls < 4 || n.DistPort == takenPort {
		t.Fatalf("%d ports chosen, distribution port %d (the taken one is %d): want a second attempt on other ports", calls, n.DistPort, takenPort)
	}
	dialNode(t, n.URL()).Close()
}
