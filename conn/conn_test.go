package conn_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren/conn"
	"github.com/warrenmq/warren/internal/connx"
	"github.com/warrenmq/warren/internal/rabbittest"
	"github.com/warrenmq/warren/retry"
)

func TestOpenUseClose(t *testing.T) {
	b := rabbittest.Shared(t)
	c, err := conn.New(b.URL, conn.Config{})
	if err != nil {
		t.Fatal(err)
	}
	rec := record(c)
	if c.State() != conn.StateInitial {
		t.Fatalf("state %v before Open", c.State())
	}
	if _, err := c.Channel(ctxT(t, time.Second)); !errors.Is(err, conn.ErrNotOpen) {
		t.Fatalf("Channel before Open: %v, want ErrNotOpen", err)
	}
	if err := c.Open(ctxT(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	if c.State() != conn.StateConnected {
		t.Fatalf("state %v after Open", c.State())
	}
	ch, err := c.Channel(ctxT(t, 5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	q := b.Name("q")
	if _, err := ch.QueueDeclare(context.Background(), q, false, true, false, false, nil); err != nil {
		t.Fatal(err)
	}
	ch2, _ := c.Channel(ctxT(t, 5*time.Second))
	if ch2 != ch {
		t.Fatal("Channel did not return the cached channel")
	}
	own, err := c.NewChannel(ctxT(t, 5*time.Second))
	if err != nil || own == ch {
		t.Fatalf("NewChannel: %v (same as cached: %v)", err, own == ch)
	}
	if err := c.Close(ctxT(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(ctxT(t, 10*time.Second)); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if c.State() != conn.StateClosed {
		t.Fatalf("state %v after Close", c.State())
	}
	select {
	case <-c.Done():
	default:
		t.Fatal("Done not closed after Close returned")
	}
	if err := c.Open(ctxT(t, time.Second)); !errors.Is(err, conn.ErrClosed) {
		t.Fatalf("Open after Close: %v, want ErrClosed", err)
	}
	if _, err := c.Channel(ctxT(t, time.Second)); !errors.Is(err, conn.ErrClosed) {
		t.Fatalf("Channel after Close: %v, want ErrClosed", err)
	}
	if own.IsOpen() {
		t.Fatal("a channel outlived its connection")
	}
	want := []string{"initial -> connecting", "connecting -> connected (attempt 1)", "connected -> closing", "closing -> closed"}
	var got []string
	for _, ch := range rec.all() {
		got = append(got, ch.String())
	}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("state changes %q, want %q", got, want)
	}
}

func deadAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func TestOpenFailsFastWhenBrokerIsDown(t *testing.T) {
	c, err := conn.New("amqp://guest:guest@"+deadAddr(t)+"/", conn.Config{})
	if err != nil {
		t.Fatal(err)
	}
	rec := record(c)
	start := time.Now()
	err = c.Open(ctxT(t, 10*time.Second))
	var gu *conn.GiveUpError
	if !errors.As(err, &gu) || gu.Attempts != 1 || !errors.Is(err, conn.ErrGaveUp) || !errors.Is(err, conn.ErrClosed) {
		t.Fatalf("Open: %v, want a GiveUpError after 1 attempt", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Fatalf("one failed attempt took %v", time.Since(start))
	}
	<-c.Done()
	if c.State() != conn.StateClosed || c.Err() == nil {
		t.Fatalf("state %v err %v, want closed with a cause", c.State(), c.Err())
	}
	rec.waitFor(t, 5*time.Second, "closed with cause", func(ch conn.StateChange) bool { return ch.To == conn.StateClosed && ch.Err != nil })
	if err := c.Open(ctxT(t, time.Second)); !errors.Is(err, conn.ErrClosed) {
		t.Fatalf("Open after giving up: %v", err)
	}
	if err := c.Close(ctxT(t, time.Second)); err != nil {
		t.Fatal(err)
	}
}

func TestFirstConnectPolicyRetriesUntilBrokerAppears(t *testing.T) {
	b := rabbittest.Shared(t)
	p := rabbittest.NewProxy(t, rabbittest.SharedAddr)
	p.Cut()
	c, err := conn.New(p.URL(b.Vhost), conn.Config{FirstConnect: conn.RetryPolicy{Backoff: retry.Backoff{InitialInterval: 20 * time.Millisecond, Multiplier: 1, MaxInterval: 20 * time.Millisecond}}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	rec := record(c)
	opened := make(chan error, 1)
	go func() { opened <- c.Open(ctxT(t, 30*time.Second)) }()
	rec.waitFor(t, 10*time.Second, "3 failed attempts", func(ch conn.StateChange) bool {
		return ch.From == conn.StateConnecting && ch.To == conn.StateConnecting && ch.Attempt == 3
	})
	if err := p.Restore(); err != nil {
		t.Fatal(err)
	}
	if err := <-opened; err != nil {
		t.Fatal(err)
	}
}

func TestWrongPasswordIsNotRetriedAndNeverLogged(t *testing.T) {
	const secret = "wrong-Pa55word"
	var logs bytes.Buffer
	var mu sync.Mutex
	logger := slog.New(slog.NewTextHandler(lockedWriter{&mu, &logs}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	c, err := conn.New("amqp://guest:"+secret+"@"+rabbittest.SharedAddr+"/", conn.Config{
		FirstConnect: conn.RetryPolicy{Backoff: retry.Backoff{InitialInterval: 10 * time.Millisecond, Multiplier: 1, MaxInterval: 10 * time.Millisecond}}, // would retry forever if auth were retryable
		Logger:       logger,
	})
	if err != nil {
		t.Fatal(err)
	}
	err = c.Open(ctxT(t, 20*time.Second))
	if !errors.Is(err, conn.ErrNotRetryable) || !conn.IsAuthError(err) {
		t.Fatalf("Open with a wrong password: %v, want not retryable auth error", err)
	}
	var ae *amqp.Error
	if !errors.As(err, &ae) || ae.Code != amqp.AccessRefused {
		t.Fatalf("the *amqp091.Error is not in the chain: %v", err)
	}
	<-c.Done()
	mu.Lock()
	defer mu.Unlock()
	for _, s := range []string{err.Error(), c.String(), fmt.Sprint(c.Err()), logs.String()} {
		if strings.Contains(s, secret) {
			t.Fatalf("password leaked: %s", s)
		}
	}
	if logs.Len() == 0 {
		t.Fatal("nothing was logged; the leak check is empty")
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func TestReconnectRestoresBeforeReleasingWaiters(t *testing.T) {
	b := rabbittest.Shared(t)
	p := rabbittest.NewProxy(t, rabbittest.SharedAddr)
	c, err := conn.New(p.URL(b.Vhost), conn.Config{Reconnect: fast()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	q := b.Name("restored")
	var restores atomic.Int32
	gate := make(chan struct{})
	c.OnRestore(func(ctx context.Context) error {
		ch, err := c.Channel(ctx) // must not wait: ctx is bound to the new connection
		if err != nil {
			return err
		}
		if restores.Add(1) > 1 {
			<-gate
		}
		_, err = ch.QueueDeclare(context.Background(), q, false, false, false, false, nil)
		return err
	})
	rec := record(c)
	if err := c.Open(ctxT(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	ch1, _ := c.Channel(ctxT(t, 5*time.Second))
	if err := p.Drop(); err != nil {
		t.Fatal(err)
	}
	rec.waitFor(t, 10*time.Second, "reconnecting", to(conn.StateReconnecting))
	waited := make(chan error, 1)
	go func() {
		ch, err := c.Channel(ctxT(t, 20*time.Second))
		if err == nil {
			// The hook has declared the queue by the time we are released.
			_, err = ch.QueueDeclarePassive(context.Background(), q)
		}
		waited <- err
	}()
	select {
	case err := <-waited:
		t.Fatalf("Channel returned before the restore hook finished: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	close(gate)
	if err := <-waited; err != nil {
		t.Fatal(err)
	}
	ch2, _ := c.Channel(ctxT(t, 5*time.Second))
	if connx.ChannelGeneration(ch2) != connx.ChannelGeneration(ch1)+1 {
		t.Fatalf("generation %d after one reconnect from %d", connx.ChannelGeneration(ch2), connx.ChannelGeneration(ch1))
	}
	if ch1.IsOpen() {
		t.Fatal("old generation's channel still open")
	}
}

// A connection lost while a restore hook runs is one more failed attempt,
// never the end: the loss cancels the hook's ctx, and the hook's
// context.Canceled must not read as a reason to give up. (A drop during
// the restore after a broker restart closed the connection for good, and
// its consumers with it: found by the end-to-end test in CI.)
func TestConnectionLostDuringRestoreHookIsRetried(t *testing.T) {
	b := rabbittest.Shared(t)
	p := rabbittest.NewProxy(t, rabbittest.SharedAddr)
	c := open(t, p.URL(b.Vhost), conn.Config{Reconnect: fast()})
	rec := record(c)
	var runs atomic.Int32
	entered := make(chan struct{})
	c.OnRestore(func(ctx context.Context) error {
		if runs.Add(1) == 1 {
			close(entered)
			<-ctx.Done() // until the connection is lost under the hook
			return ctx.Err()
		}
		return nil
	})
	if err := p.Drop(); err != nil {
		t.Fatal(err)
	}
	<-entered
	if err := p.Drop(); err != nil {
		t.Fatal(err)
	}
	rec.waitFor(t, 20*time.Second, "connected after the interrupted restore", func(ch conn.StateChange) bool {
		return (ch.To == conn.StateConnected && ch.From == conn.StateReconnecting) || ch.To.Terminal()
	})
	if st := c.State(); st != conn.StateConnected {
		t.Fatalf("state %v after a drop during a restore hook, want connected; changes: %v", st, rec.all())
	}
	if n := runs.Load(); n != 2 {
		t.Fatalf("the restore hook ran %d times, want 2 (interrupted, then again on the next connection)", n)
	}
}

func TestServerChannelErrorReplacesChannelWithoutReconnect(t *testing.T) {
	b := rabbittest.Shared(t)
	c := open(t, b.URL, conn.Config{})
	rec := record(c)
	ch, err := c.Channel(ctxT(t, 5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	_, err = ch.QueueDeclarePassive(context.Background(), b.Name("missing"))
	var ae *amqp.Error
	if !errors.As(err, &ae) || ae.Code != amqp.NotFound {
		t.Fatalf("passive declare of a missing queue: %v", err)
	}
	select {
	case <-ch.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("Done did not fire for a server-closed channel")
	}
	if e := (*amqp.Error)(nil); !errors.As(ch.Err(), &e) || e.Code != amqp.NotFound || !errors.Is(ch.Err(), conn.ErrNotFound) {
		t.Fatalf("Err = %v, want the 404", ch.Err())
	}
	ch2, err := c.Channel(ctxT(t, 5*time.Second))
	if err != nil || ch2 == ch || !ch2.IsOpen() {
		t.Fatalf("cached channel not replaced: %v", err)
	}
	if connx.ChannelGeneration(ch2) != connx.ChannelGeneration(ch) {
		t.Fatal("a channel error reconnected the whole connection")
	}
	for _, change := range rec.all() {
		if change.To == conn.StateReconnecting {
			t.Fatal("a channel error made the connection reconnect")
		}
	}
}

func TestManyConcurrentChannelCallsAcrossReconnect(t *testing.T) {
	b := rabbittest.Shared(t)
	p := rabbittest.NewProxy(t, rabbittest.SharedAddr)
	c := open(t, p.URL(b.Vhost), conn.Config{Reconnect: fast()})
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	start := make(chan struct{})
	for i := 0; i < 100; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			for {
				ch, err := c.Channel(ctx)
				if err != nil {
					errs <- err
					return
				}
				// Use it: a channel handed out must be usable or die with its
				// connection, never be half-open.
				if _, err := ch.QueueDeclare(context.Background(), "", false, true, true, false, nil); err == nil {
					return
				}
			}
		}()
	}
	if err := p.Drop(); err != nil {
		t.Fatal(err)
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("Channel across reconnect: %v", err)
	}
}

func TestCloseDuringBackoffSleep(t *testing.T) {
	b := rabbittest.Shared(t)
	p := rabbittest.NewProxy(t, rabbittest.SharedAddr)
	c, err := conn.New(p.URL(b.Vhost), conn.Config{Reconnect: conn.RetryPolicy{Backoff: retry.Backoff{InitialInterval: time.Hour, Multiplier: 1, MaxInterval: time.Hour}}})
	if err != nil {
		t.Fatal(err)
	}
	rec := record(c)
	if err := c.Open(ctxT(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	p.Cut()
	rec.waitFor(t, 10*time.Second, "a failed reconnect attempt", func(ch conn.StateChange) bool {
		return ch.From == conn.StateReconnecting && ch.To == conn.StateReconnecting
	})
	start := time.Now()
	if err := c.Close(ctxT(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("Close waited %v for a backoff sleep", d)
	}
	if c.State() != conn.StateClosed {
		t.Fatalf("state %v", c.State())
	}
}

// gatedBroker is a TCP front for the shared broker that accepts a
// connection and holds it (the AMQP handshake hangs) until open is closed,
// then forwards it: the test knows exactly when a dial reached it.
func gatedBroker(t *testing.T) (addr string, accepted <-chan struct{}, open chan<- struct{}) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	acc, gate := make(chan struct{}, 1), make(chan struct{})
	done := make(chan struct{})
	t.Cleanup(func() {
		l.Close()
		<-done
	})
	go func() {
		defer close(done)
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		acc <- struct{}{}
		<-gate
		up, err := net.Dial("tcp", rabbittest.SharedAddr)
		if err != nil {
			return
		}
		defer up.Close()
		go func() { _, _ = io.Copy(up, c); up.Close() }()
		_, _ = io.Copy(c, up)
	}()
	return l.Addr().String(), acc, gate
}

func TestCloseDuringDialClosesTheLateConnection(t *testing.T) {
	b := rabbittest.Shared(t)
	addr, accepted, gate := gatedBroker(t)
	vhost := ""
	if b.Vhost != "/" {
		vhost = url.PathEscape(b.Vhost)
	}
	c, err := conn.New("amqp://guest:guest@"+addr+"/"+vhost, conn.Config{DialTimeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	opened := make(chan error, 1)
	go func() { opened <- c.Open(context.Background()) }()
	select {
	case <-accepted: // the dial is in the stalled handshake now
	case <-time.After(10 * time.Second):
		t.Fatal("the dial never reached the broker")
	}
	closeCtx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	_ = c.Close(closeCtx) // returns at its ctx: the dial is still hanging
	if err := <-opened; !errors.Is(err, conn.ErrClosed) {
		t.Fatalf("Open interrupted by Close: %v, want ErrClosed", err)
	}
	if s := c.State(); s != conn.StateClosed {
		t.Fatalf("state %v after Close during dial", s)
	}
	close(gate) // the handshake now completes...
	select {
	case <-c.Done(): // ...and the late connection was closed, not used
	case <-time.After(30 * time.Second):
		t.Fatal("the late dial was never cleaned up")
	}
	if c.State() != conn.StateClosed {
		t.Fatal("a dial that completed after Close resurrected the connection")
	}
}

func TestStalledNetworkIsNoticedByHeartbeat(t *testing.T) {
	b := rabbittest.Shared(t)
	p := rabbittest.NewProxy(t, rabbittest.SharedAddr)
	c := open(t, p.URL(b.Vhost)+"?heartbeat=1", conn.Config{Reconnect: fast(), DialTimeout: time.Second})
	rec := record(c)
	if err := p.Stall(); err != nil {
		t.Fatal(err)
	}
	rec.waitFor(t, 15*time.Second, "reconnecting after a stall", to(conn.StateReconnecting))
	p.Heal()
	if err := c.WaitConnected(ctxT(t, 20*time.Second)); err != nil {
		t.Fatal(err)
	}
}

func TestDeclareInFlightWhenConnectionIsCut(t *testing.T) {
	b := rabbittest.Shared(t)
	p := rabbittest.NewProxy(t, rabbittest.SharedAddr)
	c := open(t, p.URL(b.Vhost), conn.Config{Reconnect: fast()})
	done := make(chan struct{})
	var declared atomic.Int32
	go func() {
		defer close(done)
		ctx := ctxT(t, 20*time.Second)
		for i := 0; i < 300 && ctx.Err() == nil; i++ {
			ch, err := c.Channel(ctx)
			if err != nil {
				continue
			}
			if _, err := ch.QueueDeclare(context.Background(), "", false, true, true, false, nil); err == nil {
				declared.Add(1)
			}
		}
	}()
	// Cut at different points of the loop: after 50, 100 and 150 declares.
	for i := 1; i <= 3; i++ {
		for declared.Load() < int32(50*i) {
			select {
			case <-done:
				t.Fatalf("the loop ended after %d declares, before cut %d", declared.Load(), i)
			case <-time.After(time.Millisecond):
			}
		}
		if err := p.Drop(); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("declares hung across connection cuts")
	}
	if declared.Load() < 250 {
		t.Fatalf("only %d of 300 declares succeeded across 3 cuts", declared.Load())
	}
}

func TestRefresh(t *testing.T) {
	b := rabbittest.Shared(t)
	c := open(t, b.URL, conn.Config{})
	rec := record(c)
	var hookRuns atomic.Int32
	entered, gate := make(chan struct{}), make(chan struct{})
	c.OnRestore(func(ctx context.Context) error {
		close(entered)
		<-gate // Refresh must wait for this
		hookRuns.Add(1)
		return nil
	})
	before, _ := c.Channel(ctxT(t, 5*time.Second))
	refreshed := make(chan error, 1)
	go func() { refreshed <- c.Refresh(ctxT(t, 20*time.Second)) }()
	<-entered
	select {
	case err := <-refreshed:
		t.Fatalf("Refresh returned while its restore hook runs: %v", err)
	default:
	}
	close(gate)
	if err := <-refreshed; err != nil {
		t.Fatal(err)
	}
	if hookRuns.Load() != 1 {
		t.Fatalf("Refresh returned with %d restore hook runs, want 1", hookRuns.Load())
	}
	after, _ := c.Channel(ctxT(t, 5*time.Second))
	if connx.ChannelGeneration(after) <= connx.ChannelGeneration(before) {
		t.Fatal("Refresh did not make a new connection")
	}
	rec.waitFor(t, 5*time.Second, "refreshing", to(conn.StateRefreshing))
	if c.State() != conn.StateConnected {
		t.Fatalf("state %v after Refresh", c.State())
	}
}

func TestSlowAndPanickingCallbacksNeverStallReconnect(t *testing.T) {
	b := rabbittest.Shared(t)
	p := rabbittest.NewProxy(t, rabbittest.SharedAddr)
	c := open(t, p.URL(b.Vhost), conn.Config{Reconnect: fast()})
	block := make(chan struct{})
	defer close(block)
	c.OnStateChange(func(conn.StateChange) { panic("callback bug") })
	c.OnStateChange(func(conn.StateChange) { <-block })
	for i := 0; i < 3; i++ {
		gen := c.Generation()
		if err := p.Drop(); err != nil {
			t.Fatal(err)
		}
		// The callbacks are stuck, so no state callback can tell us: the
		// generation does.
		rabbittest.Eventually(t, 10*time.Second, fmt.Sprintf("reconnect %d past the stuck callbacks", i), func() bool { return c.Generation() > gen },
			func() string { return fmt.Sprintf("state %v", c.State()) })
		if _, err := c.Channel(ctxT(t, 10*time.Second)); err != nil {
			t.Fatalf("reconnect %d: %v", i, err)
		}
	}
}

func TestSharedConnections(t *testing.T) {
	b := rabbittest.Shared(t)
	h1, err := conn.Shared(b.URL, conn.Config{ConnectionName: b.Prefix})
	if err != nil {
		t.Fatal(err)
	}
	h2, _ := conn.Shared(b.URL, conn.Config{ConnectionName: b.Prefix})
	never, _ := conn.Shared(b.URL, conn.Config{ConnectionName: b.Prefix})
	other, _ := conn.Shared(b.URL, conn.Config{ConnectionName: b.Prefix + "other"})
	ctx := ctxT(t, 10*time.Second)
	var wg sync.WaitGroup
	for _, h := range []*conn.SharedConn{h1, h2, other} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := h.Open(ctx); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	defer other.Close(ctx)
	if h1.Conn() != h2.Conn() || h1.Refs() != 2 {
		t.Fatalf("same parameters, different connections (refs %d)", h1.Refs())
	}
	if other.Conn() == h1.Conn() {
		t.Fatal("different parameters share a connection")
	}
	if err := never.Close(ctx); err != nil { // never opened: releases nothing
		t.Fatal(err)
	}
	if err := h1.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := h1.Close(ctx); err != nil { // twice: still only one release
		t.Fatal(err)
	}
	if h2.Conn().State() != conn.StateConnected || h2.Refs() != 1 {
		t.Fatalf("closing one handle (twice) affected the other: %v refs %d", h2.Conn().State(), h2.Refs())
	}
	if err := h1.Open(ctx); !errors.Is(err, conn.ErrClosed) {
		t.Fatalf("Open of a closed handle: %v", err)
	}
	c := h2.Conn()
	if err := h2.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if c.State() != conn.StateClosed {
		t.Fatalf("last handle closed but connection %v", c.State())
	}
	h3, _ := conn.Shared(b.URL, conn.Config{ConnectionName: b.Prefix})
	if err := h3.Open(ctx); err != nil {
		t.Fatal(err)
	}
	defer h3.Close(ctx)
	if h3.Conn() == c {
		t.Fatal("a new handle got the closed connection")
	}
}

func TestMultiHostFailover(t *testing.T) {
	b := rabbittest.Shared(t)
	dead := deadAddr(t)
	c := open(t, "amqp://guest:guest@"+dead+","+rabbittest.SharedAddr+"/"+b.Vhost, conn.Config{FirstConnect: conn.RetryPolicy{MaxAttempts: 2, FirstRetryImmediate: true}})
	if c.State() != conn.StateConnected {
		t.Fatal("did not fail over to the second host")
	}
	c2 := open(t, "amqp://guest:guest@"+dead+"/", conn.Config{FirstConnect: conn.RetryPolicy{MaxAttempts: 2, FirstRetryImmediate: true}, AlternateURLs: []string{b.URL}})
	if c2.State() != conn.StateConnected {
		t.Fatal("did not fail over to the alternate URL")
	}
}

// A channel whose call outlived its bound is closed, and no longer reads
// open from that moment: its close waits for the broker (behind the
// abandoned call), and a pool that asked IsOpen meanwhile handed it to the
// next caller, whose call failed with ErrClosed (504) when the close
// landed (PITFALLS 67: a 10,000-queue Apply failed so in the bench). The
// close still happens once the broker answers.
func TestAbandonedChannelIsNotOpen(t *testing.T) {
	b := rabbittest.Shared(t)
	p := rabbittest.NewProxy(t, rabbittest.SharedAddr)
	c := open(t, p.URL(b.Vhost), conn.Config{Reconnect: fast()})
	ctx := ctxT(t, 30*time.Second)
	ch, err := c.NewChannel(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Stall(); err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	if _, err := ch.QueueDeclare(short, "", false, true, true, false, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("declare on a stalled network: %v, want the call's deadline", err)
	}
	if ch.IsOpen() {
		t.Fatal("a channel whose call was abandoned still reads open")
	}
	p.Heal()
	select {
	case <-ch.Done(): // the abandoned channel's close went through
	case <-ctx.Done():
		t.Fatal("the abandoned channel was never closed")
	}
	if c.State() != conn.StateConnected {
		t.Fatalf("state %v: abandoning a channel cost the connection", c.State())
	}
	next, err := c.NewChannel(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := next.QueueDeclare(ctx, "", false, true, true, false, nil); err != nil {
		t.Fatalf("the next channel's declare: %v", err)
	}
}
