package warrentest

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/warrenmq/warren/ack"
	"github.com/warrenmq/warren/middleware"
	"github.com/warrenmq/warren/router"
)

// EventKind is what happened to a message in a route.
type EventKind int

const (
	// Attempted: the route's handler ran once (Err is what it returned).
	Attempted EventKind = iota + 1
	// Consumed: the handler succeeded; the message is acked (after its
	// output, if any, is published).
	Consumed
	// Retried: a copy went to a delay queue (Queue) and the original was
	// acked.
	Retried
	// DeadLettered: the message went to the dead-letter queue or exchange;
	// Err is why.
	DeadLettered
)

func (k EventKind) String() string {
	switch k {
	case Attempted:
		return "attempted"
	case Consumed:
		return "consumed"
	case Retried:
		return "retried"
	case DeadLettered:
		return "dead-lettered"
	}
	return fmt.Sprintf("EventKind(%d)", int(k))
}

// Event is one thing that happened to one message in one route.
type Event struct {
	Route     string
	MessageID string
	Kind      EventKind
	// Attempt is the handler's execution (ack.Attempt) for Attempted and
	// Consumed.
	Attempt int
	Err     error
	// Queue is the delay queue of a Retried event.
	Queue string
	At    time.Time
}

func (e Event) String() string {
	s := fmt.Sprintf("%s %s %s", e.At.Format("15:04:05.000"), e.Route, e.Kind)
	if e.Attempt > 0 {
		s += fmt.Sprintf(" attempt %d", e.Attempt)
	}
	if e.Queue != "" {
		s += " to " + e.Queue
	}
	if e.Err != nil {
		s += fmt.Sprintf(": %v", e.Err)
	}
	return s
}

// Recorder watches routes under test: every attempt of every message,
// its delayed retries, its dead-lettering and its success, by message
// UUID. Its waits block until the outcome or a deadline, and on the
// deadline fail the test with what did happen instead.
type Recorder struct {
	mu      sync.Mutex
	events  []Event
	changed chan struct{} // closed and replaced on every event
}

// NewRecorder returns an empty recorder.
func NewRecorder() *Recorder { return &Recorder{changed: make(chan struct{})} }

func (r *Recorder) add(e Event) {
	e.At = time.Now()
	r.mu.Lock()
	r.events = append(r.events, e)
	close(r.changed)
	r.changed = make(chan struct{})
	r.mu.Unlock()
}

// Route returns route with the recorder watching it: an innermost
// middleware records each attempt and its result, and the route's
// OnDeadLetter and OnRetry hooks record the rest (the route's own hooks
// still run).
func (r *Recorder) Route(route router.Route) router.Route {
	name := route.Name
	route.Middleware = append(append([]message.HandlerMiddleware(nil), route.Middleware...), func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			attempt := ack.Attempt(msg)
			out, err := h(msg)
			r.add(Event{Route: name, MessageID: msg.UUID, Kind: Attempted, Attempt: attempt, Err: err})
			if err == nil {
				r.add(Event{Route: name, MessageID: msg.UUID, Kind: Consumed, Attempt: attempt})
			}
			return out, err
		}
	})
	onDead := route.DeadLetter.OnDeadLetter
	route.DeadLetter.OnDeadLetter = func(e middleware.DeadLetterEvent) {
		r.add(Event{Route: name, MessageID: e.Msg.UUID, Kind: DeadLettered, Attempt: e.Attempts, Err: e.Err, Queue: e.Topic})
		if onDead != nil {
			onDead(e)
		}
	}
	onRetry := route.DelayedRetry.OnRetry
	route.DelayedRetry.OnRetry = func(e middleware.DelayedRetryEvent) {
		r.add(Event{Route: name, MessageID: e.Msg.UUID, Kind: Retried, Err: e.Err, Queue: e.Queue})
		if onRetry != nil {
			onRetry(e)
		}
	}
	return route
}

// Events returns what happened to the message with UUID id, in order; all
// messages' events for id "".
func (r *Recorder) Events(id string) []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []Event
	for _, e := range r.events {
		if id == "" || e.MessageID == id {
			out = append(out, e)
		}
	}
	return out
}

func (r *Recorder) count(id string, kind EventKind) (int, Event) {
	n, last := 0, Event{}
	for _, e := range r.Events(id) {
		if e.Kind == kind {
			n++
			last = e
		}
	}
	return n, last
}

// wait blocks until cond holds or within passes; then it fails t with the
// message's history.
func (r *Recorder) wait(t testing.TB, id, want string, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		changed := r.changed
		r.mu.Unlock()
		if cond() {
			return
		}
		select {
		case <-changed:
		case <-deadline.C:
			t.Fatalf("warrentest: message %q was not %s within %v; what happened:\n%s", id, want, within, r.history(id))
		}
	}
}

func (r *Recorder) history(id string) string {
	events := r.Events(id)
	if len(events) == 0 {
		all := r.Events("")
		if len(all) == 0 {
			return "  nothing: no route saw any message"
		}
		ids := map[string]bool{}
		for _, e := range all {
			ids[e.MessageID] = true
		}
		seen := make([]string, 0, len(ids))
		for k := range ids {
			seen = append(seen, k)
		}
		return fmt.Sprintf("  nothing to this message; the routes saw %d others: %s", len(seen), strings.Join(seen, ", "))
	}
	var sb strings.Builder
	for _, e := range events {
		sb.WriteString("  " + e.String() + "\n")
	}
	return sb.String()
}

// WaitConsumed waits until a handler succeeded on the message with UUID id.
func (r *Recorder) WaitConsumed(t testing.TB, id string, within time.Duration) Event {
	t.Helper()
	return r.waitFirst(t, id, Consumed, within)
}

// WaitDeadLettered waits until the message went to the dead-letter queue or
// exchange; the event's Err is why.
func (r *Recorder) WaitDeadLettered(t testing.TB, id string, within time.Duration) Event {
	t.Helper()
	return r.waitFirst(t, id, DeadLettered, within)
}

// waitFirst waits for an event of kind for id and returns the latest.
func (r *Recorder) waitFirst(t testing.TB, id string, kind EventKind, within time.Duration) Event {
	t.Helper()
	var last Event
	r.wait(t, id, kind.String(), within, func() bool {
		var n int
		n, last = r.count(id, kind)
		return n > 0
	})
	return last
}

// WaitAttempts waits until the handler ran n times on the message (every
// in-process retry, delayed retry and redelivery counts).
func (r *Recorder) WaitAttempts(t testing.TB, id string, n int, within time.Duration) {
	t.Helper()
	r.wait(t, id, fmt.Sprintf("attempted %d times", n), within, func() bool {
		got, _ := r.count(id, Attempted)
		return got >= n
	})
}

// WaitRetried waits until n copies of the message went to delay queues.
func (r *Recorder) WaitRetried(t testing.TB, id string, n int, within time.Duration) {
	t.Helper()
	r.wait(t, id, fmt.Sprintf("retried through a delay queue %d times", n), within, func() bool {
		got, _ := r.count(id, Retried)
		return got >= n
	})
}
