package rabbittest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// NodeOptions shape a disposable node. The zero value is a plain node.
type NodeOptions struct {
	// Config lines appended to the node's rabbitmq.conf (for example TLS
	// listeners). The AMQP listener on 127.0.0.1 is always there.
	Config []string
	// Plugins to enable, e.g. "rabbitmq_stream".
	Plugins []string
	// Management enables the management plugin on a port of the node's
	// own, on 127.0.0.1 (ManagementURL).
	Management bool
	// BootTimeout bounds each start. Default: 90s.
	BootTimeout time.Duration
}

// Node is a disposable RabbitMQ node: its own name, ports and directories.
// Everything it does touches only this node; it is killed by its own process
// group, never by name.
type Node struct {
	// Name is the Erlang node name, for rabbitmqctl -n.
	Name string
	// Port is the AMQP port on 127.0.0.1.
	Port int
	// DistPort is the Erlang distribution port.
	DistPort int
	// ManagementPort is the management plugin's HTTP port (0 without
	// NodeOptions.Management).
	ManagementPort int

	dir  string
	opts NodeOptions

	mu       sync.Mutex
	cmd      *exec.Cmd
	exited   chan struct{}
	watchdog *watchdog
}

// StartNode starts a disposable node for t and kills it when t ends.
func StartNode(t testing.TB, opts NodeOptions) *Node {
	t.Helper()
	if isShort() {
		t.Skip("rabbittest: a disposable node needs rabbitmq-server; -short runs unit tests only")
	}
	n, err := boot(reachableTempDir(t), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Kill)
	return n
}

// reachableTempDir is a t.TempDir that the node, which runs as the
// rabbitmq user, can reach its own directory in (t.TempDir's are private).
func reachableTempDir(t testing.TB) string {
	dir := t.TempDir()
	_ = os.Chmod(filepath.Dir(dir), 0o711)
	_ = os.Chmod(dir, 0o711)
	return dir
}

// NewNode starts a disposable node outside a test (for TestMain, so a
// package's tests can share one). The caller must call Destroy.
func NewNode(opts NodeOptions) (*Node, error) {
	return boot("", opts)
}

// boot makes a node in a directory of its own under parent ("": the
// system's temporary directory) and starts it. When a port it chose was
// taken before the node bound it (portTaken), it tries again with other
// ports, twice.
func boot(parent string, opts NodeOptions) (*Node, error) {
	const attempts = 3
	for attempt := 1; ; attempt++ {
		dir, err := os.MkdirTemp(parent, "warren-node-")
		if err != nil {
			return nil, err
		}
		n, err := newNode(dir, opts)
		if err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		err = n.Start()
		if err == nil {
			return n, nil
		}
		n.Destroy()
		if !portTaken(err) {
			return nil, err
		}
		if attempt == attempts {
			return nil, fmt.Errorf("rabbittest: a port was taken at each of %d attempts: %w", attempts, err)
		}
	}
}

// Destroy kills the node and removes its directories.
func (n *Node) Destroy() {
	n.Kill()
	os.RemoveAll(n.dir)
}

func newNode(dir string, opts NodeOptions) (*Node, error) {
	if opts.BootTimeout == 0 {
		opts.BootTimeout = 90 * time.Second
	}
	port, err := choosePort()
	if err != nil {
		return nil, err
	}
	dist, err := choosePort()
	if err != nil {
		return nil, err
	}
	n := &Node{
		Name:     fmt.Sprintf("warren-%d-%d@localhost", port, os.Getpid()),
		Port:     port,
		DistPort: dist,
		dir:      dir,
		opts:     opts,
	}
	for _, d := range []string{"mnesia", "log"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	conf := append([]string{
		fmt.Sprintf("listeners.tcp.1 = 127.0.0.1:%d", port),
		"loopback_users = none",
	}, opts.Config...)
	if opts.Management {
		if n.ManagementPort, err = choosePort(); err != nil {
			return nil, err
		}
		conf = append(conf, fmt.Sprintf("management.tcp.port = %d", n.ManagementPort), "management.tcp.ip = 127.0.0.1")
		opts.Plugins = append(slices.Clone(opts.Plugins), "rabbitmq_management")
	}
	plugins := "[" + strings.Join(opts.Plugins, ",") + "]."
	files := map[string]string{
		"rabbitmq.conf":   strings.Join(conf, "\n") + "\n",
		"enabled_plugins": plugins + "\n",
		// An empty env file keeps the machine's rabbitmq-env.conf (which
		// names the shared node) out of this node's environment.
		"rabbitmq-env.conf": "",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			return nil, err
		}
	}
	if os.Geteuid() == 0 {
		if err := chownTree(dir, "rabbitmq"); err != nil {
			return nil, err
		}
	}
	return n, nil
}

func chownTree(dir, username string) error {
	u, err := user.Lookup(username)
	if err != nil {
		return fmt.Errorf("rabbittest: user %s: %w", username, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, uid, gid)
	})
}

// URL is the node's AMQP URL (guest/guest, vhost /).
func (n *Node) URL() string { return fmt.Sprintf("amqp://guest:guest@127.0.0.1:%d/", n.Port) }

// ManagementURL is the management plugin's HTTP API as guest ("" without
// NodeOptions.Management).
func (n *Node) ManagementURL() string {
	if n.ManagementPort == 0 {
		return ""
	}
	return fmt.Sprintf("http://guest:guest@127.0.0.1:%d", n.ManagementPort)
}

// Addr is the node's AMQP address.
func (n *Node) Addr() string { return fmt.Sprintf("127.0.0.1:%d", n.Port) }

// Dir is the node's base directory (config, data, logs).
func (n *Node) Dir() string { return n.dir }

// Start boots the node (again, after Kill or Stop) with the same name, ports
// and data, and waits until it accepts AMQP connections.
func (n *Node) Start() error {
	release, err := bootSlot()
	if err != nil {
		return err
	}
	defer release()
	n.mu.Lock()
	if n.cmd != nil {
		n.mu.Unlock()
		return errors.New("rabbittest: node already running")
	}
	cmd := exec.Command(serverBinary())
	cmd.Dir = n.dir
	cmd.Env = append(os.Environ(),
		"RABBITMQ_NODENAME="+n.Name,
		"RABBITMQ_NODE_IP_ADDRESS=127.0.0.1",
		"RABBITMQ_NODE_PORT="+strconv.Itoa(n.Port),
		"RABBITMQ_DIST_PORT="+strconv.Itoa(n.DistPort),
		"RABBITMQ_MNESIA_BASE="+filepath.Join(n.dir, "mnesia"),
		"RABBITMQ_LOG_BASE="+filepath.Join(n.dir, "log"),
		"RABBITMQ_ENABLED_PLUGINS_FILE="+filepath.Join(n.dir, "enabled_plugins"),
		"RABBITMQ_PID_FILE="+filepath.Join(n.dir, "node.pid"),
		"RABBITMQ_CONFIG_FILE="+filepath.Join(n.dir, "rabbitmq.conf"),
		"RABBITMQ_CONF_ENV_FILE="+filepath.Join(n.dir, "rabbitmq-env.conf"),
		"RABBITMQ_ALLOW_INPUT=",
	)
	log, err := os.OpenFile(filepath.Join(n.dir, "log", "console.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		n.mu.Unlock()
		return err
	}
	cmd.Stdout, cmd.Stderr = log, log
	// Its own process group, so Kill reaches the shell, beam and its helpers
	// by our own pid.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("rabbitmq")
		if err != nil {
			n.mu.Unlock()
			log.Close()
			return fmt.Errorf("rabbittest: user rabbitmq: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		// The shared Erlang cookie lives in the rabbitmq user's home, so
		// rabbitmqctl (which switches to that user) can talk to the node.
		cmd.Env = append(cmd.Env, "HOME="+u.HomeDir)
	}
	if err := cmd.Start(); err != nil {
		n.mu.Unlock()
		log.Close()
		return fmt.Errorf("rabbittest: start %s: %w", serverBinary(), err)
	}
	wd, err := startWatchdog(cmd.Process.Pid)
	if err != nil {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		_ = cmd.Wait()
		n.mu.Unlock()
		log.Close()
		return fmt.Errorf("rabbittest: start the node's watchdog: %w", err)
	}
	exited := make(chan struct{})
	n.cmd, n.exited, n.watchdog = cmd, exited, wd
	n.mu.Unlock()
	go func() {
		_ = cmd.Wait()
		log.Close()
		close(exited)
	}()
	alive := func() bool {
		select {
		case <-exited:
			return false
		default:
			return true
		}
	}
	if err := waitPort(n.Addr(), n.opts.BootTimeout, alive); err != nil {
		n.Kill()
		return fmt.Errorf("%w (log: %s)", err, n.tail(20))
	}
	return nil
}

func serverBinary() string { return "/usr/lib/rabbitmq/bin/rabbitmq-server" }

func (n *Node) tail(lines int) string {
	b, _ := os.ReadFile(filepath.Join(n.dir, "log", "console.log"))
	parts := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(parts) > lines {
		parts = parts[len(parts)-lines:]
	}
	return strings.Join(parts, "\n")
}

// Kill ends the node at once (SIGKILL to its process group) and waits for it.
// Safe to call on a node that is not running.
func (n *Node) Kill() { n.signal(syscall.SIGKILL, 30*time.Second) }

// Stop ends the node gracefully (SIGTERM, which RabbitMQ handles as a clean
// shutdown) and waits for it; after 60s it is killed.
func (n *Node) Stop() {
	if !n.signal(syscall.SIGTERM, 60*time.Second) {
		n.Kill()
	}
}

// Restart stops the node gracefully and starts it again with the same data.
func (n *Node) Restart() error {
	n.Stop()
	return n.Start()
}

// Running reports whether the node's process is alive.
func (n *Node) Running() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.cmd != nil
}

func (n *Node) signal(sig syscall.Signal, wait time.Duration) bool {
	n.mu.Lock()
	cmd, exited, wd := n.cmd, n.exited, n.watchdog
	n.mu.Unlock()
	if cmd == nil {
		return true
	}
	_ = syscall.Kill(-cmd.Process.Pid, sig)
	select {
	case <-exited:
	case <-time.After(wait):
		return false
	}
	// The shell may exit before beam; make sure the whole group is gone and
	// its listeners closed before anyone reuses the ports.
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	waitGroupGone(cmd.Process.Pid, 10*time.Second)
	n.mu.Lock()
	if n.cmd == cmd {
		n.cmd, n.watchdog = nil, nil
	} else {
		wd = nil // a concurrent signal took this start's watchdog
	}
	n.mu.Unlock()
	if wd != nil {
		wd.disarm()
	}
	return true
}

// Ctl runs rabbitmqctl against this node.
func (n *Node) Ctl(ctx context.Context, args ...string) (string, error) {
	return rabbitmqctl(ctx, n.Name, args...)
}

// StopApp stops the RabbitMQ application; the Erlang node stays up and every
// client connection is closed.
func (n *Node) StopApp(ctx context.Context) error {
	_, err := n.Ctl(ctx, "stop_app")
	return err
}

// StartApp starts the application again and waits for the AMQP port.
func (n *Node) StartApp(ctx context.Context) error {
	if _, err := n.Ctl(ctx, "start_app"); err != nil {
		return err
	}
	return waitPort(n.Addr(), n.opts.BootTimeout, nil)
}

// CloseAllConnections makes the broker close every client connection (320
// CONNECTION_FORCED), as an operator would.
func (n *Node) CloseAllConnections(ctx context.Context) error {
	_, err := n.Ctl(ctx, "close_all_connections", "rabbittest")
	return err
}

// RaiseMemoryAlarm sets the memory high watermark to 0, which blocks every
// publishing connection.
func (n *Node) RaiseMemoryAlarm(ctx context.Context) error {
	_, err := n.Ctl(ctx, "set_vm_memory_high_watermark", "0")
	return err
}

// ClearMemoryAlarm restores the default watermark.
func (n *Node) ClearMemoryAlarm(ctx context.Context) error {
	_, err := n.Ctl(ctx, "set_vm_memory_high_watermark", "0.4")
	return err
}

// SuspendQueue suspends the process of queue (in the default vhost): it
// takes nothing more, so nothing published to it is confirmed, until the
// returned resume (idempotent, on the test's cleanup too) lets it go on.
func (n *Node) SuspendQueue(t testing.TB, queue string) (resume func()) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	process := fmt.Sprintf(`{ok, Q} = rabbit_amqqueue:lookup(rabbit_misc:r(<<"/">>, queue, <<"%s">>)), amqqueue:get_pid(Q)`, queue)
	if out, err := n.Ctl(ctx, "eval", "sys:suspend(begin "+process+" end)."); err != nil {
		t.Fatalf("suspend %s: %v %s", queue, err, out)
	}
	resume = sync.OnceFunc(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if out, err := n.Ctl(ctx, "eval", "sys:resume(begin "+process+" end)."); err != nil {
			t.Errorf("resume %s: %v %s", queue, err, out)
		}
	})
	t.Cleanup(resume)
	return resume
}

// waitGroupGone polls until no process of group pgid is left (or timeout).
func waitGroupGone(pgid int, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if err := syscall.Kill(-pgid, 0); errors.Is(err, syscall.ESRCH) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}
