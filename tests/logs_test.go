package tests

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/warrenmq/warren"
	"github.com/warrenmq/warren/conn"
	"github.com/warrenmq/warren/internal/rabbittest"
	"github.com/warrenmq/warren/middleware"
	"github.com/warrenmq/warren/retry"
	"github.com/warrenmq/warren/router"
	"github.com/warrenmq/warren/topology"
)

// logLine is one record a logRecorder kept, its attributes as text
// (groups flattened with dots).
type logLine struct {
	Level slog.Level
	Msg   string
	Attrs map[string]string
}

func (l logLine) String() string { return fmt.Sprintf("%s %q %v", l.Level, l.Msg, l.Attrs) }

// logRecorder is a slog.Handler that keeps every record, Debug included.
type logRecorder struct {
	mu    *sync.Mutex
	lines *[]logLine
	attrs []slog.Attr
	group string
}

func newLogRecorder() (*logRecorder, *slog.Logger) {
	r := &logRecorder{mu: &sync.Mutex{}, lines: &[]logLine{}}
	return r, slog.New(r)
}

func (r *logRecorder) Enabled(context.Context, slog.Level) bool { return true }

func (r *logRecorder) Handle(_ context.Context, rec slog.Record) error {
	line := logLine{Level: rec.Level, Msg: rec.Message, Attrs: map[string]string{}}
	var add func(prefix string, a slog.Attr)
	add = func(prefix string, a slog.Attr) {
		v := a.Value.Resolve()
		if v.Kind() == slog.KindGroup {
			for _, g := range v.Group() {
				add(prefix+a.Key+".", g)
			}
			return
		}
		line.Attrs[prefix+a.Key] = v.String()
	}
	for _, a := range r.attrs {
		add("", a)
	}
	rec.Attrs(func(a slog.Attr) bool { add(r.group, a); return true })
	r.mu.Lock()
	*r.lines = append(*r.lines, line)
	r.mu.Unlock()
	return nil
}

func (r *logRecorder) WithAttrs(attrs []slog.Attr) slog.Handler {
	c := *r
	c.attrs = append(append([]slog.Attr(nil), r.attrs...), attrs...)
	return &c
}

func (r *logRecorder) WithGroup(name string) slog.Handler {
	c := *r
	c.group = r.group + name + "."
	return &c
}

// Lines are the records kept so far that match keep, at Info or above
// unless debug.
func (r *logRecorder) Lines(debug bool, keep func(logLine) bool) []logLine {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []logLine
	for _, l := range *r.lines {
		if (debug || l.Level >= slog.LevelInfo) && keep(l) {
			out = append(out, l)
		}
	}
	return out
}

func (r *logRecorder) dump() string {
	return fmt.Sprint(r.Lines(true, func(logLine) bool { return true }))
}

// declinedError names its own error type, as an application error may.
type declinedError struct{}

func (declinedError) Error() string     { return "card declined" }
func (declinedError) ErrorType() string { return "card_declined" }

// TestRouterLogsEachEventOnce: with a Debug logger, every failure of a
// message is in the log once, at the level the router's doc gives, with
// the route, the message's UUID, the attempt, the error and its
// error.type, and never its payload: a retry in process and a delayed
// retry at Info, a dead letter at Warn, a panic and a poison delivery at
// Error. Watermill's misleading "count=0" and its per-message error lines
// are not there; the router says it runs, with its routes.
func TestRouterLogsEachEventOnce(t *testing.T) {
	t.Parallel()
	b := rabbittest.Shared(t)
	rec, logger := newLogRecorder()
	r := newRouter(t, b.URL, router.Config{Logger: logger})
	fast := router.RetrySettings{RetryConfig: middleware.RetryConfig{MaxAttempts: 2, Backoff: retry.Backoff{InitialInterval: time.Millisecond}}}
	noDelay := router.DelayedRetrySettings{Disabled: true}
	recovers, doomed, panics, poison := b.Name("log.recovers"), b.Name("log.doomed"), b.Name("log.panics"), b.Name("log.poison")
	for _, q := range []string{recovers, doomed, panics, poison} {
		b.Name(strings.TrimPrefix(q, b.Prefix) + ".dlq")
	}
	var recoverCalls atomic.Int32
	routes := []router.Route{
		{Name: "recovers", Queue: topology.QueueSpec{Name: recovers, Durable: true}, Retry: fast, DelayedRetry: noDelay,
			Handler: func(*message.Message) error {
				if recoverCalls.Add(1) == 1 {
					return errors.New("a blip")
				}
				return nil
			}},
		{Name: "doomed", Queue: topology.QueueSpec{Name: doomed, Durable: true}, Retry: fast,
			DelayedRetry: router.DelayedRetrySettings{Levels: []time.Duration{time.Second}},
			Handler:      func(*message.Message) error { return declinedError{} }},
		{Name: "panics", Queue: topology.QueueSpec{Name: panics, Durable: true}, Retry: fast, DelayedRetry: noDelay,
			Handler: func(*message.Message) error { panic("nil map somewhere") }},
		{Name: "poison", Queue: topology.QueueSpec{Name: poison, Durable: true}, Marshaler: pickyMarshaler{}, DelayedRetry: noDelay,
			Handler: func(*message.Message) error { return nil }},
	}
	for _, rt := range routes {
		if err := r.AddRoute(rt); err != nil {
			t.Fatal(err)
		}
	}
	startRouter(t, r)
	publish(t, r, recovers, message.NewMessage("m-recovers", []byte("secret-payload-1")))
	publish(t, r, doomed, message.NewMessage("m-doomed", []byte("secret-payload-2")))
	publish(t, r, panics, message.NewMessage("m-panics", []byte("secret-payload-3")))
	publish(t, r, poison, message.NewMessage("m-poison", []byte("poison")))
	for _, q := range []string{doomed, panics, poison} {
		waitQueueDepth(t, b.URL, q+".dlq", 1, 30*time.Second)
	}
	rabbittest.Eventually(t, 10*time.Second, "the recovering message handled", func() bool { return recoverCalls.Load() == 2 })
	b.WaitSettled(t, recovers, 10*time.Second)

	about := func(id string) []logLine {
		return rec.Lines(false, func(l logLine) bool { return l.Attrs["message_uuid"] == id || l.Attrs["message_id"] == id })
	}
	type want struct {
		level   slog.Level
		msg     string
		attempt string
	}
	expect := func(id, route, errorType string, wants ...want) {
		t.Helper()
		got := about(id)
		if len(got) != len(wants) {
			t.Errorf("%s: %d lines at Info or above, want %d:\n%v", id, len(got), len(wants), got)
			return
		}
		for i, w := range wants {
			l := got[i]
			if l.Level != w.level || l.Msg != w.msg || l.Attrs["attempt"] != w.attempt {
				t.Errorf("%s line %d: %v, want %s %q attempt %q", id, i, l, w.level, w.msg, w.attempt)
			}
			if l.Attrs["route"] != route || l.Attrs["error.type"] != errorType || l.Attrs["error"] == "" {
				t.Errorf("%s line %d lacks route %q, error.type %q or the error: %v", id, i, route, errorType, l.Attrs)
			}
		}
	}
	const inProcess, delayed, dead = "warren: handler failed; retrying in process", "warren: handler failed; retrying after a delay", "warren: message dead-lettered"
	expect("m-recovers", "recovers", "_OTHER", want{slog.LevelInfo, inProcess, "1"})
	expect("m-doomed", "doomed", "card_declined",
		want{slog.LevelInfo, inProcess, "1"}, want{slog.LevelInfo, delayed, "2"},
		want{slog.LevelInfo, inProcess, "3"}, want{slog.LevelWarn, dead, "4"})
	expect("m-panics", "panics", "panic", want{slog.LevelError, "warren: handler panicked; message dead-lettered", "1"})
	if l := about("m-panics"); len(l) == 1 && !strings.Contains(l[0].Attrs["stack"], "panic(") {
		t.Errorf("the panic's line has no stack: %v", l[0].Attrs)
	}
	expect("m-poison", "poison", "poison", want{slog.LevelError, "warren: poison message: it cannot be decoded and never reaches a handler", ""})

	if leaked := rec.Lines(true, func(l logLine) bool { return strings.Contains(fmt.Sprint(l.Attrs), "secret-payload") }); len(leaked) > 0 {
		t.Errorf("a payload is in the log: %v", leaked)
	}
	if noise := rec.Lines(true, func(l logLine) bool {
		return l.Msg == "Handler returned error" || (l.Msg == "Running router handlers" && l.Attrs["count"] == "0")
	}); len(noise) > 0 {
		t.Errorf("Watermill's misleading lines are there: %v", noise)
	}
	if running := rec.Lines(false, func(l logLine) bool { return l.Msg == "router: running" }); len(running) != 1 || running[0].Attrs["routes"] != "4" {
		t.Errorf("router: running: %v", running)
	}
}

// TestSubscriberLogsARedeliveryLoopOnce: a message that keeps failing on a
// queue without a dead-letter exchange is redelivered for ever (never
// dropped); the log says so once at Info (the first failure) and once at
// Warn (MaxAttempts reached), and the redeliveries in between and after
// only at Debug: no flood.
func TestSubscriberLogsARedeliveryLoopOnce(t *testing.T) {
	t.Parallel()
	b := rabbittest.Shared(t)
	rec, logger := newLogRecorder()
	c := rabbittest.OpenConn(t, b.URL, conn.Config{})
	q := b.Name("log.loop")
	sub, err := warren.NewSubscriber(c, warren.SubscriberConfig{Mapping: warren.QueuePerTopic{}, Logger: logger,
		Redelivery: warren.RedeliveryConfig{MaxAttempts: 3, Backoff: retry.Backoff{InitialInterval: time.Millisecond, MaxInterval: 5 * time.Millisecond}}})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	if err := sub.SubscribeInitialize(q); err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int32
	if err := sub.SubscribeFunc(ctxT(t, 30*time.Second), q, func(*message.Message) error {
		calls.Add(1)
		return errors.New("still broken")
	}); err != nil {
		t.Fatal(err)
	}
	pub, err := warren.NewPublisher(c, warren.PublisherConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	if err := pub.Publish(q, message.NewMessage("m-loop", []byte("x"))); err != nil {
		t.Fatal(err)
	}
	rabbittest.Eventually(t, 20*time.Second, "8 deliveries of the failing message", func() bool { return calls.Load() >= 8 })
	about := func(debug bool) []logLine {
		return rec.Lines(debug, func(l logLine) bool { return l.Attrs["message_uuid"] == "m-loop" })
	}
	got := about(false)
	if len(got) != 2 || got[0].Level != slog.LevelInfo || got[0].Attrs["attempt"] != "1" ||
		got[1].Level != slog.LevelWarn || got[1].Attrs["attempt"] != "3" || got[1].Attrs["error"] != "still broken" {
		t.Fatalf("want one Info (attempt 1) and one Warn (attempt 3), got:\n%v", got)
	}
	if n := len(about(true)); n < 6 {
		t.Errorf("the redeliveries are not at Debug: %d lines in all", n)
	}
}

// TestRouterLogsItsDrain: between the end of Run's ctx (SIGTERM) and the
// end of the drain the router says what it waits for: the start with the
// messages in flight, progress while a handler runs, and the end; at Warn
// when a message was given back unfinished at the deadline.
func TestRouterLogsItsDrain(t *testing.T) {
	t.Parallel()
	for _, finish := range []bool{true, false} {
		t.Run(fmt.Sprintf("finishes=%v", finish), func(t *testing.T) {
			b := rabbittest.Shared(t)
			rec, logger := newLogRecorder()
			r := newRouter(t, b.URL, router.Config{Logger: logger, CloseTimeout: 2 * time.Second})
			q := b.Name("log.drain")
			started, release := make(chan struct{}), make(chan struct{})
			if err := r.AddRoute(router.Route{Name: "slow", Queue: topology.QueueSpec{Name: q, Durable: true},
				Handler: func(m *message.Message) error {
					close(started)
					select {
					case <-release:
						return nil
					case <-m.Context().Done():
						return m.Context().Err()
					}
				}}); err != nil {
				t.Fatal(err)
			}
			ctx, sigterm := context.WithCancel(context.Background())
			ran := make(chan error, 1)
			go func() { ran <- r.Run(ctx) }()
			if err := r.WaitRunning(ctxT(t, 30*time.Second)); err != nil {
				t.Fatal(err)
			}
			publish(t, r, q, message.NewMessage("m-slow", nil))
			<-started
			sigterm()
			rabbittest.Eventually(t, 10*time.Second, "a progress line", func() bool {
				return len(rec.Lines(false, func(l logLine) bool { return l.Msg == "router: draining" && l.Attrs["in_flight"] == "1" })) > 0
			}, rec.dump)
			if finish {
				close(release)
			}
			if err := <-ran; err != nil && finish {
				t.Fatalf("Run: %v", err)
			}
			begin := rec.Lines(false, func(l logLine) bool { return strings.HasPrefix(l.Msg, "router: draining: ") })
			if len(begin) != 1 || begin[0].Attrs["in_flight"] != "1" {
				t.Errorf("drain start: %v", begin)
			}
			progress := rec.Lines(false, func(l logLine) bool { return l.Msg == "router: draining" })
			if progress[0].Attrs["in_flight_by_route.slow"] != "1" {
				t.Errorf("progress does not name the route: %v", progress[0])
			}
			end := rec.Lines(false, func(l logLine) bool { return strings.HasPrefix(l.Msg, "router: drained") })
			switch {
			case len(end) != 1:
				t.Errorf("drain end: %v", end)
			case finish && (end[0].Level != slog.LevelInfo || end[0].Msg != "router: drained"):
				t.Errorf("a drain that finished: %v", end[0])
			case !finish && (end[0].Level != slog.LevelWarn || end[0].Attrs["given_back"] != "1"):
				t.Errorf("a drain that gave a message back: %v", end[0])
			}
		})
	}
}
