package router

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	wmw "github.com/ThreeDotsLabs/watermill/message/router/middleware"

	"github.com/warrenmq/warren"
	"github.com/warrenmq/warren/conn"
	"github.com/warrenmq/warren/middleware"
	"github.com/warrenmq/warren/topology"
)

// Config shapes a Router. The zero value is usable.
type Config struct {
	// CloseTimeout bounds Close: in-flight handlers get this long to finish
	// and settle. Default: 30s.
	CloseTimeout time.Duration
	// Output configures the publisher of producing routes (Route.Produce).
	// Default: warren.PublisherConfig{} (QueuePerTopic).
	Output warren.PublisherConfig
	// Telemetry for tracing and metrics. Default: the otel globals.
	Telemetry *middleware.Telemetry
	// KeepConnection leaves the connection open on Close. Default: Close
	// closes it last.
	KeepConnection bool
	// OnRestoreError is told of every entity that could not be restored.
	OnRestoreError func(*topology.RestoreError)
	// Logger. Default: silent.
	Logger *slog.Logger
}

// Router is a whole service declared in one place: routes become topology
// in the registry (restored after every reconnect), a subscriber each, and
// the standard middleware stack on a Watermill message.Router, which stays
// reachable through Watermill() for any other middleware or plugin.
type Router struct {
	conn *conn.Conn
	cfg  Config
	wm   *message.Router
	ops  *topology.Ops

	retryPub *warren.Publisher
	outPub   *warren.Publisher
	output   message.Publisher

	mu      sync.Mutex
	routes  []*activeRoute
	running bool
	closed  bool
	runDone chan struct{}
	runErr  error

	restoreMu  sync.Mutex
	restoreErr error

	closeOnce sync.Once
	closeErr  error
}

type activeRoute struct {
	Route
	sub *warren.Subscriber
}

// New makes a Router on c (opened or not; Run waits for it).
func New(c *conn.Conn, cfg Config) (*Router, error) {
	if c == nil {
		return nil, fmt.Errorf("%w: nil connection", ErrInvalidConfig)
	}
	if cfg.CloseTimeout == 0 {
		cfg.CloseTimeout = 30 * time.Second
	}
	if cfg.CloseTimeout < 0 {
		return nil, fmt.Errorf("%w: Config.CloseTimeout must not be negative", ErrInvalidConfig)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	wm, err := message.NewRouter(message.RouterConfig{CloseTimeout: cfg.CloseTimeout}, watermill.NewSlogLogger(cfg.Logger))
	if err != nil {
		return nil, err
	}
	r := &Router{conn: c, cfg: cfg, wm: wm, runDone: make(chan struct{})}
	// Runs before the registry's own hook on every new connection: restore
	// errors are those of the latest restore only.
	c.AddRestoreHook(fmt.Sprintf("router:%p", r), func(context.Context) error {
		r.restoreMu.Lock()
		r.restoreErr = nil
		r.restoreMu.Unlock()
		return nil
	})
	r.ops, err = topology.NewOps(c, topology.OpsConfig{Logger: cfg.Logger, OnRestoreError: r.onRestoreError})
	if err != nil {
		return nil, err
	}
	if r.retryPub, err = warren.NewPublisher(c, warren.PublisherConfig{Mapping: warren.ExistingQueues{}, Logger: cfg.Logger}); err != nil {
		return nil, err
	}
	outCfg := cfg.Output
	if outCfg.Logger == nil {
		outCfg.Logger = cfg.Logger
	}
	if r.outPub, err = warren.NewPublisher(c, outCfg); err != nil {
		return nil, err
	}
	mapping := outCfg.Mapping
	if mapping == nil {
		mapping = warren.QueuePerTopic{}
	}
	r.output = middleware.NewTracingPublisher(r.outPub, middleware.TracingPublisherConfig{
		Telemetry: cfg.Telemetry,
		Destination: func(topic string) (string, string) {
			rt, err := mapping.Route(topic)
			if err != nil {
				return topic, ""
			}
			return rt.Exchange, rt.RoutingKey
		},
	})
	return r, nil
}

func (r *Router) onRestoreError(e *topology.RestoreError) {
	r.restoreMu.Lock()
	r.restoreErr = errors.Join(r.restoreErr, e)
	r.restoreMu.Unlock()
	if r.cfg.OnRestoreError != nil {
		r.cfg.OnRestoreError(e)
	}
}

// Watermill is the underlying Watermill router: add any Watermill
// middleware, plugin or decorator to it before Run.
func (r *Router) Watermill() *message.Router { return r.wm }

// Ops is the router's topology operations (its registry holds every
// route's topology).
func (r *Router) Ops() *topology.Ops { return r.ops }

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
		return ErrClosed
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
	return nil
}

// Run declares every route's topology (recorded for restore), checks that
// every dead-letter target exists, starts a subscriber per route with its
// middleware stack, and runs the Watermill router until ctx ends or Close.
func (r *Router) Run(ctx context.Context) error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return ErrClosed
	}
	if r.running {
		r.mu.Unlock()
		return ErrRunning
	}
	r.running = true
	routes := append([]*activeRoute(nil), r.routes...)
	r.mu.Unlock()
	err := r.start(ctx, routes)
	if err == nil {
		err = r.wm.Run(ctx)
	}
	r.runErr = err
	close(r.runDone)
	return err
}

func (r *Router) start(ctx context.Context, routes []*activeRoute) error {
	if err := r.conn.WaitConnected(ctx); err != nil {
		return err
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
	for _, rt := range routes {
		if err := r.wire(rt); err != nil {
			return err
		}
	}
	return nil
}

// checkDeadLetter makes sure messages a route dead-letters have somewhere to
// go: the broker drops them silently otherwise.
func (r *Router) checkDeadLetter(ctx context.Context, rt *activeRoute) error {
	if rt.DeadLetter.Disabled {
		return nil
	}
	args := rt.Queue.Args
	if rt.DeadLetter.Mode == middleware.RejectToDLX && args.DeadLetterExchange != "" {
		ok, err := r.ops.ExchangeExists(ctx, args.DeadLetterExchange)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("%w: route %q: dead-letter exchange %q", ErrDeadLetterMissing, rt.Name, args.DeadLetterExchange)
		}
		return nil
	}
	target := rt.DeadLetter.Queue
	if rt.DeadLetter.Mode == middleware.RejectToDLX {
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

func (r *Router) wire(rt *activeRoute) error {
	stack, poison, err := r.stack(rt)
	if err != nil {
		return err
	}
	sub, err := warren.NewSubscriber(r.conn, rt.subscriberConfig(poison, topology.OpsConfig{Logger: r.cfg.Logger, OnRestoreError: r.onRestoreError}))
	if err != nil {
		return err
	}
	rt.sub = sub
	if rt.Handler != nil {
		h := rt.Handler
		wrapped := stack(func(m *message.Message) ([]*message.Message, error) { return nil, h(m) })
		r.wm.AddConsumerHandler(rt.Name, rt.Queue.Name, sub, func(m *message.Message) error {
			_, err := wrapped(m)
			return err
		})
		return nil
	}
	// Watermill closes a handler's publisher when the handler stops; the
	// output publisher is shared and closed by Close, after every handler.
	r.wm.AddHandler(rt.Name, rt.Queue.Name, sub, rt.PublishTopic, keepOpen{r.output}, stack(rt.Produce))
	return nil
}

// stack composes the route's middleware, outermost first: recover,
// tracing, ack, dead-letter, delayed retry, retry, timeout, the route's own.
func (r *Router) stack(rt *activeRoute) (func(message.HandlerFunc) message.HandlerFunc, func(*warren.PoisonError) error, error) {
	var mws []message.HandlerMiddleware
	mws = append(mws, wmw.Recoverer)
	if !rt.Tracing.Disabled {
		mws = append(mws, middleware.Tracing(middleware.TracingConfig{Telemetry: r.cfg.Telemetry, AsParent: rt.Tracing.AsParent}))
	}
	mws = append(mws, middleware.Ack(middleware.AckConfig{}))
	var poison func(*warren.PoisonError) error
	if !rt.DeadLetter.Disabled {
		dlq := rt.DeadLetter.Queue
		dlCfg := middleware.DeadLetterConfig{
			Mode: rt.DeadLetter.Mode, Publisher: r.retryPub, HandlerName: rt.Name,
			Topic:        func(*message.Message) string { return dlq },
			OnDeadLetter: rt.DeadLetter.OnDeadLetter, Telemetry: r.cfg.Telemetry,
		}
		dl, err := middleware.DeadLetter(dlCfg)
		if err != nil {
			return nil, nil, err
		}
		mws = append(mws, dl)
		poisonDL, err := middleware.DeadLetterPoison(dlCfg)
		if err != nil {
			return nil, nil, err
		}
		poison = func(pe *warren.PoisonError) error {
			msg := message.NewMessage(pe.MessageID, pe.Body)
			for k, v := range pe.Headers {
				msg.Metadata[k] = warren.HeaderString(v)
			}
			return poisonDL(msg, pe)
		}
	}
	if !rt.DelayedRetry.Disabled {
		dr, err := middleware.DelayedRetry(middleware.DelayedRetryConfig{
			Publisher: r.retryPub, Levels: rt.DelayedRetry.Levels, Queue: rt.Queue.Name, Telemetry: r.cfg.Telemetry,
		})
		if err != nil {
			return nil, nil, err
		}
		mws = append(mws, dr)
	}
	if !rt.Retry.Disabled {
		cfg := rt.Retry.RetryConfig
		if cfg.Telemetry == nil {
			cfg.Telemetry = r.cfg.Telemetry
		}
		mws = append(mws, middleware.Retry(cfg))
	}
	mws = append(mws, wmw.Timeout(rt.Timeout))
	mws = append(mws, rt.Middleware...)
	return func(h message.HandlerFunc) message.HandlerFunc {
		for i := len(mws) - 1; i >= 0; i-- {
			h = mws[i](h)
		}
		return h
	}, poison, nil
}

// keepOpen hands Watermill a publisher whose Close does nothing.
type keepOpen struct{ message.Publisher }

func (keepOpen) Close() error { return nil }

// Close stops taking deliveries, lets in-flight handlers finish and settle
// (bounded by ctx and CloseTimeout), then closes the subscribers, the
// Watermill router, the publishers and (unless KeepConnection) the
// connection, in that order: no "publisher closed" errors for handlers
// still running and no redelivery of finished work (Watermill issue 446).
// Idempotent.
func (r *Router) Close(ctx context.Context) error {
	r.closeOnce.Do(func() {
		ctx, cancel := context.WithTimeout(ctx, r.cfg.CloseTimeout+5*time.Second)
		defer cancel()
		r.mu.Lock()
		r.closed = true
		routes := append([]*activeRoute(nil), r.routes...)
		running := r.running
		r.mu.Unlock()
		var errs []error
		var wg sync.WaitGroup
		var emu sync.Mutex
		for _, rt := range routes {
			if rt.sub == nil {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := rt.sub.Close(); err != nil {
					emu.Lock()
					errs = append(errs, err)
					emu.Unlock()
				}
			}()
		}
		wg.Wait()
		if err := r.wm.Close(); err != nil {
			errs = append(errs, err)
		}
		if running {
			select {
			case <-r.runDone:
			case <-ctx.Done():
				errs = append(errs, fmt.Errorf("router: Run did not return: %w", ctx.Err()))
			}
		}
		for _, p := range []*warren.Publisher{r.retryPub, r.outPub} {
			if err := p.Close(); err != nil {
				errs = append(errs, err)
			}
		}
		if err := r.ops.Close(ctx); err != nil {
			errs = append(errs, err)
		}
		if !r.cfg.KeepConnection {
			if err := r.conn.Close(ctx); err != nil {
				errs = append(errs, err)
			}
		}
		r.closeErr = errors.Join(errs...)
	})
	return r.closeErr
}

// Health is what a readiness probe wants to know.
type Health struct {
	Connected bool `json:"connected"`
	// TopologyRestored is false when an entity failed to restore after the
	// latest (re)connect.
	TopologyRestored bool `json:"topology_restored"`
	// Routes maps each route to whether it is consuming.
	Routes map[string]bool `json:"routes"`
	Error  string          `json:"error,omitempty"`
}

// Ready reports whether every part is healthy.
func (h Health) Ready() bool {
	if !h.Connected || !h.TopologyRestored {
		return false
	}
	for _, ok := range h.Routes {
		if !ok {
			return false
		}
	}
	return true
}

// Health reports the connection, the latest restore and every route.
func (r *Router) Health() Health {
	h := Health{Connected: r.conn.State() == conn.StateConnected, TopologyRestored: true, Routes: map[string]bool{}}
	r.restoreMu.Lock()
	if r.restoreErr != nil {
		h.TopologyRestored = false
		h.Error = r.restoreErr.Error()
	}
	r.restoreMu.Unlock()
	r.mu.Lock()
	defer r.mu.Unlock()
	var down []string
	for _, rt := range r.routes {
		ok := rt.sub != nil && rt.sub.Consuming()
		h.Routes[rt.Name] = ok
		if !ok {
			down = append(down, rt.Name)
		}
	}
	if len(down) > 0 && h.Error == "" {
		h.Error = "not consuming: " + strings.Join(down, ", ")
	}
	return h
}
