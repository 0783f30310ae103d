package router

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/warrenmq/warren"
	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/conn"
	"github.com/warrenmq/warren/internal/configerr"
	"github.com/warrenmq/warren/internal/connx"
	"github.com/warrenmq/warren/internal/delay"
	"github.com/warrenmq/warren/internal/valuesonly"
	"github.com/warrenmq/warren/middleware"
	"github.com/warrenmq/warren/telemetry"
	"github.com/warrenmq/warren/topology"
)

// Config shapes a Router. The zero value is usable.
type Config struct {
	// CloseTimeout bounds Close, and the drain when Run's ctx ends:
	// in-flight handlers get this long to finish and settle with live
	// contexts. Default: 30s.
	CloseTimeout time.Duration
	// Output configures the publisher of producing routes (Route.Produce).
	// Default: warren.PublisherConfig{} (QueuePerTopic). Its topology goes
	// into the connection's registry, so publishing to a route's own queue
	// uses that route's declaration.
	Output warren.PublisherConfig
	// Telemetry traces and measures the routes (their subscribers, the
	// retries and dead-letters, and every publish). Default: the
	// connection's (conn.Config.Telemetry); telemetry.Disabled() turns it
	// off.
	Telemetry *telemetry.Telemetry
	// CloseConnection makes Close close the connection last. Default:
	// false: the connection is the caller's, and Close leaves it open.
	CloseConnection bool
	// OnRestore is told of every restore run of the connection's registry
	// (what was restored, what failed). It must not block.
	OnRestore func(broker.RestoreReport)
	// WatermillHandlers runs the routes as handlers of the Watermill router
	// (Watermill()), which costs a channel hop and a goroutine per message.
	// Default: false: each route's subscription runs the route's stack
	// itself, unless middleware or decorators were added to Watermill()
	// before Run: then the routes run as Watermill handlers anyway, so that
	// what was added applies to them (never skipped), and Run logs it at
	// Info. Watermill() runs any handler added to it directly either way.
	WatermillHandlers bool
	// OnConsumerEvent is told whenever a route's consumer is interrupted,
	// waits for its queue, or consumes again. It must not block.
	OnConsumerEvent func(route string, e broker.ConsumerEvent)
	// Logger. Default: the connection's logger.
	Logger *slog.Logger
	// QueueMetricsInterval, when set, is how often the router reads each
	// route's queue depth and consumer count (a passive declaration, one
	// round trip per route) and reports them as warren.queue.messages and
	// warren.queue.consumers (messaging.destination.name: the queue): a
	// signal to scale on. Default: 0, off.
	QueueMetricsInterval time.Duration
}

func (c *Config) setDefaults(cn *conn.Conn) {
	if c.CloseTimeout == 0 {
		c.CloseTimeout = 30 * time.Second
	}
	if c.Telemetry == nil {
		c.Telemetry = connx.Telemetry(cn)
	}
	if c.Logger == nil {
		c.Logger = connx.Logger(cn)
	}
	if c.Output.Logger == nil {
		c.Output.Logger = c.Logger
	}
}

// Validate reports every problem, each naming its field.
func (c *Config) Validate() error {
	f := configerr.For("router.Config")
	f.Check(c.CloseTimeout < 0, "CloseTimeout", "must not be negative")
	f.Check(c.QueueMetricsInterval < 0, "QueueMetricsInterval", "must not be negative (0 is off)")
	// Output is validated by warren.NewPublisher when New makes it.
	return f.Err()
}

// Router is a whole service declared in one place: routes become topology
// in the connection's one registry (restored after every reconnect), a
// subscriber each, and the standard middleware stack on a Watermill
// message.Router, which stays reachable through Watermill() for any other
// middleware or plugin.
type Router struct {
	conn *conn.Conn
	cfg  Config
	wm   *message.Router
	ops  *broker.Ops
	reg  *broker.Registry

	retryPub *warren.Publisher
	// copyPubs publish the copies (delayed retries, dead letters) of the
	// routes whose marshaler is not the default one, with that marshaler:
	// a copy is encoded like the messages of its route.
	copyPubs []*warren.Publisher
	outPub   *warren.Publisher
	// handOver is the hand-over of due messages this router takes part in
	// while its routes retry after a delay.
	handOver *delay.HandOver
	output   message.Publisher
	// stopRestoreReports unregisters Config.OnRestore; nil without one.
	stopRestoreReports func()
	// queueMetrics reads the routes' queues (QueueMetricsInterval); nil
	// when off.
	queueMetrics *queueMetrics

	mu     sync.Mutex
	routes []*activeRoute
	// routeNames are the routes' names, for the Watermill router's logger
	// (watermillLog). Written by AddRoute only before Run, read after.
	routeNames map[string]bool
	running    bool
	closed     bool
	started    chan struct{} // closed once Run started every route, failed, or Close came first
	startOnce  sync.Once
	startErr   error
	runDone    chan struct{}

	closeOnce sync.Once
	closeErr  error
}

type activeRoute struct {
	Route
	sub *warren.Subscriber
	// killSwitch is the route's, nil without one.
	killSwitch *middleware.KillSwitch

	// pauseMu serialises pauses and resumes of the route, held while one
	// waits for the handlers in flight.
	pauseMu sync.Mutex
	// pausedBy are who paused it (an operator, the kill switch): it
	// consumes again once every one of them resumed it. byMu guards it
	// alone, so that Health reads it while a pause drains.
	byMu     sync.Mutex
	pausedBy []string
}

// New makes a Router on c (opened or not; Run waits for it). The connection
// stays the caller's unless Config.CloseConnection.
func New(c *conn.Conn, cfg Config) (*Router, error) {
	if c == nil {
		return nil, &configerr.Error{Field: "router.New.conn", Reason: "must not be nil"}
	}
	cfg.setDefaults(c)
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	routeNames := map[string]bool{}
	var wlog watermill.LoggerAdapter = watermill.NopLogger{}
	if cfg.Logger.Enabled(context.Background(), slog.LevelError) {
		// Watermill logs per message; a logger that drops everything costs
		// nothing only when Watermill does not call it at all.
		wlog = watermillLog{LoggerAdapter: watermill.NewSlogLogger(cfg.Logger), routes: routeNames}
	}
	wm, err := message.NewRouter(message.RouterConfig{CloseTimeout: cfg.CloseTimeout}, wlog)
	if err != nil {
		return nil, err
	}
	r := &Router{conn: c, cfg: cfg, wm: wm, routeNames: routeNames, started: make(chan struct{}), runDone: make(chan struct{})}
	if r.ops, err = broker.NewOps(c, broker.OpsConfig{Logger: cfg.Logger}); err != nil {
		return nil, err
	}
	r.reg = r.ops.Registry()
	if cfg.OnRestore != nil {
		r.stopRestoreReports = r.reg.OnRestored(cfg.OnRestore)
	}
	if r.retryPub, err = warren.NewPublisher(c, warren.PublisherConfig{Mapping: warren.ExistingQueues{}, Telemetry: cfg.Telemetry, Logger: cfg.Logger}); err != nil {
		return nil, err
	}
	output := cfg.Output
	if output.Telemetry == nil {
		output.Telemetry = cfg.Telemetry
	}
	if r.outPub, err = warren.NewPublisher(c, output); err != nil {
		return nil, err
	}
	r.output = r.outPub
	return r, nil
}

// Watermill is the underlying Watermill router: add any Watermill
// middleware, plugin or decorator to it before Run. Middleware and
// decorators added to it apply to the routes too (Config.WatermillHandlers).
func (r *Router) Watermill() *message.Router { return r.wm }

// Ops is the router's topology operations on the connection's registry.
func (r *Router) Ops() *broker.Ops { return r.ops }

// Publisher is the router's output publisher (traced), for publishing
// from outside a handler.
func (r *Router) Publisher() message.Publisher { return r.output }

// AddRoute validates and records a route; its topology is declared by Run.
func (r *Router) AddRoute(rt Route) error {
	rt.setDefaults()
	if err := rt.Validate(); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return conn.ErrClosed
	}
	if r.running {
		return ErrRunning
	}
	for _, other := range r.routes {
		if other.Name == rt.Name {
			return fmt.Errorf("%w: route %q: Name: used twice", ErrInvalidRoute, rt.Name)
		}
	}
	r.routes = append(r.routes, &activeRoute{Route: rt})
	r.routeNames[rt.Name] = true
	return nil
}

// Run declares every route's topology (recorded for restore), checks that
// every dead-letter target exists, starts a subscriber per route with its
// middleware stack, and runs the Watermill router. It returns the error
// that stopped it from starting (also given to WaitRunning), or nil once
// the router stopped: by Close, or because ctx ended, after which Run
// drains like Close (bounded by CloseTimeout) before it returns. When the
// connection closes for good under it (it gave up reconnecting), Run drains
// the same way and returns conn.ErrClosed with the connection's reason:
// a router never runs on doing nothing.
func (r *Router) Run(ctx context.Context) error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return conn.ErrClosed
	}
	if r.running {
		r.mu.Unlock()
		return ErrRunning
	}
	r.running = true
	routes := append([]*activeRoute(nil), r.routes...)
	r.mu.Unlock()
	defer close(r.runDone)
	if err := r.start(ctx, routes); err != nil {
		err = fmt.Errorf("router: start: %w", err)
		r.finishStart(err)
		return err
	}
	wmErr := make(chan error, 1)
	go func() { wmErr <- r.wm.Run(context.WithoutCancel(ctx)) }()
	select {
	case <-r.wm.Running():
		r.finishStart(nil)
		names := make([]string, len(routes))
		for i, rt := range routes {
			names[i] = rt.Name
		}
		r.cfg.Logger.Info("router: running", "routes", len(routes), "route_names", names)
		if err := r.startQueueMetrics(routes); err != nil {
			r.cfg.Logger.Warn("router: the queue metrics could not start", "error", err)
		}
	case err := <-wmErr:
		err = fmt.Errorf("router: start: %w", err)
		r.finishStart(err)
		return err
	}
	// drain closes the router like Close, with a budget of its own (the
	// caller's ctx may be over), and waits for the Watermill router.
	drain := func() (closeErr, wmRunErr error) {
		closeCtx, cancel := context.WithTimeout(context.Background(), r.cfg.CloseTimeout)
		defer cancel()
		closeErr = r.Close(closeCtx)
		return closeErr, <-wmErr
	}
	select {
	case <-ctx.Done():
		err, _ := drain()
		return err
	case err := <-wmErr:
		return err
	case <-r.conn.Done():
		// The connection closed for good under the router (it gave up
		// reconnecting: a refused login, the retry policy's limit; or it
		// was closed): nothing consumes again. Run drains and says why, so
		// that a supervisor can restart the service instead of a process
		// that runs and does nothing.
		r.mu.Lock()
		closing := r.closed // Close of the router, closing its own connection
		r.mu.Unlock()
		cerr, werr := drain()
		if closing {
			return werr
		}
		closed := fmt.Errorf("router: the connection closed for good: %w", conn.ErrClosed)
		if cause := r.conn.Err(); cause != nil && !errors.Is(cause, conn.ErrClosed) {
			closed = fmt.Errorf("router: the connection closed for good: %w: %w", conn.ErrClosed, cause)
		} else if cause != nil {
			closed = fmt.Errorf("router: the connection closed for good: %w", cause)
		}
		return errors.Join(closed, cerr)
	}
}

// finishStart tells WaitRunning how the start went, once.
func (r *Router) finishStart(err error) {
	r.startOnce.Do(func() {
		r.startErr = err
		close(r.started)
	})
}

// WaitRunning blocks until Run has started every route (nil), Run failed
// to start (its error), the router was closed before it ran (conn.ErrClosed), or
// ctx ends (ctx.Err()): a start-up that fails never leaves a waiter
// hanging.
func (r *Router) WaitRunning(ctx context.Context) error {
	select {
	case <-r.started:
		return r.startErr
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (r *Router) start(ctx context.Context, routes []*activeRoute) error {
	if err := r.conn.WaitConnected(ctx); err != nil {
		return err
	}
	// Each route's own queue first: nothing of a route's infrastructure
	// (the delay levels, its exchanges, bindings and dead-letter queue) is
	// declared before every queue is known to be the route's.
	for _, rt := range routes {
		if err := r.ops.Apply(ctx, topology.Topology{Queues: []topology.QueueSpec{rt.Queue}}); err != nil {
			if errors.Is(err, conn.ErrPreconditionFailed) {
				return queueConflict(rt.Route, err)
			}
			return fmt.Errorf("router: route %q: %w", rt.Name, err)
		}
	}
	// The delay levels serve every route (and the connection): declared
	// once, before the routes that bind to their deliver exchange.
	if levels := delayLevelsFor(routes); levels > 0 {
		if err := r.ops.Apply(ctx, delay.ScheduleTopology(levels)); err != nil {
			return fmt.Errorf("router: declare the delay levels: %w", err)
		}
		// Due messages that need a hand (forwarded retries, a queue gone
		// when a retry is due) are handed over while the router runs.
		if err := r.joinHandOver(ctx); err != nil {
			return err
		}
	}
	for _, rt := range routes {
		if err := r.ops.Apply(ctx, rt.topology()); err != nil {
			return fmt.Errorf("router: route %q: %w", rt.Name, err)
		}
	}
	for _, rt := range routes {
		if err := r.checkDeadLetter(ctx, rt); err != nil {
			return err
		}
	}
	direct := !r.cfg.WatermillHandlers
	if direct && watermillHasMiddleware(r.wm) {
		// Middleware added to Watermill() applies to Watermill's handlers
		// only: the routes run as such handlers, so that it applies to them
		// too, never skipped.
		r.cfg.Logger.Info("router: middleware was added to Watermill(); the routes run as Watermill handlers so that it applies to them")
		direct = false
	}
	for _, rt := range routes {
		if err := r.wire(ctx, rt, direct); err != nil {
			return err
		}
	}
	return nil
}

// delayLevelsFor is how many delay levels routes need: those of their
// longest delayed retry; 0 when none retries after a delay. A longer delay
// (a scheduled message) extends them when it is published.
func delayLevelsFor(routes []*activeRoute) int {
	n := 0
	for _, rt := range routes {
		if !rt.delayed() {
			continue
		}
		for _, l := range rt.DelayedRetry.Levels {
			n = max(n, delay.LevelsFor(l))
		}
	}
	return n
}

// checkDeadLetter makes sure messages a route dead-letters have somewhere to
// go: the broker drops them silently otherwise (PITFALLS 15). A dead-letter
// exchange the queue's arguments name must exist whatever the mode (the
// broker uses it for expired and overflowing messages too).
func (r *Router) checkDeadLetter(ctx context.Context, rt *activeRoute) error {
	args := rt.Queue.Args
	if args.DeadLetterExchange != "" {
		ok, err := r.ops.ExchangeExists(ctx, args.DeadLetterExchange)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("%w: route %q: dead-letter exchange %q", ErrDeadLetterMissing, rt.Name, args.DeadLetterExchange)
		}
	}
	if rt.DeadLetter.Disabled {
		return nil
	}
	target := rt.DeadLetter.Queue
	if rt.DeadLetter.Mode == middleware.RejectToDLX {
		if args.DeadLetterExchange != "" {
			return nil // checked above
		}
		target = args.DeadLetterRoutingKey
	}
	ok, err := r.ops.QueueExists(ctx, target)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("%w: route %q: dead-letter queue %q", ErrDeadLetterMissing, rt.Name, target)
	}
	return nil
}

func (r *Router) wire(ctx context.Context, rt *activeRoute, direct bool) error {
	pub, err := r.copyPublisher(rt)
	if err != nil {
		return err
	}
	st, err := newStack(rt.Route, stackDeps{Publisher: pub, Telemetry: r.cfg.Telemetry, Logger: r.cfg.Logger,
		Pauser: routePauser{r: r, rt: rt, by: PausedByKillSwitch}})
	if err != nil {
		return err
	}
	rt.killSwitch = st.killSwitch
	poison := st.poison()
	var onEvent func(string, broker.ConsumerEvent)
	if h := r.cfg.OnConsumerEvent; h != nil {
		name := rt.Name
		onEvent = func(_ string, e broker.ConsumerEvent) { h(name, e) }
	}
	sub, err := warren.NewSubscriber(r.conn, rt.subscriberConfig(poison, onEvent, r.cfg))
	if err != nil {
		return err
	}
	r.mu.Lock()
	rt.sub = sub
	r.mu.Unlock()
	handle := st.handler()
	if !direct {
		if rt.Handler != nil || rt.Batch.Handler != nil {
			r.wm.AddConsumerHandler(rt.Name, rt.Queue.Name, sub, func(m *message.Message) error {
				_, err := handle(m)
				return err
			})
			return nil
		}
		// Watermill closes a handler's publisher when the handler stops;
		// the output publisher is shared and closed by Close, after every
		// handler.
		r.wm.AddHandler(rt.Name, rt.Queue.Name, sub, rt.PublishTopic, keepOpen{r.output}, handle)
		return nil
	}
	// The route's subscription runs the stack itself: no channel hop and no
	// goroutine per message. Produced messages are published before the
	// message is acked, as Watermill's router does.
	topic := rt.PublishTopic
	return sub.SubscribeFunc(valuesonly.From(ctx), rt.Queue.Name, func(m *message.Message) error {
		out, err := handle(m)
		if err != nil || len(out) == 0 {
			return err
		}
		return r.output.Publish(topic, out...)
	})
}

// copyPublisher is the publisher of rt's copies: the router's own, or, for
// a route with a marshaler of its own, one with that marshaler (a copy in
// watermill-amqp's dialect for a route in it, DefaultMarshaler.
// WatermillAMQP).
func (r *Router) copyPublisher(rt *activeRoute) (*warren.Publisher, error) {
	if rt.Marshaler == nil {
		return r.retryPub, nil
	}
	if m, ok := rt.Marshaler.(warren.DefaultMarshaler); ok && m == (warren.DefaultMarshaler{}) {
		return r.retryPub, nil
	}
	p, err := warren.NewPublisher(r.conn, warren.PublisherConfig{Mapping: warren.ExistingQueues{}, Marshaler: rt.Marshaler,
		Telemetry: r.cfg.Telemetry, Logger: r.cfg.Logger})
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	r.copyPubs = append(r.copyPubs, p)
	r.mu.Unlock()
	return p, nil
}

// joinHandOver makes the router take part in the hand-over of due messages
// until Close.
func (r *Router) joinHandOver(ctx context.Context) error {
	h := delay.Of(r.conn)
	if err := h.Acquire(ctx, r.cfg.Logger, r.cfg.Telemetry); err != nil {
		return fmt.Errorf("router: %w", err)
	}
	r.handOver = h
	return nil
}

// watermillHasMiddleware reports whether middleware or decorators were added
// to the Watermill router: Watermill keeps them in unexported fields and
// offers no way to read them, so reflection counts them (the version is
// pinned in go.mod, and TestWatermillMiddlewareAppliesToRoutes fails if
// Watermill renames them).
func watermillHasMiddleware(wm *message.Router) bool {
	v := reflect.ValueOf(wm).Elem()
	for _, name := range []string{"middlewares", "subscriberDecorators", "publisherDecorators"} {
		if f := v.FieldByName(name); f.IsValid() && f.Kind() == reflect.Slice && f.Len() > 0 {
			return true
		}
	}
	return false
}

// startedQueueMetrics is the queue metrics Run started, nil when none.
func (r *Router) startedQueueMetrics() *queueMetrics {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.queueMetrics
}

// drainProgressEvery is how often a drain logs what it still waits for: a
// quarter of the time it has, so that even a short drain says it is
// waiting, and at least every 5s.
func drainProgressEvery(budget time.Duration) time.Duration {
	return min(5*time.Second, max(budget/4, 100*time.Millisecond))
}

// logDrain logs the start of a drain of routes (the messages in flight,
// the time they have), then, as drainProgressEvery says, what is still in
// flight; the func it returns logs the end (how long it took, and at Warn
// what was given back to the broker unfinished) and stops the progress
// lines. A router that never ran logs nothing.
func (r *Router) logDrain(ctx context.Context, routes []*activeRoute) func() {
	inFlight := func() (n int64, by []any) {
		for _, rt := range routes {
			if rt.sub == nil {
				continue
			}
			if k := rt.sub.Stats().InFlight; k > 0 {
				n += k
				by = append(by, rt.Name, k)
			}
		}
		return n, by
	}
	givenBack := func() (n int64) {
		for _, rt := range routes {
			if rt.sub != nil {
				n += rt.sub.Stats().GivenBack
			}
		}
		return n
	}
	if !slices.ContainsFunc(routes, func(rt *activeRoute) bool { return rt.sub != nil }) {
		return func() {}
	}
	start, before := time.Now(), givenBack()
	n, _ := inFlight()
	deadline, _ := ctx.Deadline()
	r.cfg.Logger.Info("router: draining: routes stop taking messages; those in flight finish", "in_flight", n, "timeout", time.Until(deadline).Round(time.Millisecond))
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(drainProgressEvery(time.Until(deadline)))
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				n, by := inFlight()
				r.cfg.Logger.Info("router: draining", "in_flight", n, "elapsed", time.Since(start).Round(time.Millisecond), slog.Group("in_flight_by_route", by...))
			}
		}
	}()
	return func() {
		close(stop)
		<-done
		took := time.Since(start).Round(time.Millisecond)
		if back := givenBack() - before; back > 0 {
			r.cfg.Logger.Warn("router: drained, but messages were unfinished at the deadline: given back to the broker, which delivers them again",
				"given_back", back, "took", took)
			return
		}
		r.cfg.Logger.Info("router: drained", "took", took)
	}
}

// keepOpen hands Watermill a publisher whose Close does nothing.
type keepOpen struct{ message.Publisher }

func (keepOpen) Close() error { return nil }

// Close shuts the router down like http.Server.Shutdown: every route stops
// taking deliveries at once; handlers in flight finish and settle with live
// message contexts until ctx (or CloseTimeout) ends, and only then are their
// contexts cancelled and what is still unsettled given back to the broker.
// Then the Watermill router, the publishers and (with CloseConnection) the
// connection close, in that order: no "publisher closed" errors for
// handlers still running and no redelivery of finished work (Watermill
// issue 446). It returns what went wrong, naming anything still running.
// Idempotent.
func (r *Router) Close(ctx context.Context) error {
	r.closeOnce.Do(func() {
		ctx, cancel := context.WithTimeout(ctx, r.cfg.CloseTimeout)
		defer cancel()
		r.mu.Lock()
		r.closed = true
		routes := append([]*activeRoute(nil), r.routes...)
		running := r.running
		r.mu.Unlock()
		if !running {
			r.finishStart(conn.ErrClosed)
		}
		var errs []error
		var wg sync.WaitGroup
		var emu sync.Mutex
		for _, rt := range routes {
			if rt.killSwitch != nil {
				rt.killSwitch.Close() // it pauses and resumes nothing more
			}
		}
		if qm := r.startedQueueMetrics(); qm != nil {
			qm.stop()
		}
		drained := r.logDrain(ctx, routes)
		for _, rt := range routes {
			if rt.sub == nil {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := rt.sub.Shutdown(ctx); err != nil {
					emu.Lock()
					errs = append(errs, fmt.Errorf("router: route %q: %w", rt.Name, err))
					emu.Unlock()
				}
			}()
		}
		wg.Wait()
		drained()
		// The handlers are done (or abandoned): Watermill's own wait is
		// short now.
		if err := r.wm.Close(); err != nil {
			errs = append(errs, err)
		}
		if running {
			select {
			case <-r.started:
			case <-ctx.Done():
			}
		}
		if r.handOver != nil {
			if err := r.handOver.Release(ctx); err != nil {
				errs = append(errs, err)
			}
		}
		for _, p := range append([]*warren.Publisher{r.retryPub, r.outPub}, r.copyPubs...) {
			if err := p.Close(); err != nil {
				errs = append(errs, err)
			}
		}
		if err := r.ops.Close(ctx); err != nil {
			errs = append(errs, err)
		}
		if r.stopRestoreReports != nil {
			r.stopRestoreReports()
		}
		if r.cfg.CloseConnection {
			if err := r.conn.Close(ctx); err != nil {
				errs = append(errs, err)
			}
		}
		r.closeErr = errors.Join(errs...)
	})
	return r.closeErr
}
