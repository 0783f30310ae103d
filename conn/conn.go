package conn

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/warrenmq/warren/internal/instrument"
)

// Conn is one logical AMQP connection. It dials, notices losses, reconnects
// by its retry policy, runs restore hooks on every new connection before
// releasing waiting callers, and hands out channels bound to the connection
// generation they were opened on. All methods are safe for concurrent use.
type Conn struct {
	cfg  Config
	url  *URL
	eps  []endpoint
	tls  map[*URL]*tls.Config
	log  *slog.Logger
	disp *dispatcher

	mu    sync.Mutex
	state State
	cause error       // why it closed (terminal states) or why it was lost
	gen   *generation // current; nil unless Connected
	peer  atomic.Pointer[instrument.Peer]
	// serverVersion is what the broker reported (ServerVersion).
	serverVersion atomic.Pointer[string]
	clientID      string
	// secretUpdates counts update-secret calls (Config.Credentials).
	secretUpdates atomic.Uint64
	ready         chan struct{}
	started       bool
	nextGen       uint64
	epIndex       int
	refresh       []chan error // Refresh callers waiting for the next connection

	chanMu sync.Mutex // serialises (re)opening the cached channel
	cached *Channel

	hooksMu sync.Mutex
	hooks   []namedHook

	closeOnce sync.Once
	closing   chan struct{} // closed by Close
	refreshCh chan struct{} // poked by Refresh
	done      chan struct{} // closed when Closed and every goroutine ended

	bgMu     sync.Mutex
	bgClosed bool
	bg       sync.WaitGroup // every goroutine the connection starts

	attachMu    sync.Mutex
	attachments map[any]any

	// closeHooks run at Close (beforeClose); a lock of their own: an
	// attachment's make registers one under attachMu.
	closeMu    sync.Mutex
	closeHooks []func()
}

// beforeClose registers fn to run before the connection closes on purpose:
// at Close, and at Refresh before the old connection closes.
func (c *Conn) beforeClose(fn func()) {
	c.closeMu.Lock()
	c.closeHooks = append(c.closeHooks, fn)
	c.closeMu.Unlock()
}

// runCloseHooks runs the hooks of beforeClose, bounded by CloseTimeout: a
// hook that writes to a socket the broker stopped reading must not hold
// Close (the connection's close ends its write).
func (c *Conn) runCloseHooks() {
	c.closeMu.Lock()
	hooks := c.closeHooks
	c.closeMu.Unlock()
	if len(hooks) == 0 {
		return
	}
	done := make(chan struct{})
	go func() { // bounded below; its write ends with the connection at worst
		defer close(done)
		for _, h := range hooks {
			h()
		}
	}()
	t := time.NewTimer(c.cfg.CloseTimeout)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	}
}

// attachment returns the value attached to the connection under key,
// making it with make on first use (make runs at most once per key, under a
// lock: it must not call attachment). It is how the layers above conn keep
// exactly one object per connection: package topology keeps the
// connection's one registry, restore run and channel pool here. Use an
// unexported key type, as with context values. A nil make only looks.
func (c *Conn) attachment(key any, make func() any) any {
	c.attachMu.Lock()
	defer c.attachMu.Unlock()
	if v, ok := c.attachments[key]; ok || make == nil {
		return v
	}
	if c.attachments == nil {
		c.attachments = map[any]any{}
	}
	v := make()
	c.attachments[key] = v
	return v
}

// logger is the connection's logger (Config.Logger), for the layers above
// that log on its behalf.
func (c *Conn) logger() *slog.Logger { return c.log }

// goFor runs fn on a goroutine that Close waits for, for the layers above conn
// whose goroutines live as long as the connection (restore work, per
// connection watchers). After Close it refuses (false) and fn does not run;
// so does a nil fn.
func (c *Conn) goFor(fn func()) bool {
	if fn == nil {
		return false
	}
	return c.spawn(fn)
}

// spawn runs fn on a goroutine that Close waits for; after the connection
// finished it refuses (false) and fn does not run.
func (c *Conn) spawn(fn func()) bool {
	c.bgMu.Lock()
	defer c.bgMu.Unlock()
	if c.bgClosed {
		return false
	}
	c.bg.Add(1)
	go func() {
		defer c.bg.Done()
		fn()
	}()
	return true
}

// New checks url and cfg and returns a connection in StateInitial; nothing is
// dialled until Open. Errors match ErrInvalidConfig (*URLError, *ConfigError).
func New(url string, cfg Config) (*Conn, error) {
	u, err := ParseURL(url)
	if err != nil {
		return nil, err
	}
	cfg.setDefaults(u)
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	eps, err := cfg.endpoints(u)
	if err != nil {
		return nil, err
	}
	if cfg.TLS != nil && !slices.ContainsFunc(eps, func(ep endpoint) bool { return ep.url.TLS }) {
		// The dialer uses a TLS config only for amqps hosts: with every
		// host amqp, the login would cross the network in the clear.
		return nil, &ConfigError{Field: "conn.Config.TLS", Reason: "set, but no host is amqps: the connection would be plain TCP (use amqps://)"}
	}
	c := &Conn{
		cfg:       cfg,
		url:       u,
		eps:       eps,
		tls:       map[*URL]*tls.Config{},
		log:       cfg.Logger.With("conn", cfg.ConnectionName),
		ready:     make(chan struct{}),
		closing:   make(chan struct{}),
		refreshCh: make(chan struct{}, 1),
		done:      make(chan struct{}),
		clientID:  newClientID(cfg.ConnectionName),
	}
	for _, ep := range eps {
		if _, ok := c.tls[ep.url]; ok {
			continue
		}
		tc, err := cfg.tlsConfig(ep.url)
		if err != nil {
			return nil, err
		}
		if err := ep.url.checkExternal(tc); err != nil {
			return nil, err
		}
		if cfg.Credentials != nil && slices.Equal(ep.url.Options.AuthMechanisms, []string{AuthExternal}) {
			return nil, &ConfigError{Field: "conn.Config.Credentials", Reason: "never used: the URL logs in with auth_mechanism=external, the client certificate"}
		}
		c.tls[ep.url] = tc
	}
	c.disp = newDispatcher(c.log)
	return c, nil
}

// String describes the connection without credentials.
func (c *Conn) String() string {
	return fmt.Sprintf("conn(%s %s)", c.url, c.State())
}

// State is the current state.
func (c *Conn) State() State {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state
}

// Generation identifies the current underlying connection (it grows by one
// with every new connection); 0 while not connected.
func (c *Conn) Generation() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen == nil {
		return 0
	}
	return c.gen.id
}

// connected is closed once the connection is Connected (restore hooks
// done): at once when it is now, else when it next is.
func (c *Conn) connected() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ready
}

// generationFor is the generation a call with ctx would use: inside a
// restore hook (ctx bound to the new connection) the connection being
// restored, else Generation.
func (c *Conn) generationFor(ctx context.Context) uint64 {
	if g := restoringGeneration(ctx, c); g != nil {
		return g.id
	}
	return c.Generation()
}

// Endpoint is the broker the connection is on now (without credentials),
// "" while not connected.
func (c *Conn) Endpoint() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen == nil {
		return ""
	}
	return c.gen.endpoint
}

// Err is why the connection closed (nil after a plain Close) or, while
// reconnecting, why it was lost.
func (c *Conn) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cause
}

// Done is closed once the connection is Closed and its goroutines ended.
func (c *Conn) Done() <-chan struct{} { return c.done }

// OnStateChange registers fn, to be told of every state change, and returns
// the function that unregisters it (idempotent). Callbacks run in
// registration order on one goroutine owned by the connection, never under
// its locks; they may block, but while one blocks the later changes wait for
// it (reconnecting does not). A panic is recovered and logged. Every hook of
// warren registers this way: On... returns its remover.
func (c *Conn) OnStateChange(fn func(StateChange)) (remove func()) {
	if fn == nil {
		return func() {}
	}
	name := hookName()
	c.disp.add(name, fn)
	return func() { c.disp.remove(name) }
}

// Open connects with the FirstConnect policy and returns once connected and
// restored, or with the error that made it give up (a *GiveUpError; the
// connection is then Closed), or when ctx ends: ctx bounds this wait only,
// the attempts go on and WaitConnected can wait for them. Open on an open
// connection waits like WaitConnected; after Close it returns ErrClosed.
func (c *Conn) Open(ctx context.Context) error {
	c.mu.Lock()
	if c.state.Terminal() {
		c.mu.Unlock()
		return closedError(c.Err())
	}
	if !c.started {
		c.started = true
		c.setStateLocked(StateConnecting, nil, 0)
		c.spawn(c.run)
	}
	c.mu.Unlock()
	return c.WaitConnected(ctx)
}

// WaitConnected blocks until the connection is Connected (restore hooks
// done), closed (ErrClosed with the cause), or ctx ends (ctx.Err()). Before
// Open it returns ErrNotOpen.
func (c *Conn) WaitConnected(ctx context.Context) error {
	_, err := c.waitGeneration(ctx)
	return err
}

func (c *Conn) waitGeneration(ctx context.Context) (*generation, error) {
	if g := restoringGeneration(ctx, c); g != nil {
		return g, nil
	}
	for {
		c.mu.Lock()
		st, g, ready, cause := c.state, c.gen, c.ready, c.cause
		c.mu.Unlock()
		switch {
		case st == StateInitial:
			return nil, ErrNotOpen
		case st.Terminal():
			return nil, closedError(cause)
		case st == StateConnected && g != nil:
			return g, nil
		}
		select {
		case <-ready:
		case <-c.done:
		case <-c.closing:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Refresh closes the current connection on purpose and opens a new one with
// the Reconnect policy, for example after rotating credentials. State goes
// through Refreshing. It returns once the new connection is Connected and the
// restore hooks have finished, or when ctx ends (the refresh goes on).
func (c *Conn) Refresh(ctx context.Context) error {
	c.mu.Lock()
	switch {
	case c.state == StateInitial:
		c.mu.Unlock()
		return ErrNotOpen
	case c.state.Terminal():
		c.mu.Unlock()
		return closedError(c.cause)
	}
	reply := make(chan error, 1)
	c.refresh = append(c.refresh, reply)
	c.mu.Unlock()
	select {
	case c.refreshCh <- struct{}{}:
	default: // a refresh is already asked for; this caller joins it
	}
	select {
	case err := <-reply:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close closes the connection for good: it wins against a reconnect in
// progress (a dial that completes afterwards is closed, not used), moves to
// Closing then Closed, and waits for every goroutine of the connection to end,
// bounded by ctx. Before the connection closes (here and at Refresh), what
// its consumers hold back for the broker (acks sent in runs, package
// broker) goes out. Close is idempotent; every call waits the same way.
func (c *Conn) Close(ctx context.Context) error {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		wasStarted := c.started
		if !c.state.Terminal() {
			c.setStateLocked(StateClosing, nil, 0)
		}
		close(c.closing)
		c.mu.Unlock()
		if !wasStarted {
			c.finish(nil)
		}
	})
	select {
	case <-c.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// finish moves to Closed, tells waiting refreshers, stops the dispatcher and
// waits for the background goroutines. Called once, by run or by Close.
func (c *Conn) finish(cause error) {
	c.mu.Lock()
	if cause != nil {
		c.cause = cause
	}
	c.setStateLocked(StateClosed, cause, 0)
	c.gen = nil
	refreshers := c.refresh
	c.refresh = nil
	c.mu.Unlock()
	for _, r := range refreshers {
		r <- closedError(cause)
	}
	c.bgMu.Lock()
	c.bgClosed = true
	c.bgMu.Unlock()
	go func() {
		c.bg.Wait()
		c.disp.close(c.cfg.CloseTimeout)
		close(c.done)
	}()
}

// setStateLocked records a transition and queues it for callbacks. c.mu held.
func (c *Conn) setStateLocked(to State, err error, attempt int) {
	from := c.state
	c.state = to
	if from == StateConnected && to != StateConnected {
		c.ready = make(chan struct{})
	}
	if to == StateConnected {
		close(c.ready)
	}
	ch := StateChange{From: from, To: to, Err: err, Attempt: attempt}
	level := slog.LevelInfo
	attrs := []any{"from", from.String(), "to", to.String()}
	if attempt > 0 {
		attrs = append(attrs, "attempt", attempt)
	}
	if err != nil {
		level = slog.LevelWarn
		attrs = append(attrs, "error", err)
	}
	c.log.Log(context.Background(), level, "conn: state change", attrs...)
	c.disp.emit(ch)
}

// attemptFailed reports a failed attempt that leaves the state as it is.
func (c *Conn) attemptFailed(st State, err error, attempt int) {
	c.log.Warn("conn: connection attempt failed", "state", st.String(), "attempt", attempt, "error", err)
	c.disp.emit(StateChange{From: st, To: st, Err: err, Attempt: attempt})
}

var errClosing = errors.New("conn: closing")

// run is the connection loop: connect, wait for loss/refresh/close, repeat.
func (c *Conn) run() {
	policy, phase := c.cfg.FirstConnect, StateConnecting
	for {
		g, err := c.connect(policy, phase)
		if err != nil {
			if errors.Is(err, errClosing) {
				c.finish(nil)
			} else {
				c.finish(err)
			}
			return
		}
		next, stop := c.await(g)
		if stop {
			return
		}
		phase = next
		policy = c.cfg.Reconnect
	}
}

// await waits on a connected generation until it is lost, refreshed or the
// connection closes; it returns the phase to reconnect in, or stop.
func (c *Conn) await(g *generation) (State, bool) {
	for {
		select {
		case <-c.closing:
			c.runCloseHooks()
			g.close(c.cfg.CloseTimeout)
			c.finish(nil)
			return 0, true
		case <-g.lost:
			c.mu.Lock()
			if c.state.Terminal() { // Close won the race
				c.mu.Unlock()
				continue
			}
			c.cause = g.err()
			c.gen = nil
			c.setStateLocked(StateReconnecting, g.err(), 0)
			c.mu.Unlock()
			return StateReconnecting, false
		case <-c.refreshCh:
			c.mu.Lock()
			if c.state.Terminal() || len(c.refresh) == 0 {
				// Closing, or a late poke whose callers a newer connection
				// already answered.
				c.mu.Unlock()
				continue
			}
			c.gen = nil
			c.setStateLocked(StateRefreshing, nil, 0)
			c.mu.Unlock()
			c.runCloseHooks()
			g.close(c.cfg.CloseTimeout)
			return StateRefreshing, false
		}
	}
}

// connect makes attempts by policy until one connects and restores.
func (c *Conn) connect(policy RetryPolicy, phase State) (*generation, error) {
	b := policy.newBackOff()
	ambiguous := 0
	// Nodes that offered none of the URL's login mechanisms: a node's own
	// configuration (its plugins, its auth_mechanisms), so another node
	// may offer them; the retries end once every node has refused.
	noMechanism := map[string]bool{}
	for attempt := 1; ; attempt++ {
		g, err := c.attempt(attempt, phase)
		if err == nil {
			return g, nil
		}
		if errors.Is(err, errClosing) {
			return nil, err
		}
		c.attemptFailed(phase, err, attempt)
		if ambiguousAuth(err) {
			ambiguous++
		} else {
			ambiguous = 0
		}
		// With a credentials provider a refused login is worth another
		// attempt: by then the provider may have the rotated secret.
		var de *DialError
		if errors.Is(err, amqp.ErrSASL) && errors.As(err, &de) {
			noMechanism[de.Endpoint] = true
		}
		// No mechanism in common is no secret's fault.
		providedLogin := c.cfg.Credentials != nil && (IsAuthError(err) || ambiguousAuth(err)) && !errors.Is(err, amqp.ErrSASL)
		if !providedLogin && (!policy.isRetryable(err) || ambiguous >= ambiguousAuthLimit || len(noMechanism) == c.nodes()) {
			return nil, &GiveUpError{Attempts: attempt, Retryable: false, Err: err}
		}
		wait := b.NextBackOff()
		if wait < 0 { // backoff.Stop
			return nil, &GiveUpError{Attempts: attempt, Retryable: true, Err: err}
		}
		if wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-c.closing:
				t.Stop()
				return nil, errClosing
			}
		} else {
			select {
			case <-c.closing:
				return nil, errClosing
			default:
			}
		}
	}
}

// nodes is how many distinct endpoints the attempts go through.
func (c *Conn) nodes() int {
	seen := make(map[string]bool, len(c.eps))
	for _, ep := range c.eps {
		seen[ep.String()] = true
	}
	return len(seen)
}

// attempt dials one endpoint (rotating through them), then runs the restore
// hooks, then publishes the new generation as Connected.
func (c *Conn) attempt(n int, phase State) (*generation, error) {
	c.mu.Lock()
	ep := c.eps[c.epIndex%len(c.eps)]
	c.mu.Unlock()
	g, err := c.dial(ep)
	if err != nil {
		// The next attempt tries the next host: a dead node should not be
		// hammered while its peers are up.
		c.mu.Lock()
		c.epIndex++
		c.mu.Unlock()
		if errors.Is(err, errClosing) {
			return nil, err
		}
		return nil, &DialError{Endpoint: ep.String(), Attempt: n, Err: err}
	}
	restoreStart := time.Now()
	err = c.runHooks(g)
	if c.hasHooks() {
		instrument.Of(c.cfg.Telemetry).Restored(c.peerNow(), time.Since(restoreStart), err)
	}
	if err != nil {
		g.close(c.cfg.CloseTimeout)
		if errors.Is(err, errClosing) {
			return nil, err
		}
		return nil, &DialError{Endpoint: ep.String(), Attempt: n, Err: err}
	}
	c.mu.Lock()
	select {
	case <-c.closing:
		c.mu.Unlock()
		g.close(c.cfg.CloseTimeout)
		return nil, errClosing
	default:
	}
	c.gen = g
	c.cause = nil
	refreshers := c.refresh
	c.refresh = nil
	c.setStateLocked(StateConnected, nil, n)
	c.mu.Unlock()
	if phase != StateConnecting {
		instrument.Of(c.cfg.Telemetry).Reconnected(c.peerNow())
	}
	for _, r := range refreshers {
		r <- nil
	}
	c.log.Info("conn: connected", "endpoint", ep.String(), "generation", g.id)
	return g, nil
}

// armHeartbeat makes the broker send a frame after connection.open-ok:
// amqp091-go arms its heartbeat read deadline only when one arrives
// (PITFALLS 44), so a network that stalls between the handshake and the
// broker's first heartbeat would go unnoticed for ever, and a service
// would sit on a dead connection, consuming nothing. A channel's open-ok
// is such a frame; the channel is closed at once. A network that stalls
// now fails the dial after timeout, and the connection is torn down.
func armHeartbeat(ac *amqp.Connection, timeout time.Duration) error {
	done := make(chan error, 1)
	go func() {
		ch, err := ac.Channel()
		if err == nil {
			err = ch.Close()
		}
		done <- err
	}()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case err := <-done:
		if err != nil {
			_ = ac.CloseDeadline(time.Now())
			return fmt.Errorf("conn: a channel right after the handshake: %w", err)
		}
		return nil
	case <-t.C:
		_ = ac.CloseDeadline(time.Now()) // the goroutine's Channel returns ErrClosed
		return fmt.Errorf("conn: no answer within %v to a channel opened right after the handshake: the network stalled", timeout)
	}
}

// dial opens one AMQP connection; Close interrupts the wait, and a dial that
// completes after Close is closed, never used.
func (c *Conn) dial(ep endpoint) (*generation, error) {
	props := amqp.NewConnectionProperties()
	for k, v := range c.cfg.Properties {
		props[k] = v
	}
	props.SetClientConnectionName(c.cfg.ConnectionName)
	cfg := amqp.Config{
		Heartbeat:  c.cfg.Heartbeat,
		ChannelMax: c.url.Options.ChannelMax,
		FrameSize:  c.url.Options.FrameMax,
		Properties: props,
		Locale:     "en_US",
		// TLS is the dialer's, under the frame guard: amqp091-go dials a
		// plain amqp URL and never wraps the socket itself.
		Dial: dialer(c.cfg.DialTimeout, c.cfg.DirectWrites, c.tls[ep.url]),
		// Recovery stays nil: warren recovers by itself, and two recovery
		// loops would race (PITFALLS 9).
	}
	type result struct {
		conn *amqp.Connection
		err  error
	}
	cr, provided, err := c.credentials()
	if err != nil {
		return nil, err
	}
	user, pass := ep.url.Username, ep.url.password
	if provided {
		user, pass = cr.Username, cr.Password
	}
	dialURL := ep.url.dialURL(ep.host, user, pass)
	cfg.SASL = ep.url.sasl(user, pass)
	if c.cfg.Heartbeat == 0 {
		// The URL's heartbeat=0: the broker's interval. amqp091-go takes
		// a zero Config.Heartbeat for its own 10s default, and a zero
		// heartbeat only from a URL.
		dialURL += "?heartbeat=0"
	}
	res := make(chan result, 1)
	if !c.spawn(func() {
		ac, err := amqp.DialConfig(dialURL, cfg)
		if err == nil {
			err = armHeartbeat(ac, c.cfg.DialTimeout)
		}
		res <- result{ac, err}
	}) {
		return nil, errClosing
	}
	var r result
	select {
	case r = <-res:
	case <-c.closing:
		c.spawn(func() {
			if r := <-res; r.conn != nil {
				_ = r.conn.CloseDeadline(time.Now().Add(c.cfg.CloseTimeout))
			}
		})
		return nil, errClosing
	}
	if r.err != nil {
		return nil, loginRefusal(noSharedMechanism(r.err, ep.url))
	}
	c.mu.Lock()
	c.nextGen++
	id := c.nextGen
	c.mu.Unlock()
	c.setPeer(ep)
	c.setServerVersion(r.conn)
	peer := c.peerNow()
	g := newGeneration(id, r.conn, c.spawn, c.log, func(d time.Duration) { instrument.Of(c.cfg.Telemetry).Unblocked(peer, d) })
	g.endpoint = ep.String()
	if provided {
		c.keepSecretFresh(g, cr)
	}
	return g, nil
}
